"""Result objects: frozen, typed, and convertible to the contract's JSON report."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

# Views of a report by name (``"html"``: Jupyter's `_repr_html_`). The ground layer imports no
# renderer: the package root (`evalloss/__init__.py`) registers them, imported on first use.
VIEWS: dict[str, Callable[[Any], str]] = {}


def _view(name: str, report: Any) -> str:
    view = VIEWS.get(name)
    return "" if view is None else view(report)


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


@dataclass(frozen=True)
class Result:
    """The exact loss of one model over a whole data set (what `evaluate` returns)."""

    loss_sum: float | None  # exact float64 sum of per-item losses; None if any is not finite
    items: int
    weight: int  # scored elements over all items (targets, pixels, tokens)
    accuracy: float | None  # share of correct target elements, classification losses only
    nonfinite_items: int
    seconds: float
    element_sum: float | None = None  # exact float64 sum of every counted element's loss
    weights_differ: bool = False  # items of different weights (e.g. masks with ignored pixels)

    @property
    def loss_per_element(self) -> float | None:
        """Every counted element's loss over the counted elements (a pixel-weighted mean)."""
        if self.element_sum is None or self.weight == 0:
            return None
        return _finite(self.element_sum / self.weight)

    @property
    def loss_per_item(self) -> float | None:
        if self.loss_sum is None or self.items == 0:
            return None
        return _finite(self.loss_sum / self.items)

    @property
    def loss_per_token(self) -> float | None:
        """``loss_sum`` over the scored elements (tokens, for ``causal-lm``)."""
        if self.loss_sum is None or self.weight == 0:
            return None
        return _finite(self.loss_sum / self.weight)


@dataclass(frozen=True)
class Comparison:
    """A model against the baseline, item by item (paired)."""

    delta: float | None  # mean of (loss_i - baseline loss_i)
    relative: float | None  # delta / baseline loss_per_item
    ci95: tuple[float, float] | None  # paired t interval for delta
    p_value: float | None  # two-sided paired t-test
    wins: float | None  # share of items where this model's loss is lower


@dataclass(frozen=True)
class SliceResult:
    """One model's exact figures on one slice (the items whose ``column`` is ``value``)."""

    column: str
    value: Any  # the column's value (None: missing); a binned column: the bin, "(a, b]"
    items: int
    weight: int
    loss_sum: float | None
    loss_per_item: float | None
    accuracy: float | None
    nonfinite_items: int
    range: tuple[float, float] | None = None  # a bin's edges (--slice-bins)
    loss_per_token: float | None = None  # token losses: loss_sum / weight
    vs_baseline: Comparison | None = None
    p_holm: float | None = None  # vs_baseline's p-value, Holm-adjusted over the column

    @property
    def figure(self) -> float | None:  # what the slice gate judges
        return self.loss_per_token if self.loss_per_token is not None else self.loss_per_item


@dataclass(frozen=True)
class SliceColumn:  # a slice column and its quantile bin edges (--slice-bins), else None
    column: str
    edges: tuple[float, ...] | None = None


@dataclass(frozen=True)
class SliceFigures:
    """What a ``--slice`` run hands the report: its columns, and every model's figures on
    them (in the run's model order)."""

    columns: tuple[SliceColumn, ...]
    models: tuple[tuple[SliceResult, ...], ...]


@dataclass(frozen=True)
class ModelResult:
    rank: int
    name: str
    path: str
    loss_per_item: float | None
    loss_sum: float | None
    items: int
    accuracy: float | None
    nonfinite_items: int
    is_baseline: bool
    seconds: float
    vs_baseline: Comparison | None = None
    tokens: int | None = None  # token losses only: scored tokens
    loss_per_token: float | None = None  # loss_sum / tokens: what ranks a token loss
    perplexity: float | None = None  # exp(loss_per_token)
    bits_per_byte: float | None = None  # text data: loss_sum / (bytes x ln 2)
    byte_perplexity: float | None = None  # text data: exp(loss_sum / bytes)
    word_perplexity: float | None = None  # text data: exp(loss_sum / words)
    per_byte: bool = field(default=False, repr=False)  # ranked by bits per byte
    weight: int | None = None  # items of different weights only: counted elements
    loss_per_element: float | None = None  # (sum of every counted element's loss) / weight
    slices: tuple[SliceResult, ...] = ()  # --slice: per column and value
    step: int | None = None  # a Trainer checkpoint's global step (`models.trainerrun`)
    logged_eval_loss: float | None = None  # the eval_loss its run logged at that step
    # its figures read from the result cache (--cache), not evaluated: not in the JSON report,
    # which is the same cached or not
    cached: bool = field(default=False, compare=False)

    @property
    def figure(self) -> float | None:
        """What ranks and what the gate judges: bits per byte where the models' tokenizers
        differ, loss per token for a token loss, else loss per item."""
        if self.per_byte:
            return self.bits_per_byte
        return self.loss_per_token if self.tokens is not None else self.loss_per_item


