"""The allow-list behind ``evalloss.layers``: layer name -> accepted keywords, each checked.

A layer name from a file is only ever a key of `ALLOWED` and of `classes()`, where each class
is spelled out; `parameters` counts what a layer would allocate before anything is built.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from evalloss.errors import shown

if TYPE_CHECKING:
    from torch import nn

MAX_SIZE = 1 << 20  # any one size: features, channels, kernel, embeddings (1,048,576)

Check = Callable[[Any], Any]


def _int(value: Any) -> int:
    if type(value) is not int:  # bool is an int subclass: refused here
        raise ValueError(f"expected an integer, got {shown(value)}")
    if abs(value) > MAX_SIZE:
        raise ValueError(f"{value} is beyond the cap of {MAX_SIZE}")
    return value


def _size(value: Any) -> int:
    if _int(value) < 1:
        raise ValueError(f"expected a positive integer, got {value}")
    return int(value)


def _flag(value: Any) -> bool:
    if type(value) is not bool:
        raise ValueError(f"expected true or false, got {shown(value)}")
    return value


def _real(value: Any) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise ValueError(f"expected a finite number, got {shown(value)}")
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
        raise ValueError(f"expected 'same', 'valid' or 1 to 3 sizes >= 0, got {shown(value)}")
    return tuple(items) if isinstance(value, list) else int(value)


MAX_PAD = 1 << 12  # padding, per side
MAX_SCALE = 32  # Upsample's scale factor, per dimension


def _pads(sides: int) -> Check:
    """Padding of a ``sides // 2``-d pad layer: one size >= 0, or a list of ``sides``."""

    def check(value: Any) -> int | tuple[int, ...]:
        items = value if isinstance(value, list) else [value]
        if len(items) not in (1, sides) or (len(items) == 1 and isinstance(value, list)):
            raise ValueError(f"expected a size or a list of {sides}, got {shown(value)}")
        if any(not 0 <= _int(v) <= MAX_PAD for v in items):
            raise ValueError(f"sizes from 0 to {MAX_PAD}, got {shown(value)}")
        return tuple(items) if isinstance(value, list) else int(value)

    return check


def _scale(value: Any) -> float | tuple[float, ...]:
    """Upsample's scale_factor: a number in (0, 32], or a list of 1 to 3."""
    items = value if isinstance(value, list) else [value]
    if not 1 <= len(items) <= 3 or any(not 0 < _real(v) <= MAX_SCALE for v in items):
        raise ValueError(f"expected numbers in (0, {MAX_SCALE}], got {shown(value)}")
    return tuple(float(v) for v in items) if isinstance(value, list) else float(value)


def _choice(*options: str) -> Check:
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {shown(value)}")
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
    "Dropout": {"p": _real}, "Dropout1d": {"p": _real}, "Dropout2d": {"p": _real},
    "Flatten": {"start_dim": _int, "end_dim": _int},
    "Unflatten": {"dim": _int, "unflattened_size": _shape},
    "MaxPool1d": _MAXPOOL,
    "MaxPool2d": _MAXPOOL,
    "AvgPool1d": _AVGPOOL,
    "AvgPool2d": _AVGPOOL,
    "AdaptiveAvgPool1d": {"output_size": _sizes},
    "AdaptiveAvgPool2d": {"output_size": _sizes},
    "AdaptiveMaxPool1d": {"output_size": _sizes},
    "AdaptiveMaxPool2d": {"output_size": _sizes},
    "ZeroPad1d": {"padding": _pads(2)}, "ZeroPad2d": {"padding": _pads(4)},
    "ConstantPad1d": {"padding": _pads(2), "value": _real},
    "ConstantPad2d": {"padding": _pads(4), "value": _real},
    "ReflectionPad1d": {"padding": _pads(2)}, "ReflectionPad2d": {"padding": _pads(4)},
    "ReplicationPad1d": {"padding": _pads(2)}, "ReplicationPad2d": {"padding": _pads(4)},
    "Upsample": {
        "size": _optional(_sizes), "scale_factor": _optional(_scale),
        "mode": _choice("nearest", "linear", "bilinear", "bicubic"),
        "align_corners": _optional(_flag),
    },
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
    "AdaptiveMaxPool1d": ("output_size",), "AdaptiveMaxPool2d": ("output_size",),
    "ZeroPad1d": ("padding",), "ZeroPad2d": ("padding",),
    "ConstantPad1d": ("padding", "value"), "ConstantPad2d": ("padding", "value"),
    "ReflectionPad1d": ("padding",), "ReflectionPad2d": ("padding",),
    "ReplicationPad1d": ("padding",), "ReplicationPad2d": ("padding",),
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
        "AdaptiveMaxPool1d": nn.AdaptiveMaxPool1d, "AdaptiveMaxPool2d": nn.AdaptiveMaxPool2d,
        "ZeroPad1d": nn.ZeroPad1d, "ZeroPad2d": nn.ZeroPad2d,
        "ConstantPad1d": nn.ConstantPad1d, "ConstantPad2d": nn.ConstantPad2d,
        "ReflectionPad1d": nn.ReflectionPad1d, "ReflectionPad2d": nn.ReflectionPad2d,
        "ReplicationPad1d": nn.ReplicationPad1d, "ReplicationPad2d": nn.ReplicationPad2d,
        "Upsample": nn.Upsample, "Dropout1d": nn.Dropout1d, "Dropout2d": nn.Dropout2d,
        "ReLU": nn.ReLU, "GELU": nn.GELU, "SiLU": nn.SiLU, "Mish": nn.Mish, "Tanh": nn.Tanh,
        "Sigmoid": nn.Sigmoid, "ELU": nn.ELU, "LeakyReLU": nn.LeakyReLU, "PReLU": nn.PReLU,
        "Softplus": nn.Softplus, "Softmax": nn.Softmax, "LogSoftmax": nn.LogSoftmax,
        "Identity": nn.Identity,
    }
    # fmt: on


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
