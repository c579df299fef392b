"""Exact, order-free summation: the float64 sums behind every figure.

`ExactSum` keeps Shewchuk's non-overlapping partials (the state inside ``math.fsum``), so its
value is the correctly rounded sum of everything added, whatever the chunking, order or
number of processes that fed it. A block of values costs two or three ``math.fsum`` calls in
C (its rounded sum, then the rounded remainders until none is left); only those few floats
enter the Python-level partials.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


def _grow(partials: list[float], x: float) -> None:
    """Add ``x`` to the non-overlapping expansion ``partials`` exactly (Shewchuk, 1997)."""
    i = 0
    for y in partials:
        if abs(x) < abs(y):
            x, y = y, x
        hi = x + y
        lo = y - (hi - x)
        if lo:
            partials[i] = lo
            i += 1
        x = hi
    partials[i:] = [x]


class ExactSum:
    """A float64 sum of finite values, not rounded until read; mergeable across chunks/ranks.

    A sum past float64's range reads as ``inf``.
    """

    __slots__ = ("overflowed", "partials")

    def __init__(self, partials: Iterable[float] = ()) -> None:
        self.partials: list[float] = []
        self.overflowed = False
        for x in partials:
            self._grow(x)

    def add(self, values: npt.NDArray[np.float64] | list[float]) -> None:
        """Add finite float64 values (an array or list)."""
        items = values.tolist() if hasattr(values, "tolist") else list(values)
        # fsum is exact inside and rounds once. Peel the exact sum off as s0 + s1 + ...,
        # each the rounded remainder of the last: usually two or three fsum calls, all in C.
        try:
            part = math.fsum(items)
            while part:
                self._grow(part)
                items.append(-part)
                part = math.fsum(items)
        except OverflowError:
            self._grow(math.inf)

    def state(self) -> list[Any]:
        """Plain data, ``[partials, overflowed]`` (for reduction across processes), that
        `from_state` rebuilds exactly."""
        return [list(self.partials), self.overflowed]

    @classmethod
    def from_state(cls, state: Sequence[Any]) -> ExactSum:
        partials, overflowed = state
        total = cls()
        total.partials = [float(x) for x in partials]
        total.overflowed = bool(overflowed)
        return total

    @classmethod
    def merged(cls, states: Iterable[Sequence[Any]]) -> ExactSum:
        """The exact sum of every state's sum."""
        total = cls()
        for state in states:
            total.merge(cls.from_state(state))
        return total

    def merge(self, other: ExactSum) -> None:
        for x in other.partials:
            self._grow(x)
        self.overflowed |= other.overflowed

    def _grow(self, x: float) -> None:
        if not self.overflowed:
            _grow(self.partials, x)
            self.overflowed = not math.isfinite(self.partials[-1])

    @property
    def value(self) -> float:
        return math.inf if self.overflowed else math.fsum(self.partials)
