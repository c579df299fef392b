"""The ``evalloss.layers`` allow-list: a JSON spec in a checkpoint -> an ``nn.Sequential``.

A spec is a JSON list of ``[LayerName, {kwargs}]``. Nothing read from a file is imported or
looked up on a module: a layer name is only ever a key of the fixed tables below, each
keyword must be one the table lists for that layer, and each value is checked (JSON scalars
or lists of them). Sizes are capped and the parameter count is computed from the keywords
before anything is allocated; the layers are then built on the ``meta`` device, so a spec
such as ``Linear(10**9, 10**9)`` is refused, never attempted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .errors import ModelError

if TYPE_CHECKING:
    from torch import nn

MAX_SIZE = 1 << 20  # any one size: features, channels, kernel, embeddings (1,048,576)
MAX_PARAMETERS = 1 << 30  # all parameters and buffers of one spec (1,073,741,824 elements)
MAX_LAYERS = 1000
KEY = "evalloss.layers"

Check = Callable[[Any], Any]


def _int(value: Any) -> int:
    if type(value) is not int:  # bool is an int subclass: refused here
        raise ValueError(f"expected an integer, got {_shown(value)}")
    if abs(value) > MAX_SIZE:
        raise ValueError(f"{value} is beyond the cap of {MAX_SIZE}")
    return value


def _size(value: Any) -> int:
    if _int(value) < 1:
        raise ValueError(f"expected a positive integer, got {value}")
    return int(value)


def _flag(value: Any) -> bool:
    if type(value) is not bool:
        raise ValueError(f"expected true or false, got {_shown(value)}")
    return value


def _real(value: Any) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {_shown(value)}")
    return value  # type: ignore[no-any-return]


def _optional(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


def _sizes(value: Any) -> int | tuple[int, ...]:
    """An int or a list of 1 to 3 positive ints (kernel_size, stride, dilation)."""
    if isinstance(value, list):
        if not 1 <= len(value) <= 3:
            raise ValueError(f"expected 1 to 3 sizes, got {len(value)}")
        return tuple(_size(v) for v in value)
    return _size(value)


def _shape(value: Any) -> tuple[int, ...]:
    """An int or a list of 1 to 8 positive ints (normalized_shape, unflattened_size)."""
    items = value if isinstance(value, list) else [value]
    if not 1 <= len(items) <= 8:
        raise ValueError(f"expected 1 to 8 sizes, got {len(items)}")
    return tuple(_size(v) for v in items)


def _padding(value: Any) -> str | int | tuple[int, ...]:
    if value in ("same", "valid"):
        return str(value)
    items = value if isinstance(value, list) else [value]
    if not 1 <= len(items) <= 3 or any(_int(v) < 0 for v in items):
        raise ValueError(f"expected 'same', 'valid' or 1 to 3 sizes >= 0, got {_shown(value)}")
    return tuple(items) if isinstance(value, list) else int(value)


def _choice(*options: str) -> Check:
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {_shown(value)}")
        return str(value)

    return check


_CONV = {
    "in_channels": _size,
    "out_channels": _size,
    "kernel_size": _sizes,
    "stride": _sizes,
    "padding": _padding,
    "dilation": _sizes,
    "groups": _size,
    "bias": _flag,
    "padding_mode": _choice("zeros", "reflect", "replicate", "circular"),
}
_NORM = {
    "num_features": _size,
    "eps": _real,
    "momentum": _optional(_real),
    "affine": _flag,
    "track_running_stats": _flag,
}
_MAXPOOL = {
    "kernel_size": _sizes,
    "stride": _optional(_sizes),
    "padding": _padding,
    "dilation": _sizes,
    "ceil_mode": _flag,
}
_AVGPOOL = {
    "kernel_size": _sizes,
    "stride": _optional(_sizes),
    "padding": _padding,
    "ceil_mode": _flag,
    "count_include_pad": _flag,
}
_DIM = {"dim": _optional(_int)}

# The allow-list: layer name -> the keyword arguments it accepts, each with its check.
ALLOWED: dict[str, dict[str, Check]] = {
    "Linear": {"in_features": _size, "out_features": _size, "bias": _flag},
    "Conv1d": _CONV,
    "Conv2d": _CONV,
    "BatchNorm1d": _NORM,
    "BatchNorm2d": _NORM,
    "LayerNorm": {
        "normalized_shape": _shape,
        "eps": _real,
        "elementwise_affine": _flag,
        "bias": _flag,
    },
    "Embedding": {
        "num_embeddings": _size,
        "embedding_dim": _size,
        "padding_idx": _optional(_int),
    },
    "Dropout": {"p": _real},
    "Flatten": {"start_dim": _int, "end_dim": _int},
    "Unflatten": {"dim": _int, "unflattened_size": _shape},
    "MaxPool1d": _MAXPOOL,
    "MaxPool2d": _MAXPOOL,
    "AvgPool1d": _AVGPOOL,
    "AvgPool2d": _AVGPOOL,
    "AdaptiveAvgPool1d": {"output_size": _sizes},
    "AdaptiveAvgPool2d": {"output_size": _sizes},
    "ReLU": {}, "GELU": {"approximate": _choice("none", "tanh")}, "SiLU": {}, "Mish": {},
    "Tanh": {}, "Sigmoid": {},
    "ELU": {"alpha": _real},
    "LeakyReLU": {"negative_slope": _real},
    "PReLU": {"num_parameters": _size, "init": _real},
    "Softplus": {"beta": _real, "threshold": _real},
    "Softmax": _DIM, "LogSoftmax": _DIM, "Identity": {},
}  # fmt: skip
_CONV_REQUIRED = ("in_channels", "out_channels", "kernel_size")
REQUIRED: dict[str, tuple[str, ...]] = {
    "Linear": ("in_features", "out_features"),
    "Conv1d": _CONV_REQUIRED, "Conv2d": _CONV_REQUIRED,
    "BatchNorm1d": ("num_features",), "BatchNorm2d": ("num_features",),
    "LayerNorm": ("normalized_shape",), "Embedding": ("num_embeddings", "embedding_dim"),
    "Unflatten": ("dim", "unflattened_size"),
    "MaxPool1d": ("kernel_size",), "MaxPool2d": ("kernel_size",),
    "AvgPool1d": ("kernel_size",), "AvgPool2d": ("kernel_size",),
    "AdaptiveAvgPool1d": ("output_size",), "AdaptiveAvgPool2d": ("output_size",),
}  # fmt: skip


def classes() -> dict[str, type[nn.Module]]:
    """The allow-listed classes, spelled out: a name from a file is only a key of this dict."""
    from torch import nn

    # fmt: off
    return {
        "Linear": nn.Linear, "Conv1d": nn.Conv1d, "Conv2d": nn.Conv2d,
        "BatchNorm1d": nn.BatchNorm1d, "BatchNorm2d": nn.BatchNorm2d, "LayerNorm": nn.LayerNorm,
        "Embedding": nn.Embedding, "Dropout": nn.Dropout, "Flatten": nn.Flatten,
        "Unflatten": nn.Unflatten, "MaxPool1d": nn.MaxPool1d, "MaxPool2d": nn.MaxPool2d,
        "AvgPool1d": nn.AvgPool1d, "AvgPool2d": nn.AvgPool2d,
        "AdaptiveAvgPool1d": nn.AdaptiveAvgPool1d, "AdaptiveAvgPool2d": nn.AdaptiveAvgPool2d,
        "ReLU": nn.ReLU, "GELU": nn.GELU, "SiLU": nn.SiLU, "Mish": nn.Mish, "Tanh": nn.Tanh,
        "Sigmoid": nn.Sigmoid, "ELU": nn.ELU, "LeakyReLU": nn.LeakyReLU, "PReLU": nn.PReLU,
        "Softplus": nn.Softplus, "Softmax": nn.Softmax, "LogSoftmax": nn.LogSoftmax,
        "Identity": nn.Identity,
    }
    # fmt: on


Spec = list[tuple[str, dict[str, Any]]]


def parse(text: str, path: str | None = None) -> Spec:
    """Check a spec's JSON text against the allow-list; refuse anything else by name."""

    def refuse(what: str) -> ModelError:
        return ModelError(what, path=path, key=KEY)

    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise refuse(f"not valid JSON ({exc})") from None
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_LAYERS:
        raise refuse(f"expected a JSON list of 1 to {MAX_LAYERS} [LayerName, {{kwargs}}] entries")
    spec: Spec = []
    total = 0
    for i, entry in enumerate(raw):
        if not isinstance(entry, list) or len(entry) not in (1, 2):
            raise refuse(f"layer {i}: expected [LayerName, {{kwargs}}], got {_shown(entry)}")
        name, given = entry[0], (entry[1] if len(entry) == 2 else {})
        if not isinstance(name, str) or name not in ALLOWED:
            raise refuse(
                f"layer {i}: {_shown(name)} is not in the allow-list of torch.nn layers "
                "(see docs/checkpoints.md)"
            )
        if not isinstance(given, dict):
            raise refuse(f"layer {i} ({name}): kwargs must be a JSON object")
        kwargs: dict[str, Any] = {}
        for key, value in given.items():
            check = ALLOWED[name].get(key)
            if check is None:
                known = ", ".join(ALLOWED[name]) or "none"
                raise refuse(f"layer {i} ({name}): unknown argument {_shown(key)}; known: {known}")
            try:
                kwargs[key] = check(value)
            except ValueError as exc:
                raise refuse(f"layer {i} ({name}): {key}: {exc}") from None
        missing = [k for k in REQUIRED.get(name, ()) if k not in kwargs]
        if missing:
            raise refuse(f"layer {i} ({name}): missing argument {', '.join(missing)}")
        total += parameters(name, kwargs)
        if total > MAX_PARAMETERS:
            raise refuse(
                f"layer {i} ({name}): the spec needs more than {MAX_PARAMETERS} parameters "
                "(the cap); refused before allocating anything"
            )
        spec.append((name, kwargs))
    return spec


