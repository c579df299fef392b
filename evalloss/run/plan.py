"""What a run resolves before any evaluation: checkpoints opened (headers only), the loss and
targets (options, else the checkpoints' agreed metadata), the data set, device and dtype, the
batch size and the run's mode (`Mode`: every model in one pass, or group by group).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from evalloss.errors import CheckpointError, LossError, OptionError, shown
from evalloss.losses import ROWS as LOSS_ROWS
from evalloss.losses import Loss
from evalloss.losses import get as get_loss
from evalloss.models import Checkpoint, Shelf, Wanted, build, open_checkpoint, trainerrun
from evalloss.models.folder import token_classifier
from evalloss.models.peftfolder import bases
from evalloss.models.seq2seq import refuse_causal
from evalloss.options import Options, PathLike
from evalloss.run import distributed, sequential
from evalloss.sources import DataSource, chat, open_data, pairs
from evalloss.sources.textlabels import IGNORE
from evalloss.sources.tokenizer import identity

if TYPE_CHECKING:
    import torch
    from torch import nn

Windowing = tuple[int | None, int | None]  # a model's (context, stride)


class Mode(Enum):
    """How the models meet the data."""

    ONE_PASS = "one pass"  # every model built at once, the data read once (`onepass`)
    BY_GROUP = "by group"  # a pass per group, in file order (`sequential`)


@dataclass(frozen=True)
class Plan:
    """Everything resolved before any evaluation starts (`resolve`)."""

    checkpoints: tuple[Checkpoint, ...]
    loss: Loss
    source: DataSource
    device: torch.device
    dtype: torch.dtype
    options: Options
    tokenizers: tuple[str | None, ...] = ()  # each model's tokenizer.json (text data)
    batch_size: int = 0  # rows per forward pass (`fitted_batch_size`)
    mode: Mode = Mode.ONE_PASS
    groups: tuple[tuple[int, ...], ...] = ()  # the models' groups, in order: one in one pass
    contexts: tuple[Windowing, ...] = ()  # each model's (context, stride): `_contexts`
    steps: tuple[trainerrun.Logged | None, ...] = ()  # each model's Trainer step, if it has one
    shelf: Shelf | None = None  # the adapters' bases, each built once for the run

    def sequence(self, index: int) -> Windowing:
        """Model ``index``'s (context, stride): its own, whatever else is in the run."""
        return self.contexts[index] if self.contexts else (self.options.context,
                                                           self.options.stride)  # fmt: skip

    @property
    def precision(self) -> str:
        return self.options.precision

    def build(self, checkpoint: Checkpoint) -> nn.Module:
        """The checkpoint's module, ready: weights loaded, eval mode, on the device, in dtype."""
        wanted = Wanted(self.loss.name, self.device, self.dtype, self.shelf)
        return build(checkpoint, self.options.model, dict(self.options.model_kwargs), wanted)


def resolve(
    paths: Sequence[PathLike],
    options: Options,
    *,
    batch_size: int | None = None,
    one_at_a_time: bool = False,
) -> Plan:
    """Open the checkpoints and the data and settle the loss, targets, device and dtype, the
    options the checkpoints decide (`_settled`), the batch size (``batch_size``, else
    `fitted_batch_size`'s) and the run's mode (its models in one pass, or group by group:
    `sequential.groups`; ``one_at_a_time``: a group per model), or raise the first problem:
    every process of a run resolves the same plan."""
    import torch

    if not paths:
        raise OptionError("give at least one checkpoint", key="CHECKPOINT")
    checkpoints = tuple(open_checkpoint(p, options.base) for p in paths)
    shared = bases(checkpoints)
    if options.base is not None and not shared:
        raise OptionError("no checkpoint here is an adapter folder: --base is the base model of "
                          "adapter folders (a model folder needs none)", key="--base")  # fmt: skip
    options, loss, tokenizers = _settled(checkpoints, options)
    _prefix_fits(checkpoints, options.prefix_token)
    contexts = _contexts(checkpoints, loss, options)
    options = replace(options, context=contexts[0][0], stride=contexts[0][1])
    plan = Plan(
        checkpoints=checkpoints,
        loss=loss,
        source=open_data(options.data, options),
        device=_device(options.device),
        dtype=getattr(torch, options.precision),  # weights and activations; sums in float64
        options=options,
        tokenizers=tokenizers,
        contexts=contexts,
        steps=trainerrun.logged([c.path for c in checkpoints]),
        shelf=Shelf(shared) if shared else None,
    )
    _windows_agree(plan)
    chat.agree(plan.source, [c.tokenizer for c in checkpoints], tokenizers)
    groups = tuple(tuple(g) for g in sequential.groups(plan, one_at_a_time))
    mode = Mode.ONE_PASS if len(groups) == 1 else Mode.BY_GROUP
    return replace(plan, batch_size=fitted_batch_size(plan, batch_size), mode=mode, groups=groups)


