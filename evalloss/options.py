"""The options every evaluating command shares, declared once.

`RunKeywords` lists them for the flat keyword API (``evalloss.compare(..., data=, loss=)``,
``evalloss.explain``), typed for mypy and editors; `Options.of` checks them once into one
frozen object that the plan, the sources and the builders read. The CLI's options mirror these
keywords (a test checks it). Importing this module imports neither torch nor pyarrow.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from evalloss.errors import ModelError, OptionError, shown

if TYPE_CHECKING:
    from typing import Required

PRECISIONS = ("float32", "float64", "bfloat16", "float16")
PathLike = str | os.PathLike[str]


class RunKeywords(TypedDict, total=False):
    """The shared keyword arguments of `evalloss.compare` and `evalloss.explain`."""

    data: Required[PathLike]
    model: str | None
    model_kwargs: str | Mapping[str, Any] | None
    base: PathLike | None
    loss: str | None
    target: Sequence[str]
    feature: Sequence[str]
    no_header: bool
    device: str
    precision: str
    context: int | None
    stride: int | None
    token_dtype: str
    tokens_column: str
    text_column: str | None
    score: str | None
    batch_tokens: int | None
    prefix_token: str | int | None
    inputs_key: str
    targets_key: str
    ignore_index: int | None
    workers: int | None


TOKEN_DTYPES = ("uint16", "uint32")
SCORES = ("assistant", "completion", "all")  # chat and instruction data: the tokens scored
DEFAULT_BATCH_TOKENS = 4096  # tokens per forward pass, padding included (docs/performance.md)


@dataclass(frozen=True, kw_only=True)
class Options:
    """The shared options, checked: what the data is, how to build, run and score the models."""

    data: str
    model: str | None = None
    model_kwargs: Mapping[str, Any] = field(default_factory=dict)
    base: str | None = None  # adapter folders' base model folder (--base)
    loss: str | None = None
    target: tuple[str, ...] = ()
    feature: tuple[str, ...] = ()
    no_header: bool = False
    device: str = "auto"
    precision: str = "float32"
    context: int | None = None  # longest input a sequence model is given (windows past it)
    stride: int | None = None  # targets per window (default: the context)
    token_dtype: str = "uint16"  # a .bin token stream's element type
    tokens_column: str = "input_ids"  # documents: the list-of-token-ids column
    text_column: str = "text"  # text data: the column of documents (JSON Lines, Parquet, CSV)
    score: str | None = None  # chat data: what is scored (`SCORES`; None: the form's default)
    text_column_given: bool = False  # named by the user (else an encoder-decoder's is "input")
    batch_tokens: int = DEFAULT_BATCH_TOKENS  # sequence models: tokens per forward pass
    prefix_token: str | None = None  # auto, bos, eos or an id: each document's first token
    checksum: bool = True  # hash the data while reading it (off with --no-hash)
    ordered: bool = False  # sequence data in file order (explain), not packed by length
    tokenizer: str | None = None  # the models' tokenizer.json, for text data (set by the plan)
    pad_id: int = 0  # a classifier folder's pad token: what labelled text is padded with (plan)
    inputs_key: str = "inputs"  # tensor data (.npz, .safetensors): the inputs' name
    targets_key: str = "targets"  # ... and the targets'
    ignore_index: int | None = None  # cross-entropy, nll: a class id never scored (255)
    workers: int | None = None  # a Dataset factory's DataLoader workers (None: the default)
    slice: tuple[str, ...] = ()  # slice columns (compare's --slice)
    slice_bins: int | None = None  # cut every slice column into quantile bins

    @classmethod
    def of(cls, *, checksum: bool = True, **given: Any) -> Options:
        """Check the flat keywords (`RunKeywords`) once; every mistake is one `OptionError`."""
        unknown = sorted(set(given) - set(RunKeywords.__annotations__))
        if unknown:
            raise TypeError(f"unexpected keyword argument {unknown[0]!r}")
        if given.get("data") is None:
            raise OptionError("give the data set", key="--data")
        precision = given.get("precision", "float32")
        if precision not in PRECISIONS:
            raise OptionError(f"must be one of {', '.join(PRECISIONS)}", key="--precision")
        return cls(
            data=os.fspath(given["data"]),
            model=given.get("model"),
            model_kwargs=parse_kwargs(given.get("model_kwargs")),
            base=None if given.get("base") is None else os.fspath(given["base"]),
            loss=given.get("loss"),
            target=_names(given.get("target", ()), "--target"),
            feature=_names(given.get("feature", ()), "--feature"),
            no_header=bool(given.get("no_header", False)),
            device=given.get("device", "auto"),
            precision=precision,
            **_sequence_options(given),
            **_tensor_options(given),
            checksum=checksum,
        )


def _sequence_options(given: dict[str, Any]) -> dict[str, Any]:
    """--context, --stride, --token-dtype, --tokens-column, --text-column, --score,
    --batch-tokens, checked."""
    context, stride = given.get("context"), given.get("stride")
    for option, value in (("--context", context), ("--stride", stride)):
        if value is not None and (isinstance(value, bool) or not 1 <= value <= 1 << 24):
            raise OptionError(f"must be a whole number from 1 to {1 << 24}", key=option)
    if stride is not None and (context is None or stride > context):
        raise OptionError("needs --context, and may not exceed it", key="--stride")
    dtype = given.get("token_dtype", "uint16")
    if dtype not in TOKEN_DTYPES:
        raise OptionError(f"must be one of {', '.join(TOKEN_DTYPES)}", key="--token-dtype")
    score = given.get("score")
    if score is not None and score not in SCORES:
        raise OptionError(f"must be one of {', '.join(SCORES)}", key="--score")
    budget = given.get("batch_tokens") or DEFAULT_BATCH_TOKENS
    if isinstance(budget, bool) or not 1 <= budget <= 1 << 32:
        raise OptionError(f"must be a whole number from 1 to {1 << 32}", key="--batch-tokens")
    return {
        "context": context,
        "stride": stride if stride is not None else context,
        "token_dtype": dtype,
        "tokens_column": str(given.get("tokens_column", "input_ids")),
        "text_column": str(given.get("text_column") or "text"),
        "text_column_given": given.get("text_column") is not None,
        "score": score,
        "batch_tokens": budget,
        "prefix_token": prefix_token(given.get("prefix_token")),
    }


PREFIX_NAMES = ("auto", "bos", "eos")


def prefix_token(value: object) -> str | None:
    """``--prefix-token`` checked: None, a name (`PREFIX_NAMES`) or a token id, as text."""
    if value is None:
        return None
    text = str(value).strip().lower() if isinstance(value, str | int) else ""
    if isinstance(value, bool) or not (text in PREFIX_NAMES or (text.isascii() and text.isdigit()
                                                                and int(text) < 1 << 63)):
        raise OptionError(f"must be auto, bos, eos or a token id, not {shown(value)}",
                          key="--prefix-token")  # fmt: skip
    return text if text in PREFIX_NAMES else str(int(text))


MAX_WORKERS = 256


def _tensor_options(given: dict[str, Any]) -> dict[str, Any]:
    """--inputs-key, --targets-key, --ignore-index, --workers, checked."""
    keys = {k: given.get(k, k.removesuffix("_key")) for k in ("inputs_key", "targets_key")}
    for name, value in keys.items():
        if not isinstance(value, str) or not value:
            raise OptionError("must be a non-empty name", key="--" + name.replace("_", "-"))
    if keys["inputs_key"] == keys["targets_key"]:
        raise OptionError("inputs and targets need different keys", key="--targets-key")
    ignore, workers = given.get("ignore_index"), given.get("workers")
    if ignore is not None and (isinstance(ignore, bool) or not isinstance(ignore, int)):
        raise OptionError("must be a whole number", key="--ignore-index")
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or not 0 <= workers <= MAX_WORKERS
    ):
        raise OptionError(f"must be a whole number from 0 to {MAX_WORKERS}", key="--workers")
    return {**keys, "ignore_index": ignore, "workers": workers}


def _names(value: Sequence[str] | str, option: str) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(n, str) for n in names):
        raise OptionError("column names must be strings", key=option)
    return names


def parse_kwargs(given: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """``--model-kwargs``: a JSON object (text) or a mapping -> a dict of keyword arguments."""
    if given is None:
        return {}
    if not isinstance(given, str):
        return dict(given)
    try:
        kwargs = json.loads(given)
    except (ValueError, RecursionError) as exc:
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ModelError(f"not valid JSON: {why}", key="--model-kwargs") from None
    if not isinstance(kwargs, dict):
        raise ModelError("must be a JSON object, e.g. '{\"hidden\": 64}'", key="--model-kwargs")
    return kwargs
