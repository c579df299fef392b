"""Paired statistics when items have weights: documents of tokens (``causal-lm``).

The documents are the paired units. For a model A against the baseline B, with document sums
a_d, b_d and scored tokens t_d (documents with t_d = 0 score nothing and are left out):

    delta   = sum(a_d - b_d) / sum(t_d)                     (per token)
    ci95    = delta +- t(0.975, n - 1) * se,  se**2 = n / (n - 1) * sum(e_d**2) / sum(t_d)**2,
              e_d = (a_d - b_d) - delta * t_d               (cluster-robust, delta method)
    p_value = the matching two-sided t-test of delta = 0
    wins    = share of documents whose per-token loss is lower under A (a_d < b_d)

For weight-1 items this is the paired t statistics of v1 (`stats.PairedSum`). The state is a
few exact sums: sum d, sum d**2, sum d*t (each product split into two floats, nothing lost),
sum t and sum t**2 (integers), so sum(e_d**2) is computed exactly at the end; it merges across
processes like every reducible state.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING

from evalloss.stats.exact import ExactSum
from evalloss.stats.paired import compared, t_interval
from evalloss.stats.state import EXACT, SUM, Reducible, fields

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from evalloss.report import Comparison

_HUGE = 2.0**500  # beyond this a product could overflow: no interval
_SPLITTER = 134217729.0  # 2**27 + 1, Veltkamp's constant for float64


def products(
    a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``a * b`` as ``hi + lo`` exactly (Dekker's TwoProduct), for ``|a|, |b| < 2**500``."""
    hi = a * b
    ca, cb = a * _SPLITTER, b * _SPLITTER
    ah, bh = ca - (ca - a), cb - (cb - b)
    al, bl = a - ah, b - bh
    lo = (((ah * bh - hi) + ah * bl) + al * bh) + al * bl
    return hi, lo


class PairedRatio(Reducible):
    """Running cluster-robust paired statistics of one model against the baseline."""

    FIELDS = fields(n=SUM, wins=SUM, nonfinite=SUM, huge=SUM, sum_t=SUM, sum_t2=SUM,
                    sum_d=EXACT, sum_d2=EXACT, sum_dt=EXACT)  # fmt: skip

    def __init__(self) -> None:
        self.n = self.wins = self.nonfinite = self.huge = self.sum_t = self.sum_t2 = 0
        self.sum_d, self.sum_d2, self.sum_dt = ExactSum(), ExactSum(), ExactSum()

    def add(
        self,
        losses: npt.NDArray[np.float64],
        baseline: npt.NDArray[np.float64],
        weights: npt.NDArray[np.int64],
    ) -> None:
        """Fold in one batch: each document's loss sum under this model and the baseline, and
        its scored tokens."""
        import numpy as np

        scored = weights > 0
        d = (np.asarray(losses, dtype=np.float64) - np.asarray(baseline, dtype=np.float64))[scored]
        t = np.asarray(weights, dtype=np.int64)[scored]
        finite = np.isfinite(d)
        if not finite.all():
            self.nonfinite += int(d.size - finite.sum())
            d, t = d[finite], t[finite]
        self.n += int(d.size)
        self.wins += int((d < 0).sum())
        self.sum_t += int(t.sum())
        self.sum_t2 += sum(int(x) * int(x) for x in t.tolist())
        self.sum_d.add(d)
        big = np.abs(d) >= _HUGE
        if big.any():
            self.huge += int(big.sum())
            d, t = d[~big], t[~big]
        hi, lo = products(d, d)
        self.sum_d2.add(hi)
        self.sum_d2.add(lo)
        hi, lo = products(d, t.astype(np.float64))
        self.sum_dt.add(hi)
        self.sum_dt.add(lo)

    def comparison(self, baseline_per_token: float | None) -> Comparison:
        """The statistics, given the baseline's loss per token (for ``relative``)."""
        from evalloss.report import Comparison

        n = self.n
        if self.nonfinite or n == 0 or self.sum_t == 0 or self.sum_d.overflowed:
            return Comparison(delta=None, relative=None, ci95=None, p_value=None, wins=None)
        s_d = sum(map(Fraction, self.sum_d.partials), Fraction(0))
        ratio = s_d / self.sum_t
        test = self._t_test(ratio) if n > 1 else (None, None)
        return compared(float(ratio), baseline_per_token, test, self.wins / n)

    def _t_test(self, ratio: Fraction) -> tuple[tuple[float, float] | None, float | None]:
        if self.huge or self.sum_d2.overflowed or self.sum_dt.overflowed:
            return None, None
        n = self.n
        s_d2 = sum(map(Fraction, self.sum_d2.partials), Fraction(0))
        s_dt = sum(map(Fraction, self.sum_dt.partials), Fraction(0))
        residuals = s_d2 - 2 * ratio * s_dt + ratio * ratio * self.sum_t2  # exact sum e_d**2
        variance = Fraction(n, n - 1) * residuals / (self.sum_t * self.sum_t)
        return t_interval(float(ratio), math.sqrt(float(variance)), n - 1)