@dataclass(frozen=True)
class GateCheck:
    rule: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class GateResult:
    passed: bool
    winner: str | None
    baseline: str | None
    checks: tuple[GateCheck, ...] = ()


@dataclass(frozen=True)
class DataInfo:
    path: str
    items: int
    targets: tuple[str, ...]
    features: int
    bytes: int | None = None  # text data: UTF-8 bytes of every document
    words: int | None = None  # text data: lm-evaluation-harness's word count of every document
    prefix_token: str | None = None  # --prefix-token as given: each document's first token


@dataclass(frozen=True)
class Provenance:
    """What the figures were computed from: file hashes, software, hardware."""

    evalloss: str
    python: str
    torch: str
    platform: str
    device: str  # as used: cpu, cuda:0, mps
    device_name: str  # the CPU or accelerator model
    threads: int  # torch intra-op threads
    sha256: dict[str, str] | None  # every file judged (checkpoints, data) -> hex sha256


@dataclass(frozen=True)
class ItemSample:
    """A deterministic sample of items (the same for every model, so differences stay paired):
    ``values[i, j]`` is item i's loss under model ``names[j]`` (a numpy array, at most 200,000
    rows; for a token loss a document's loss per token). ``seen``: the items sampled from."""

    names: tuple[str, ...]
    values: Any  # numpy float64 (kept, models)
    seen: int


@dataclass(frozen=True)
class Report:
    """What `compare` returns: every model ranked, and the gate verdict if one was asked."""

    evalloss_version: str
    data: DataInfo
    loss: str
    device: str
    precision: str
    batch_size: int
    world_size: int
    models: tuple[ModelResult, ...]
    gate: GateResult | None = None
    has_baseline: bool = field(default=False, repr=False)
    provenance: Provenance | None = None
    unit: str = field(default="item", repr=False)  # "token" or "byte": what the report ranks
    by_element: bool = field(default=False, repr=False)  # weight, loss_per_element shown
    slicing: tuple[SliceColumn, ...] = ()  # --slice columns, their bin edges
    # the per-item losses behind the HTML report's distributions (`compare(sample=True)`)
    sample: ItemSample | None = field(default=None, repr=False, compare=False)

    @property
    def stepped(self) -> tuple[ModelResult, ...]:
        """The models with a Trainer step, in step order (ties in rank order): the curve."""
        with_steps = [m for m in self.models if m.step is not None]
        return tuple(sorted(with_steps, key=lambda m: (m.step, m.rank)))

    @property
    def per_token(self) -> bool:
        """A token loss's report (ranked per token, or per byte of text): token figures."""
        return self.unit != "item"

    def to_dict(self) -> dict[str, Any]:
        """The contract's JSON report: plain types, ``None`` for every non-finite number."""
        out: dict[str, Any] = _clean(asdict(replace(self, sample=None)))
        hidden = ("has_baseline", "unit", "sample", "by_element", *_unless(self.slicing, "slicing"))
        for key in hidden:
            out.pop(key)
        drop = ("per_byte", "cached", *_unless(self.has_baseline, "vs_baseline"),
                *_unless(self.stepped, *_STEP_KEYS), *_unless(self.per_token, *_TOKEN_KEYS),
                *_unless(self.by_element, *_ELEMENT_KEYS),
                *(key for key, count in _TEXT_KEYS.items()
                  if getattr(self.data, count) is None))  # fmt: skip
        for model in out["models"]:
            _slices_dict(model, self)
            for key in drop:
                model.pop(key)
        _data_dict(out["data"], self.data)
        if self.unit == "byte":  # the tokenizers differ: bits per byte ranks
            out["ranked_by"] = "bits_per_byte"
        return out

    def _repr_html_(self) -> str:
        """Jupyter shows the report as the ``--format html`` page."""
        return _view("html", self)