def parameters(name: str, kw: dict[str, Any]) -> int:
    """Elements of the parameters and buffers ``name(**kw)`` would allocate (Python ints)."""
    if name == "Linear":
        out = kw["out_features"]
        return int(kw["in_features"] * out + (out if kw.get("bias", True) else 0))
    if name in ("Conv1d", "Conv2d"):
        kernel = kw["kernel_size"]
        dims = 1 if name == "Conv1d" else 2
        taps = math.prod(kernel) if isinstance(kernel, tuple) else kernel**dims
        out = kw["out_channels"]
        per_group = kw["in_channels"] // kw.get("groups", 1)
        return int(out * per_group * taps + (out if kw.get("bias", True) else 0))
    if name in ("BatchNorm1d", "BatchNorm2d"):
        return 4 * int(kw["num_features"]) + 1
    if name == "LayerNorm":
        return 2 * int(math.prod(kw["normalized_shape"]))
    if name == "Embedding":
        return int(kw["num_embeddings"] * kw["embedding_dim"])
    if name == "PReLU":
        return int(kw.get("num_parameters", 1))
    return 0


def build(spec: Spec, path: str | None = None) -> nn.Sequential:
    """The ``nn.Sequential`` a checked spec describes, on the ``meta`` device (no storage).

    Call ``.to_empty(device=...)`` and load the weights to use it.
    """
    import torch
    from torch import nn

    table = classes()
    layers = []
    with torch.device("meta"):
        for i, (name, kwargs) in enumerate(spec):
            try:
                layers.append(table[name](**kwargs))
            except (TypeError, ValueError, RuntimeError) as exc:
                raise ModelError(
                    f"layer {i} ({name}): cannot build it ({exc})", path=path, key=KEY
                ) from exc
    for layer in layers:
        if isinstance(layer, nn.Embedding):
            layer.register_forward_pre_hook(_as_indices)
    return nn.Sequential(*layers)


