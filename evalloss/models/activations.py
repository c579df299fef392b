"""A bound on the activation memory of a layers spec, found before any forward pass.

A 200-byte spec can ask for gigabytes of activations per item (``Linear(1, 1_000_000)``
layers, wide convolutions). Parameters are capped when the spec is parsed (`layers`); here the
shape of one item is followed through the spec's layers by their own formulas (no tensor, no
meta run: that would import sympy, a second of every run), and the peak of any layer's input
plus output bounds what one item needs. A batch is then cut so that its activations stay within
`ACTIVATION_BYTES` (the figure does not depend on the batch size), and an item that alone needs
more is refused. A shape that does not fit a layer gives no bound: the real forward names it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from evalloss.errors import ModelError
from evalloss.models.checkpoint import Checkpoint
from evalloss.models.layers import KEY, parse

ACTIVATION_BYTES = 2 << 30  # one batch's activations, at most (2 GiB)
Shape = tuple[int, ...]


class _NoFit(Exception):  # noqa: N818 - internal signal: the shape does not fit a layer
    pass


def per_item(checkpoint: Checkpoint, item_shape: Sequence[int]) -> int | None:
    """Peak activation elements one item needs in the checkpoint's spec; None without a spec
    or when the shapes do not fit (the real forward then names the problem)."""
    if KEY not in checkpoint.metadata:
        return None
    shape: Shape = (1, *item_shape)
    peak = 0
    try:
        for name, kwargs in parse(checkpoint.metadata[KEY], checkpoint.path):
            out = _output_shape(name, kwargs, shape)
            peak = max(peak, math.prod(shape) + math.prod(out))
            shape = out
    except (_NoFit, IndexError, ZeroDivisionError):
        return None
    return peak


def _output_shape(name: str, kw: dict[str, Any], shape: Shape) -> Shape:
    """The output shape of layer ``name(**kw)`` on an input of ``shape`` (batch first)."""
    if name == "Linear":
        if shape[-1] != kw["in_features"]:
            raise _NoFit
        return (*shape[:-1], kw["out_features"])
    if name == "Embedding":
        return (*shape, kw["embedding_dim"])
    if name == "Flatten":
        start, end = (d % len(shape) for d in (kw.get("start_dim", 1), kw.get("end_dim", -1)))
        return (*shape[:start], math.prod(shape[start : end + 1]), *shape[end + 1 :])
    if name == "Unflatten":
        dim = kw["dim"] % len(shape)
        return (*shape[:dim], *kw["unflattened_size"], *shape[dim + 1 :])
    if name[:-2] in ("ZeroPad", "ConstantPad", "ReflectionPad", "ReplicationPad"):
        return _padded(int(name[-2]), kw["padding"], shape)
    if name == "Upsample":
        return _upsampled(kw, shape)
    if name[:-2] in ("Conv", "MaxPool", "AvgPool", "AdaptiveAvgPool", "AdaptiveMaxPool"):
        dims = int(name[-2])
        channels = kw["out_channels"] if name.startswith("Conv") else shape[-dims - 1]
        return (*shape[: -dims - 1], channels, *_spatial(name, kw, shape[-dims:]))
    return shape  # every other allow-listed layer keeps its input's shape


def _padded(dims: int, padding: Any, shape: Shape) -> Shape:
    """A pad layer's output: (left, right) of the last dim, then (top, bottom) of the one
    before, as torch's ``F.pad`` reads them."""
    pads = padding if isinstance(padding, tuple) else (padding,) * (2 * dims)
    out = list(shape)
    for i in range(dims):
        out[-1 - i] += pads[2 * i] + pads[2 * i + 1]
    return tuple(out)


def _upsampled(kw: dict[str, Any], shape: Shape) -> Shape:
    """Upsample's output: ``size``, else each spatial size times ``scale_factor`` (floor)."""
    dims = len(shape) - 2
    if dims < 1:
        raise _NoFit
    wanted = kw.get("size")
    if wanted is not None:
        sizes = wanted if isinstance(wanted, tuple) else (wanted,) * dims
    else:
        scale = kw.get("scale_factor")
        if scale is None:
            raise _NoFit
        scales = scale if isinstance(scale, tuple) else (scale,) * dims
        sizes = tuple(math.floor(n * s) for n, s in zip(shape[2:], scales, strict=False))
    if len(sizes) != dims:
        raise _NoFit
    return (*shape[:2], *sizes)