_TOKEN_KEYS = ("tokens", "loss_per_token", "perplexity")
# a text figure, and the count of the data it needs
_TEXT_KEYS = {"bits_per_byte": "bytes", "byte_perplexity": "bytes", "word_perplexity": "words"}


def _data_dict(data: dict[str, Any], info: DataInfo) -> None:
    """The report's ``data`` as the contract shows it: the text counts only for text, the
    prefix token only where one was given."""
    for key in ("bytes", "words", "prefix_token"):
        if getattr(info, key) is None:
            data.pop(key)
_ELEMENT_KEYS = ("weight", "loss_per_element")
_STEP_KEYS = ("step", "logged_eval_loss")  # only where some model has a step


def _slices_dict(model: dict[str, Any], report: Report) -> None:
    """A model's ``slices`` as the contract shows them (absent without ``--slice``)."""
    if not report.slicing:
        model.pop("slices")
    drop = (*_unless(report.has_baseline, "vs_baseline", "p_holm"),
            *_unless(report.per_token, "loss_per_token"))  # fmt: skip
    for entry in model.get("slices", ()):
        for key in drop:
            entry.pop(key)


def _unless(present: object, *keys: str) -> tuple[str, ...]:
    """``keys`` where ``present`` is falsy (what to drop), else none."""
    return () if present else keys


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, float):
        return _finite(value)
    return value


@dataclass(frozen=True)
class ExplainRow:
    """What a training log's recipes print at one batch size, against the exact figures.

    Errors are relative and signed: (figure - truth) / |truth|, where the truth of
    ``normalized_sum`` is the exact loss sum and that of ``average_of_averages`` the exact loss
    per item; 0 when they agree, None when undefined (a zero or non-finite truth).
    """

    batch_size: int
    batches: int
    last_batch: int  # items in the last batch (== batch_size when the batches are even)
    sum_of_averages: float | None  # sum of batch means: `epoch_loss += loss.item()`
    normalized_sum: float | None  # sum_of_averages * batch_size
    average_of_averages: float | None  # sum_of_averages / batches
    normalized_sum_error: float | None
    average_of_averages_error: float | None
    # token losses only (explain drops them otherwise): Trainer.evaluate's eval_loss
    sequence_weighted_average: float | None = None
    sequence_weighted_average_error: float | None = None


@dataclass(frozen=True)
class ExplainReport:
    """What `explain` returns: the exact loss of one model, and the training-log rows."""

    evalloss_version: str
    checkpoint: str
    data: DataInfo
    loss: str
    device: str
    precision: str
    per_item: float | None  # exact loss per item; None if any item's loss is not finite
    loss_sum: float | None
    items: int
    nonfinite_items: int
    rows: tuple[ExplainRow, ...]
    tokens: int | None = None  # token losses only: the exact figures per token
    loss_per_token: float | None = None
    average_of_item_averages: float | None = None  # the mean of per-document means
    # token losses: what the Trainer row divides each batch's loss by ("tokens": its scored
    # tokens; "labels": its unshifted labels, as transformers' Trainer does for that folder)
    trainer_divisor: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The contract's explain JSON: plain types, ``None`` for every non-finite number."""
        out: dict[str, Any] = _clean(asdict(self))
        _data_dict(out["data"], self.data)
        if self.tokens is None:
            for key in ("tokens", "loss_per_token", "average_of_item_averages", "trainer_divisor"):
                out.pop(key)
            for row in out["rows"]:
                row.pop("sequence_weighted_average")
                row.pop("sequence_weighted_average_error")
        return out

    def _repr_html_(self) -> str:
        """Jupyter shows the report as ``explain --format html``."""
        return _view("explain-html", self)
