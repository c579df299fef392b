"""A bound on the activation memory of a layers spec, found before any forward pass.

A 200-byte spec can ask for gigabytes of activations per item (``Linear(1, 1_000_000)``
layers, wide convolutions). Parameters are capped when the spec is parsed (`layers`); here the
spec runs once on the ``meta`` device (shapes only, no storage) with one item of the data's
shape, and the peak of any layer's input plus output bounds what one item needs. A batch is
then cut so that its activations stay within `ACTIVATION_BYTES` (the figure does not depend
on the batch size), and an item that alone needs more is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evalloss.errors import ModelError

from .checkpoint import Checkpoint
from .layers import KEY, parse, sequential

ACTIVATION_BYTES = 2 << 30  # one batch's activations, at most (2 GiB)


def per_item(checkpoint: Checkpoint, item_shape: Sequence[int]) -> int | None:
    """Peak activation elements one item needs in the checkpoint's spec; None without a spec
    or when the shapes do not fit (the real forward then names the problem)."""
    import torch

    if KEY not in checkpoint.metadata:
        return None
    module = sequential(parse(checkpoint.metadata[KEY], checkpoint.path), hooks=False)
    peak = 0

    def record(layer: Any, args: tuple[Any, ...], output: Any) -> None:
        nonlocal peak
        peak = max(peak, args[0].numel() + output.numel())

    for layer in module:
        layer.register_forward_hook(record)
    try:
        with torch.inference_mode():
            module(torch.empty((1, *item_shape), device="meta"))
    except Exception:  # shapes that do not fit: the real forward says so, with the rows
        return None
    return peak


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
