"""Exact, order-free summation: the float64 sums behind every figure.

`ExactSum` keeps Shewchuk's non-overlapping partials (the state inside ``math.fsum``), so its
value is the correctly rounded sum of everything added, whatever the chunking, order or
number of processes that fed it. A block of values costs two or three ``math.fsum`` calls in
C (its rounded sum, then the rounded remainders until none is left); only those few floats
enter the Python-level partials.

`BatchGrouping` replays a training log's recipes (sum of batch averages, times the batch
size, over the number of batches) on the same item losses grouped into batches of one size:
the rows of ``evalloss explain``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

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


class BatchGrouping:
    """What a training log prints when the item losses are grouped into batches of ``size``.

    Feed every item's loss once, in data order (any chunking); the items are grouped into
    consecutive batches of ``size``, the last one possibly smaller, as a ``DataLoader`` without
    ``drop_last`` does. The state is bounded: the exact sum of the finished batches' means, the
    running sum and count of the unfinished batch, and a batch count. Values must be finite.
    """

    __slots__ = ("_means", "_partial", "_partial_items", "full_batches", "size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"batch size must be positive, got {size}")
        self.size = size
        self.full_batches = 0
        self._means = ExactSum()  # sum of the finished batches' means
        self._partial = ExactSum()  # sum of the unfinished batch's items
        self._partial_items = 0

    def add(self, values: npt.NDArray[np.float64] | Sequence[float]) -> None:
        """Add the next item losses, in data order."""
        items = values.tolist() if hasattr(values, "tolist") else list(values)
        size, start = self.size, 0
        if self._partial_items:  # fill the unfinished batch first
            start = min(size - self._partial_items, len(items))
            self._partial.add(items[:start])
            self._partial_items += start
            if self._partial_items < size:
                return
            self._means.add([self._partial.value / size])
            self.full_batches += 1
            self._partial, self._partial_items = ExactSum(), 0
        whole = start + (len(items) - start) // size * size
        if size == 1:
            self._means.add(items[start:whole])
        else:
            fsum = math.fsum
            self._means.add([fsum(items[i : i + size]) / size for i in range(start, whole, size)])
        self.full_batches += (whole - start) // size
        if whole < len(items):
            self._partial.add(items[whole:])
            self._partial_items = len(items) - whole

    @property
    def batches(self) -> int:
        return self.full_batches + (1 if self._partial_items else 0)

    @property
    def last_batch(self) -> int:
        """Items in the last batch: ``size`` when it is full, 0 when nothing was added."""
        if self._partial_items:
            return self._partial_items
        return self.size if self.full_batches else 0

    @property
    def sum_of_averages(self) -> float:
        """The sum of the batch means: what ``epoch_loss += loss.item()`` prints."""
        if self._means.overflowed:
            return math.inf
        last = [self._partial.value / self._partial_items] if self._partial_items else []
        try:
            return math.fsum([*self._means.partials, *last])
        except OverflowError:
            return math.inf

    @property
    def normalized_sum(self) -> float:
        """The sum of averages times the batch size: an estimate of the loss sum."""
        return self.sum_of_averages * self.size

    @property
    def average_of_averages(self) -> float | None:
        """The sum of averages over the number of batches: an estimate of the loss per item."""
        return self.sum_of_averages / self.batches if self.batches else None


def relative_error(estimate: float | None, truth: float | None) -> float | None:
    """(estimate - truth) / |truth|; 0 when they are equal; None when undefined."""
    if estimate is None or truth is None:
        return None
    if estimate == truth:
        return 0.0
    if truth == 0 or not math.isfinite(truth) or not math.isfinite(estimate):
        return None
    return (estimate - truth) / abs(truth)
