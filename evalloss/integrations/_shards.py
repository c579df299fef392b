"""What the framework callbacks share: every process's sums gathered, and the figures from them.

Each process keeps its own items' exact sums (`run.running.DeviceSums`); at the end of an
evaluation one ``all_gather_object`` on the framework's own process group brings every
process's sums to every process, merged in rank order, so every rank reports the same figure.
"""

from __future__ import annotations

import math
from typing import Any

from evalloss.run.running import DeviceSums, dump, merged_sums


def world() -> tuple[int, int]:
    """(rank, processes) of ``torch.distributed``'s default group; (0, 1) without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(value: Any) -> list[Any]:
    """Every process's ``value`` (picklable), in rank order; ``[value]`` in one process."""
    import torch.distributed as dist

    _, size = world()
    if size == 1:
        return [value]
    out: list[Any] = [None] * size
    dist.all_gather_object(out, value)
    return out


def add_exactly(sums: DeviceSums, values: list[float], weights: list[int]) -> None:
    """Host values and weights into ``sums`` (the kept items of a last batch)."""
    import torch

    if values:
        sums.add(torch.tensor(values, dtype=torch.float64), torch.tensor(weights))


def figures(states: list[dict[str, Any]]) -> tuple[float, int]:
    """(loss per unit, units) of every process's `dump`: NaN where an item was not finite."""
    total, weight, _, nonfinite = merged_sums(states)
    if nonfinite or total.overflowed or not weight:
        return math.nan, weight
    return total.value / weight, weight


def perplexity(loss: float) -> float:
    try:
        return math.exp(loss)
    except OverflowError:
        return math.inf


__all__ = ["DeviceSums", "add_exactly", "dump", "figures", "gather", "perplexity", "world"]
