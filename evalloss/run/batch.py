"""What an observer of the pass is handed: one `Batch` of items after every model has seen it.

The pass (`onepass`), the replay of recorded passes (`sequential`, `cache.reuse`) and the join
of an item's rows all hand their observers the same record; an observer (paired statistics,
the per-item export, the plot's sample, the per-slice sums, `explain`'s regroupings) is any
object with ``batch(batch: Batch)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch


@dataclass(frozen=True)
class ItemKeys:
    """What else the pass knows of a batch's items where the run is sliced (``--slice``):
    each slice column's codes (n,) int64 (`sources.slicing`), and each model's correct and
    counted target elements per item (n,) int64, where the loss has an accuracy."""

    groups: dict[str, npt.NDArray[np.int64]]
    correct: tuple[npt.NDArray[np.int64], ...] | None = None  # one per model
    counted: npt.NDArray[np.int64] | None = None

    def rows(self, start: int, end: int) -> ItemKeys:
        """The keys of items ``start`` to ``end``."""
        return ItemKeys(
            {k: v[start:end] for k, v in self.groups.items()},
            None if self.correct is None else tuple(c[start:end] for c in self.correct),
            None if self.counted is None else self.counted[start:end],
        )


@dataclass(frozen=True)
class Batch:
    """Consecutive items ``row`` .., seen by every model: their targets (n, ...; None where
    an item was joined from several rows, or none were kept), each model's item losses (n,)
    float64, the items' weights (n,) int64, and where the run is sliced their slice codes
    and correct elements (``keys``)."""

    row: int
    targets: torch.Tensor | None
    losses: Sequence[torch.Tensor]  # one per model
    weights: torch.Tensor
    keys: ItemKeys | None = None


class Observer(Protocol):
    """Watches the pass: every batch, after every model has seen it."""

    def batch(self, batch: Batch) -> None:
        """One more batch of items (`Batch`)."""
        ...
