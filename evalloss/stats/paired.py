"""Paired statistics built on exact sums (`exact.ExactSum`), and the relative error every
figure is judged by.

`PairedSum` builds on `ExactSum`: the paired statistics of a model against the baseline (mean
difference, paired t interval and test, wins) from a few mergeable running sums.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING

from evalloss.stats.exact import ExactSum
from evalloss.stats.state import EXACT, SUM, Reducible, fields

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from evalloss.report import Comparison


def relative_error(estimate: float | None, truth: float | None) -> float | None:
    """(estimate - truth) / |truth|; 0 when they are equal; None when undefined."""
    if estimate is None or truth is None:
        return None
    if estimate == truth:
        return 0.0
    if truth == 0 or not math.isfinite(truth) or not math.isfinite(estimate):
        return None
    return (estimate - truth) / abs(truth)


# Items whose difference is at least this large cannot have their square split exactly (and
# the square is near float64's range anyway): they make the spread, so the interval, unknown.
_HUGE = 2.0**500
_SPLITTER = 134217729.0  # 2**27 + 1, Veltkamp's constant for float64


def _squares(d: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], ...]:
    """``d * d`` as ``hi + lo`` exactly (Dekker's TwoProduct), for ``|d| < 2**500``.

    Exact up to underflow: below about 1e-145 the low part may lose bits, far under any loss.
    """
    hi = d * d
    c = d * _SPLITTER
    dh = c - (c - d)
    dl = d - dh
    lo = ((dh * dh - hi) + 2.0 * dh * dl) + dl * dl
    return hi, lo


class PairedSum(Reducible):
    """Running paired statistics of one model against the baseline, item by item.

    For every item, ``d = loss - baseline_loss`` (float64). The state is four numbers: the item
    count ``n``, the exact sum of ``d``, the exact sum of ``d**2`` (each square split into two
    floats so that no bit is lost) and the count of ``d < 0`` (wins), plus the count of items
    where either loss is not finite. It is a `state.Reducible` (mergeable across processes,
    or shard by shard with `merge`); no per-item value is kept.

    `comparison` turns it into a `Comparison`: ``delta`` (mean ``d``), ``relative``, the
    paired t interval ``ci95``, the two-sided paired t-test ``p_value`` and ``wins``. The
    spread ``sum((d - mean)**2)`` is computed exactly from the two sums, so identical
    differences give a spread of exactly zero. Degenerate cases:

    - any item where the model's or the baseline's loss is not finite: every field is None;
    - no items: every field is None;
    - one item: ``delta``, ``relative`` and ``wins``; ``ci95`` and ``p_value`` are None;
    - zero spread (every ``d`` equal, n >= 2): the limit of the t-test, ``ci95 = [delta,
      delta]`` and ``p_value = 0`` (or 1 when ``delta == 0``: the models are identical);
    - ``relative`` is None when the baseline's loss per item is 0 or not finite.
    """

    __slots__ = ("huge", "n", "nonfinite", "sum_d", "sum_d2", "wins")
    FIELDS = fields(n=SUM, wins=SUM, nonfinite=SUM, huge=SUM, sum_d=EXACT, sum_d2=EXACT)

    def __init__(self) -> None:
        self.n = self.wins = self.nonfinite = self.huge = 0
        self.sum_d = ExactSum()
        self.sum_d2 = ExactSum()

    def add(self, losses: npt.NDArray[np.float64], baseline: npt.NDArray[np.float64]) -> None:
        """Fold in one batch: this model's per-item losses and the baseline's, same items."""
        import numpy as np

        d = np.asarray(losses, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
        finite = np.isfinite(d)
        if not finite.all():
            self.nonfinite += int(d.size - finite.sum())
            d = d[finite]
        self.n += int(d.size)
        self.wins += int((d < 0).sum())
        self.sum_d.add(d)
        big = np.abs(d) >= _HUGE
        if big.any():
            self.huge += int(big.sum())
            d = d[~big]
        for part in _squares(d):
            self.sum_d2.add(part)

    def comparison(self, baseline_loss_per_item: float | None) -> Comparison:
        """The paired statistics, given the baseline's loss per item (for ``relative``)."""
        from evalloss.report import Comparison

        n = self.n
        if self.nonfinite or n == 0 or self.sum_d.overflowed:
            return Comparison(delta=None, relative=None, ci95=None, p_value=None, wins=None)
        s1 = sum(map(Fraction, self.sum_d.partials), Fraction(0))
        test = self._t_test(s1) if n > 1 else (None, None)
        return compared(float(s1 / n), baseline_loss_per_item, test, self.wins / n)

    def _t_test(self, s1: Fraction) -> tuple[tuple[float, float] | None, float | None]:
        if self.huge or self.sum_d2.overflowed:
            return None, None
        n = self.n
        s2 = sum(map(Fraction, self.sum_d2.partials), Fraction(0))
        spread = s2 - s1 * s1 / n  # exact sum of (d - mean)**2
        se = math.sqrt(float(spread / (n - 1) / n))  # standard error of the mean difference
        return t_interval(float(s1 / n), se, n - 1)


def compared(delta: float, base: float | None,
             test: tuple[tuple[float, float] | None, float | None], wins: float) -> Comparison:
    """The `Comparison` of a mean difference ``delta`` against the baseline's figure ``base``
    (``relative``: the difference as a fraction of it), with its t test and share of wins."""
    from evalloss.report import Comparison

    relative = float(delta / abs(base)) if base and math.isfinite(base) else None
    ci95, p_value = test
    return Comparison(delta=delta, relative=relative, ci95=ci95, p_value=p_value, wins=wins)


def t_interval(mean: float, se: float, df: int) -> tuple[tuple[float, float], float]:
    """The 95% t interval of ``mean`` and its two-sided p-value against 0. Zero spread is the
    limit of the t-test: ``[mean, mean]`` and p = 0 (1 when the mean is 0 too)."""
    if se == 0.0:
        return (mean, mean), 1.0 if mean == 0.0 else 0.0
    from scipy.special import stdtr, stdtrit  # what scipy.stats.t calls, without its second

    half = float(stdtrit(df, 0.975)) * se
    p_value = float(min(1.0, 2.0 * stdtr(df, -abs(mean) / se)))
    return (mean - half, mean + half), p_value
