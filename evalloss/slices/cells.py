"""Every slice's running sums, for one slice column, added to in a few NumPy calls per batch
whatever the number of slices (`groupsum.GroupedSum` for the exact float sums, ``bincount``
for the integer counts); `cell` turns one slice's sums into a `Cell`, the mergeable record
the report is built from.

What is summed per slice mirrors the whole run's states: per model, as
`engine.Accumulator` (the finite item values, exactly; non-finite items counted; correct and
counted target elements), and per model against the baseline, as `stats.PairedSum` (items,
wins, sum d, sum d**2 split exactly into two floats, non-finite and huge differences) or, for
token losses, `ratio.PairedRatio` (documents with tokens only; sum t, sum t**2, sum d t).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evalloss.stats.exact import ExactSum
from evalloss.stats.groupsum import GroupedSum
from evalloss.stats.paired import PairedSum
from evalloss.stats.ratio import PairedRatio, products
from evalloss.stats.state import EXACT, NESTED, SUM, Reducible, each, fields

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

_HUGE = 2.0**500  # as `stats` and `ratio`: a difference this large has no exact square
# what `ratio.PairedRatio` (and, without the tokens, `stats.PairedSum`) sums, per slice
_PAIR_COUNTS = tuple(k for k, kind in PairedRatio.FIELDS.items() if kind is SUM)
_PAIR_SUMS = tuple(k for k, kind in PairedRatio.FIELDS.items() if kind is EXACT)


class Cell(Reducible):
    """One slice's sums: every model's exact loss sum, non-finite items and correct
    elements; items, weight and counted elements; paired sums against the baseline."""

    FIELDS = fields(items=SUM, weight=SUM, counted=SUM, sums=each(EXACT), nonfinite=each(SUM),
                    correct=each(SUM), paired=each(NESTED))  # fmt: skip

    def __init__(self, models: int, base: int | None, tokens: bool) -> None:
        self.items = self.weight = self.counted = 0
        self.sums = [ExactSum() for _ in range(models)]
        self.nonfinite = [0] * models
        self.correct = [0] * models
        kind = PairedRatio if tokens else PairedSum
        self.paired: dict[int, PairedSum | PairedRatio] = {
            i: kind() for i in range(models) if base is not None and i != base
        }


class _Counts:
    """Integer counts per slice code, grown as codes appear."""

    def __init__(self) -> None:
        import numpy as np

        self.values: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)

    def add(self, codes: npt.NDArray[np.int64], weights: Any = None) -> None:
        import numpy as np

        if not len(codes):
            return
        # float64 sums of integers below 2**53: exact
        found = np.bincount(codes, weights=weights, minlength=len(self.values))
        if len(found) > len(self.values):
            self.values = np.concatenate(
                [self.values, np.zeros(len(found) - len(self.values), np.int64)]
            )
        self.values += found.astype(np.int64)

    def __getitem__(self, code: int) -> int:
        return int(self.values[code]) if code < len(self.values) else 0


class ColumnSums:
    """Every slice's sums for one slice column, vectorized over the slices."""

    def __init__(self, models: int, base: int | None, tokens: bool) -> None:
        self.models, self.base, self.tokens = models, base, tokens
        self.items, self.weight, self.counted = _Counts(), _Counts(), _Counts()
        self.sums = [GroupedSum() for _ in range(models)]
        self.nonfinite = [_Counts() for _ in range(models)]
        self.correct = [_Counts() for _ in range(models)]
        rivals = [m for m in range(models) if base is not None and m != base]
        self.pairs = {m: ({k: _Counts() for k in _PAIR_COUNTS},
                          {k: GroupedSum() for k in _PAIR_SUMS}) for m in rivals}  # fmt: skip

    def add(self, codes: npt.NDArray[np.int64], values: npt.NDArray[np.float64],
            weights: npt.NDArray[np.int64], correct: npt.NDArray[np.int64] | None,
            counted: npt.NDArray[np.int64] | None) -> None:  # fmt: skip
        """Items with slice ``codes`` (n,): every model's values (n, models), weights (n,),
        correct elements (n, models) and counted elements (n,) where defined."""
        import numpy as np

        self.items.add(codes)
        self.weight.add(codes, weights)
        if counted is not None:
            self.counted.add(codes, counted)
        for m in range(self.models):
            column = values[:, m]
            finite = np.isfinite(column)
            self.sums[m].add(codes[finite], column[finite])
            self.nonfinite[m].add(codes[~finite])
            if correct is not None:
                self.correct[m].add(codes, correct[:, m])
        for m, (counts, sums) in self.pairs.items():
            assert self.base is not None
            d = values[:, m] - values[:, self.base]
            self._pair(counts, sums, codes, d, weights)

    def _pair(self, counts: dict[str, _Counts], sums: dict[str, GroupedSum],
              codes: npt.NDArray[np.int64], d: npt.NDArray[np.float64],
              weights: npt.NDArray[np.int64]) -> None:  # fmt: skip
        import numpy as np

        if self.tokens:  # documents that score no token are left out
            scored = weights > 0
            codes, d, weights = codes[scored], d[scored], weights[scored]
        finite = np.isfinite(d)
        counts["nonfinite"].add(codes[~finite])
        codes, d, weights = codes[finite], d[finite], weights[finite]
        counts["n"].add(codes)
        counts["wins"].add(codes[d < 0])
        sums["sum_d"].add(codes, d)
        if self.tokens:
            t = weights.astype(np.float64)
            counts["sum_t"].add(codes, t)
            counts["sum_t2"].add(codes, t * t)
        big = np.abs(d) >= _HUGE
        counts["huge"].add(codes[big])
        codes, d, weights = codes[~big], d[~big], weights[~big]
        for part in products(d, d):
            sums["sum_d2"].add(codes, part)
        if self.tokens:
            for part in products(d, weights.astype(np.float64)):
                sums["sum_dt"].add(codes, part)

    def codes(self) -> list[int]:
        """The codes of the slices that have items."""
        import numpy as np

        return [int(c) for c in np.flatnonzero(self.items.values)]

    def cell(self, code: int) -> Cell:
        """Slice ``code``'s sums as a `Cell`."""
        cell = Cell(self.models, self.base, self.tokens)
        cell.items, cell.weight = self.items[code], self.weight[code]
        cell.counted = self.counted[code]
        cell.sums = [ExactSum(s.partials(code)) for s in self.sums]
        cell.nonfinite = [c[code] for c in self.nonfinite]
        cell.correct = [c[code] for c in self.correct]
        for m, pair in cell.paired.items():
            counts, sums = self.pairs[m]
            for name, kind in pair.FIELDS.items():  # PairedSum's are PairedRatio's, less t
                found = counts[name][code] if kind is SUM else ExactSum(sums[name].partials(code))
                setattr(pair, name, found)
        return cell