def _spatial(name: str, kw: dict[str, Any], sizes: Shape) -> Shape:
    """Output sizes of a convolution or pooling along its ``len(sizes)`` spatial dims."""
    dims = len(sizes)

    def each(value: Any, default: int) -> tuple[int, ...]:
        value = default if value is None else value
        return tuple(value) * (dims // len(value)) if isinstance(value, tuple) else (value,) * dims

    if name.startswith("Adaptive"):
        return each(kw["output_size"], 1)
    kernel = each(kw["kernel_size"], 1)
    if kw.get("padding") == "same":
        return sizes
    padding = each(0 if kw.get("padding") in (None, "valid") else kw["padding"], 0)
    stride = each(kw.get("stride"), 1) if name.startswith("Conv") or kw.get("stride") else kernel
    dilation = each(kw.get("dilation"), 1)
    rounding = math.ceil if kw.get("ceil_mode") else math.floor
    out = tuple(
        rounding((n + 2 * p - d * (k - 1) - 1) / s) + 1
        for n, k, s, p, d in zip(sizes, kernel, stride, padding, dilation, strict=True)
    )
    if min(out) < 1:
        raise _NoFit
    return out


def batch_limit(
    checkpoints: Sequence[Checkpoint], item_shape: Sequence[int] | None, element_bytes: int
) -> int | None:
    """The largest batch whose activations stay within `ACTIVATION_BYTES` for every spec
    checkpoint (None: no bound known); `ModelError` when one item alone needs more."""
    if item_shape is None:
        return None
    limit = None
    for checkpoint in checkpoints:
        elements = per_item(checkpoint, item_shape)
        if not elements:
            continue
        fits = ACTIVATION_BYTES // (elements * element_bytes)
        if fits < 1:
            raise ModelError(
                f"its {KEY} spec needs {elements * element_bytes / 2**30:.1f} GiB of activations "
                f"for one item (the bound is {ACTIVATION_BYTES / 2**30:g} GiB); refused before "
                "running it",
                path=checkpoint.path,
                key=KEY,
            )
        limit = fits if limit is None else min(limit, fits)
    return limit


MEASURED_PARAMETER_BYTES = 256 << 20  # a bigger --model is not built twice to be measured


def measured_per_item(
    spec: str, kwargs: dict[str, Any], item_shape: Sequence[int], dtype: Any
) -> int | None:
    """Peak activation elements one item needs in the ``--model`` module, measured: the module
    is made on the meta device (no initialisation), given uninitialised CPU memory and one
    item of zeros, and its leaf modules' input plus output elements are read by hooks (a real
    forward: a meta run would import sympy). None where that cannot be told: the module is
    big, fails on the item, or has no submodules (its work all in its own forward)."""
    import torch

    from evalloss.models.user import from_spec

    peak = 0

    def hook(_module: Any, inputs: tuple[Any, ...], output: Any) -> None:
        nonlocal peak
        outputs = output if isinstance(output, tuple) else (output,)
        tensors = [t for t in (*inputs, *outputs) if isinstance(t, torch.Tensor)]
        peak = max(peak, sum(t.numel() for t in tensors))

    try:
        with torch.device("meta"):
            module = from_spec(spec, kwargs)
        size = sum(p.numel() * p.element_size() for p in module.parameters())
        if size > MEASURED_PARAMETER_BYTES:
            return None
        _materialise(module, dtype)
        leaves = [m for m in module.modules() if not any(True for _ in m.children())]
        if leaves == [module]:
            return None  # all its work in its own forward: unseen
        handles = [m.register_forward_hook(hook) for m in leaves]
        with torch.inference_mode():
            module(torch.zeros((1, *item_shape), dtype=dtype))
        for handle in handles:
            handle.remove()
    except (Exception, SystemExit):  # no bound known: the real forward names any problem
        return None
    return peak or None


def _materialise(module: Any, dtype: Any) -> None:
    """A meta-built module's parameters and buffers as uninitialised CPU tensors (floating ones
    in ``dtype``), in eval mode. Not ``to_empty``: its ``empty_like`` on meta tensors imports
    sympy (0.35 s of every run here)."""
    import torch

    def empty(t: torch.Tensor) -> torch.Tensor:
        return torch.empty(t.shape, dtype=dtype if t.is_floating_point() else t.dtype)

    for m in module.modules():
        for name, p in m._parameters.items():
            if p is not None:
                m._parameters[name] = torch.nn.Parameter(empty(p), requires_grad=False)
        for name, b in m._buffers.items():
            if b is not None:
                m._buffers[name] = empty(b)
    module.eval()