def _settled(
    checkpoints: Sequence[Checkpoint], options: Options
) -> tuple[Options, Loss, tuple[str | None, ...]]:
    """The options every later stage reads, settled once where the checkpoints decide them:
    the targets and the loss (else their agreed metadata), a token classifier's unscored
    label, the tokenizer text is read with and its pad token; and each model's tokenizer
    (each model's context: `_contexts`)."""
    target = options.target or _targets_from_metadata(checkpoints)
    ignore = options.ignore_index
    if ignore is None and any(token_classifier(c) for c in checkpoints):
        ignore = IGNORE  # transformers' unscored token label
    loss = _loss(checkpoints, options.loss, ignore)
    if not target and loss.name == "cross-entropy":
        _labels_needed(checkpoints)
    for checkpoint in checkpoints:
        refuse_causal(checkpoint, loss.name)
    tokenizers = _tokenizers(checkpoints)
    tokenizer, pad = options.tokenizer, options.pad_id
    first = next((t for t in tokenizers if t is not None), None)
    if first is not None:
        pads = [c.config.get("pad_token_id") for c in checkpoints if c.config is not None]
        tokenizer, pad = first, next((p for p in pads if type(p) is int and p >= 0), 0)
    settled = replace(options, target=target, ignore_index=ignore, loss=loss.name,
                      tokenizer=tokenizer, pad_id=pad)  # fmt: skip
    if loss.name == pairs.LOSS:  # an encoder-decoder's pairs: their columns' defaults
        settled = replace(settled, target=target or (pairs.TARGET,), text_column=(
            options.text_column if options.text_column_given else pairs.INPUT))  # fmt: skip
    return settled, loss, tokenizers


def _labels_needed(checkpoints: Sequence[Checkpoint]) -> None:
    """A classifier's model folder (its architecture's head) reads its labels from
    ``--target``: without it, one line (the data would be read as token documents, which it
    cannot take)."""
    for checkpoint in checkpoints:
        if checkpoint.config is not None and checkpoint.metadata.get(
            "evalloss.loss") == "cross-entropy":  # fmt: skip
            kind = "token" if token_classifier(checkpoint) else "sequence"
            raise OptionError(f"a {kind} classification model folder is scored against "
                              "labels: give --target, the data's label column",
                              path=checkpoint.path)  # fmt: skip


def _prefix_fits(checkpoints: Sequence[Checkpoint], prefix: str | None) -> None:
    """A ``--prefix-token`` id every model's vocabulary has (its config's ``vocab_size``)."""
    if prefix is None or not prefix.isdigit():
        return
    for checkpoint in checkpoints:
        size = (checkpoint.config or {}).get("vocab_size")
        if type(size) is int and int(prefix) >= size:
            raise OptionError(f"token id {prefix} is outside the model's vocabulary [0, "
                              f"{size})", path=checkpoint.path, key="--prefix-token")  # fmt: skip


