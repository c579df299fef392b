"""What a report says of ``--slice``: frozen, like the rest of `report` (which keeps them as
``ModelResult.slices`` and ``Report.slicing``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .report import Comparison


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
