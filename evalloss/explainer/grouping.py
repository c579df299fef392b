"""What a training log prints when the item losses are grouped into batches of one size: its
recipes (sum of batch averages, times the batch size, over the number of batches) replayed on
the same item losses, the rows of ``evalloss explain``."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

from evalloss.stats.exact import ExactSum

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


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