def _contexts(
    checkpoints: Sequence[Checkpoint], loss: Loss, options: Options
) -> tuple[Windowing, ...]:
    """Each model's ``--context`` and ``--stride``: as given (the same for every model, and
    within each model's declared limit), else the context that model declares: its own limit,
    whatever else is in the run (models of different limits go in different groups)."""
    found: list[Windowing] = []
    for checkpoint in checkpoints:
        declared = _declared_context(checkpoint) if loss.per_token else None
        if loss.name == pairs.LOSS:  # T5's relative positions have no limit; BART's have
            declared = pairs.declared_limit(checkpoint.config)
        if declared is not None and options.context is None:
            found.append((declared, declared))
            continue
        if declared is not None and options.context is not None and options.context > declared:
            raise OptionError(f"{options.context} is longer than the {declared} positions a "
                              "model here declares (n_positions or max_position_embeddings)",
                              path=checkpoint.path, key="--context")  # fmt: skip
        found.append((options.context, options.stride))
    return tuple(found)


def _windows_agree(plan: Plan) -> None:
    """A token stream's items are its windows: every model must see the same ones."""
    from evalloss.sources.tokenstream import TokenStream

    differ = sorted({c for c, _ in plan.contexts if c is not None})
    if isinstance(plan.source, TokenStream) and len(differ) > 1:
        raise OptionError(f"the models declare different contexts ({differ[0]} and "
                          f"{differ[1]} positions) and a token stream's items are windows of "
                          "one context: give --context", key="--context")  # fmt: skip


def _agreed(checkpoints: Sequence[Checkpoint], key: str, given: str | None, option: str) -> str:
    """``given`` if set, else the one value every checkpoint's metadata names for ``key``."""
    if given is not None:
        return given
    named = {c.path: c.metadata[key] for c in checkpoints if key in c.metadata}
    values = sorted(set(named.values()))
    if len(values) > 1:
        (a, va), (b, vb) = [next((p, v) for p, v in named.items() if v == x) for x in values[:2]]
        raise OptionError(
            f"checkpoints disagree: {a} says {shown(va)}, {b} says {shown(vb)}; "
            f"pass {option} to choose",
            key=key,
        )
    if not values:
        raise OptionError(f"no {option} given and no checkpoint has {key} metadata", key=option)
    return values[0]


def _loss(
    checkpoints: Sequence[Checkpoint], given: str | None, ignore_index: int | None = None
) -> Loss:
    name = _agreed(checkpoints, "evalloss.loss", given, "--loss")
    if given is None and name not in LOSS_ROWS:
        path = next(c.path for c in checkpoints if c.metadata.get("evalloss.loss") == name)
        raise LossError(
            f"unknown loss {name[:100]!r}; choose one of {', '.join(LOSS_ROWS)}",
            path=path,
            key="evalloss.loss",
        )
    return get_loss(name, ignore_index)


def _tokenizers(checkpoints: Sequence[Checkpoint]) -> tuple[str | None, ...]:
    """Each model's ``tokenizer.json``, the same path for the same tokenizer (so models that
    share one share one tokenization of text data): files that differ only in what does not
    decide the ids (``truncation``, ``padding``: `sources.tokenizer.identity`) are one."""
    seen: dict[bytes, str] = {}
    found: list[str | None] = []
    for c in checkpoints:
        if c.tokenizer is None:
            found.append(None)
            continue
        try:
            content = Path(c.tokenizer).read_bytes()
        except OSError as exc:
            raise CheckpointError(f"cannot read it ({exc.strerror or exc})",
                                  path=c.tokenizer) from exc  # fmt: skip
        found.append(seen.setdefault(identity(content), c.tokenizer))
    return tuple(found)


def _declared_context(checkpoint: Checkpoint) -> int | None:
    """The longest input a model folder declares it takes (``n_positions``,
    ``max_position_embeddings``): its default ``--context``."""
    config = checkpoint.config
    limits = [
        value
        for key in ("n_positions", "max_position_embeddings")
        if config is not None and type(value := config.get(key)) is int and value > 1
    ]
    return min(limits) if limits else None


