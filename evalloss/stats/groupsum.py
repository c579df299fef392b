"""Exact float64 sums per group, vectorized: the per-slice sums behind ``--slice``.

`exact.ExactSum` costs a few Python calls per add: fine for one sum, too slow for thousands of
slices fed in small runs. `GroupedSum` keeps every group's sum as a fixed-point integer in
30-bit limbs (an int64 matrix, groups x limbs), so adding a batch of values to their groups
is a few NumPy calls whatever the number of groups:

    x = M * 2**E          (np.frexp: M an integer, |M| < 2**53)
    E = 30 B + r          (0 <= r < 30)
    |M| 2**r = c0 + c1 2**30 + c2 2**60, each c < 2**31     (limbs B, B + 1, B + 2)

Each contribution is an integer below 2**31 and a batch holds at most `MAX_BATCH` values, so
``np.bincount``'s float64 sums of them are exact integers (below 2**53); carries are then
propagated so every limb stays in [0, 2**30) and nothing overflows however many batches are
added. The value of a group is the exact rational sum, rounded once (`fraction`, `partials`).
"""

from __future__ import annotations

from fractions import Fraction
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

BITS = 30
MAX_BATCH = 1 << 21  # values per add: 2**21 contributions below 2**31 sum below 2**52


class GroupedSum:
    """One exact sum per group (groups are codes 0, 1, ...); finite values only."""

    def __init__(self) -> None:
        import numpy as np

        self.low = 0  # the limb index of column 0 (limb k weighs 2**(30 k))
        self.limbs: npt.NDArray[np.int64] = np.zeros((0, 0), dtype=np.int64)

    def add(self, codes: npt.NDArray[np.int64], values: npt.NDArray[np.float64]) -> None:
        """Add each finite value to its group's sum."""

        for start in range(0, len(values), MAX_BATCH):
            self._add(codes[start : start + MAX_BATCH], values[start : start + MAX_BATCH])

    def _add(self, codes: npt.NDArray[np.int64], values: npt.NDArray[np.float64]) -> None:
        import numpy as np

        if not len(values):
            return
        mantissa, exponent = np.frexp(values)
        m = (mantissa * float(1 << 53)).astype(np.int64)  # exact: |m| < 2**53
        e = exponent.astype(np.int64) - 53
        sign = np.where(m < 0, -1, 1)
        m = np.abs(m)
        block = np.floor_divide(e, BITS)
        shift = e - BITS * block
        mask = (1 << BITS) - 1
        low_part = (m & mask) << shift  # < 2**60
        high_part = (m >> BITS) << shift  # < 2**53
        parts = (low_part & mask, (low_part >> BITS) + (high_part & mask), high_part >> BITS)
        self._reserve(int(codes.max()) + 1, int(block.min()), int(block.max()) + 3)
        width = self.limbs.shape[1]
        where = codes * width + (block - self.low)
        total = np.zeros(self.limbs.size, dtype=np.float64)
        for k, part in enumerate(parts):
            total += np.bincount(where + k, weights=sign * part, minlength=self.limbs.size)
        self.limbs += total.astype(np.int64).reshape(self.limbs.shape)
        self._carry()

    def _reserve(self, groups: int, first: int, end: int) -> None:
        """Room for ``groups`` rows and limbs ``first`` .. ``end`` (one spare limb on top)."""
        import numpy as np

        rows, width = self.limbs.shape
        low = min(self.low, first) if width else first
        high = max(self.low + width, end + 1) if width else end + 1
        if rows >= groups and low == self.low and high == self.low + width:
            return
        grown = np.zeros((max(rows, groups), high - low), dtype=np.int64)
        grown[:rows, self.low - low : self.low - low + width] = self.limbs
        self.low, self.limbs = low, grown

    def _carry(self) -> None:
        """Every limb but the top one into [0, 2**30): the carries move up."""
        limbs = self.limbs
        for k in range(limbs.shape[1] - 1):
            carry = limbs[:, k] >> BITS  # floor: negative limbs borrow
            limbs[:, k] -= carry << BITS
            limbs[:, k + 1] += carry

    def fraction(self, group: int) -> Fraction:
        """The exact sum of ``group`` (0 for a group never added to)."""
        if group >= self.limbs.shape[0]:
            return Fraction(0)
        whole = 0
        for k, limb in enumerate(self.limbs[group].tolist()):
            whole += limb << (BITS * k)
        scale = BITS * self.low
        return Fraction(whole) * 2**scale if scale >= 0 else Fraction(whole, 2**-scale)

    def partials(self, group: int) -> list[float]:
        """Floats whose exact sum is the group's (for `exact.ExactSum`); ``[inf]`` past
        float64's range."""
        rest = self.fraction(group)
        out: list[float] = []
        while rest:
            try:
                part = float(rest)
            except OverflowError:
                return [float("inf") if rest > 0 else float("-inf")]
            out.append(part)
            rest -= Fraction(part)
        return out

    def row(self, group: int) -> tuple[int, list[int]]:
        """Plain data for one group (`add_row` on another process's sums)."""
        if group >= self.limbs.shape[0]:
            return self.low, []
        return self.low, self.limbs[group].tolist()

    def add_row(self, group: int, row: tuple[int, list[Any]]) -> None:
        """Add a `row` of some process's sums to ``group``, exactly."""
        low, limbs = row
        if not limbs:
            return
        self._reserve(group + 1, low, low + len(limbs) - 1)
        start = low - self.low
        for k, limb in enumerate(limbs):
            self.limbs[group, start + k] += int(limb)
        self._carry()