def _as_indices(layer: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Features arrive as floats; an Embedding takes them as indices if they are whole numbers."""
    x = args[0]
    if not x.is_floating_point():
        return args
    indices = x.long()
    if not bool((indices.to(x.dtype) == x).all()):
        raise ValueError("Embedding takes whole-number features (indices); got fractions")
    return (indices, *args[1:])


# Attributes that change what a layer computes but that no spec can express: a layer whose
# attribute differs from this value is saved with `evalloss.model` instead of a spec.
_FIXED: dict[str, dict[str, object]] = {
    "Embedding": {"max_norm": None},
    "MaxPool1d": {"return_indices": False},
    "MaxPool2d": {"return_indices": False},
    "AvgPool2d": {"divisor_override": None},
}


def describe(module: nn.Module) -> str | None:
    """The spec of ``module`` as JSON text, or None when it is not a plain allow-listed stack."""
    from torch import nn

    if type(module) is not nn.Sequential:
        return None
    names = {cls: name for name, cls in classes().items()}
    raw: list[list[object]] = []
    for i, (child, layer) in enumerate(module.named_children()):
        name = names.get(type(layer))
        if child != str(i) or name is None:
            return None
        if any(getattr(layer, a, v) != v for a, v in _FIXED.get(name, {}).items()):
            return None
        kwargs = {arg: _json(_attribute(layer, arg)) for arg in ALLOWED[name]}
        raw.append([name, kwargs])
    if not raw:
        return None
    text = json.dumps(raw, separators=(",", ":"))
    try:
        rebuilt = build(parse(text))
    except ModelError:
        return None
    mine = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    if mine != {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}:
        return None  # e.g. parameters added or removed by hand
    return text


def _attribute(layer: nn.Module, arg: str) -> object:
    if arg == "bias":  # Linear, Conv, LayerNorm take a flag and keep a tensor or None
        return getattr(layer, "bias", None) is not None
    return getattr(layer, arg)


def _json(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def _shown(value: object) -> str:
    """A value read from a file, made safe to print on one line."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def allow_list_markdown() -> str:
    """The allow-list as a Markdown table (docs/checkpoints.md embeds it; a test checks it)."""
    lines = ["| layer | keyword arguments (required in bold) |", "|---|---|"]
    for name, args in ALLOWED.items():
        required = REQUIRED.get(name, ())
        shown = [f"**{a}**" if a in required else a for a in args]
        lines.append(f"| `{name}` | {', '.join(shown) or '(none)'} |")
    return "\n".join(lines) + "\n"