def _targets_from_metadata(checkpoints: Sequence[Checkpoint]) -> tuple[str, ...]:
    if not any("evalloss.target" in c.metadata for c in checkpoints):
        return ()
    joined = _agreed(checkpoints, "evalloss.target", None, "--target")
    targets = tuple(t.strip() for t in joined.split(",") if t.strip())
    twice = sorted({t for t in targets if targets.count(t) > 1})
    if twice:
        path = next(c.path for c in checkpoints if c.metadata.get("evalloss.target") == joined)
        raise CheckpointError(
            f"names column {shown(twice[0])} twice", path=path, key="evalloss.target"
        )
    return targets


def _device(name: str) -> torch.device:
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise OptionError(f"unknown device {shown(name)}", key="--device") from exc
    if device.type not in ("cpu", "cuda", "mps"):
        raise OptionError(
            f"evalloss runs models on cpu, cuda or mps, not {device.type}", key="--device"
        )
    if device.type == "cuda" and not torch.cuda.is_available():
        raise OptionError("CUDA is not available on this machine", key="--device")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise OptionError("MPS is not available on this machine", key="--device")
    if device.type == "cuda" and ":" not in name and distributed.env_world()[1] > 1:
        local = int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
        device = torch.device("cuda", local)  # under torchrun: one GPU per local process
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def fitted_batch_size(plan: Plan, wanted: int | None) -> int:
    """``wanted`` (else the default for the device and the models), cut so that no layers
    spec's activations for one batch pass `models.activations.ACTIVATION_BYTES` (the figure
    does not depend on it)."""
    from evalloss.models.activations import batch_limit, per_item

    size = wanted
    if size is None:
        shape = plan.source.item_shape
        peaks: list[int | None] = [None]
        if shape is not None:
            peaks = [per_item(c, shape) for c in plan.checkpoints]
        if shape is not None and None in peaks and plan.device.type == "cpu":
            peaks = _measured(plan, shape, peaks)
        known = [p for p in peaks if p]
        size = default_batch_size(plan.device, max(known) if len(known) == len(peaks) else None)
    element = plan.dtype.itemsize
    limit = batch_limit(plan.checkpoints, plan.source.item_shape, element)
    return size if limit is None else min(size, limit)


def _measured(plan: Plan, shape: tuple[int, ...], peaks: list[int | None]) -> list[int | None]:
    """``peaks`` with the unknown ones (checkpoints built by ``--model``: one architecture)
    measured on one item (`models.activations.measured_per_item`), when the module allows."""
    from evalloss.models.activations import measured_per_item

    if plan.options.model is None:
        return peaks
    kwargs = dict(plan.options.model_kwargs)
    measured = measured_per_item(plan.options.model, kwargs, shape, plan.dtype)
    return [measured if p is None else p for p in peaks]


CPU_BATCH_ELEMENTS = 2048 * 512  # measured: the 64-256-256-10 MLP's best batch, 2048 rows


def default_batch_size(device: torch.device, peak: int | None = None) -> int:
    """Rows per forward pass when none is asked for. CPU: 2048 rows, measured
    (docs/performance.md) on the 64-256-256-10 MLP (a peak of 512 activations an item): as
    fast as 1024 or a little faster, while 4096 and more were 20-40% slower (a batch's
    activations no longer stay in the cores' caches). Where every model is a layers spec
    whose ``peak`` activations an item are known, the batch holds about the same number of
    activations, up to 32768 rows: narrow models pay Python's cost per batch on fewer,
    larger batches (measured, docs/performance.md "The speed matrix"). GPUs and other
    devices: 4096, to keep the device busy (not measured)."""
    if device.type != "cpu":
        return 4096
    if peak is None:
        return 2048
    fits = max(1, CPU_BATCH_ELEMENTS // peak)
    return min(32768, max(2048, 1 << (fits.bit_length() - 1)))  # a power of two
