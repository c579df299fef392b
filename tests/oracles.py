"""Independent computations the tests check evalloss against: float64, one item at a time.

Nothing here calls the torch criterion evalloss uses; each loss is written out by hand.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence


def _logsumexp(z: Sequence[float]) -> float:
    m = max(z)
    return m + math.log(sum(math.exp(v - m) for v in z))


def item_loss(name: str, output: Sequence[float], target: Sequence[float]) -> float:
    """The contract's loss_i for one item: mean over the item's elements, float64."""
    if name == "cross-entropy":
        return _logsumexp(output) - output[int(target[0])]
    if name == "nll":
        return -output[int(target[0])]
    pairs = list(zip(output, target, strict=True))
    if name == "mse":
        values = [(o - t) ** 2 for o, t in pairs]
    elif name == "l1":
        values = [abs(o - t) for o, t in pairs]
    elif name in ("smooth-l1", "huber"):  # beta = delta = 1.0, where the two coincide
        values = [0.5 * (o - t) ** 2 if abs(o - t) < 1 else abs(o - t) - 0.5 for o, t in pairs]
    elif name == "bce":
        values = [-(t * math.log(o) + (1 - t) * math.log(1 - o)) for o, t in pairs]
    elif name == "bce-logits":  # -(t log s(o) + (1-t) log(1-s(o))) = softplus(o) - t o, stably
        values = [max(o, 0.0) + math.log1p(math.exp(-abs(o))) - t * o for o, t in pairs]
    else:
        raise ValueError(name)
    return math.fsum(values) / len(values)


def loss_sum(
    name: str, outputs: Sequence[Sequence[float]], targets: Sequence[Sequence[float]]
) -> float:
    return math.fsum(item_loss(name, o, t) for o, t in zip(outputs, targets, strict=True))


_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?%?$")


def assert_same_text(shown: str, actual: str, rel: float = 2e-5) -> None:
    """``actual`` reads as ``shown`` word for word, numbers equal to ``rel``: float32 figures
    move in their last digit between CPUs (the GEMM kernels differ), so a pasted float32
    report is compared as text, its numbers as numbers (column widths may change with them)."""
    a, b = shown.split(), actual.split()
    assert len(a) == len(b), f"{shown!r} != {actual!r}"
    for x, y in zip(a, b, strict=True):
        x, y = x.strip(",;:"), y.strip(",;:")
        if _NUMBER.match(x) and _NUMBER.match(y) and x.endswith("%") == y.endswith("%"):
            u, v = float(x.rstrip("%")), float(y.rstrip("%"))
            assert math.isclose(u, v, rel_tol=rel, abs_tol=1e-6 if "%" not in x else 1.0), (x, y)
        else:
            assert x == y, f"{x!r} != {y!r} in {actual!r}"
