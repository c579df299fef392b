"""One pass over the data for every model: this process's share, in blocks (read ahead by a
thread where that pays), split into batches, every model fed each batch; then the exact
reduction across processes.

`one_pass` reads the data once whatever the number of models. With several processes
(`distributed`) each reads its share and all check in after every block, so a failure anywhere
stops them all within a block. What watches the pass (paired statistics, the per-item export,
the plot's sample, the progress bar) is an `Observer`, fed every batch; `reduce` merges every
`stats.state.Reducible` (the models' sums, the paired sums, the slices') exactly, in rank order.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING

from evalloss.errors import DataError, EvallossError
from evalloss.run import distributed
from evalloss.run.batch import Batch, ItemKeys, Observer
from evalloss.run.engine import Accumulator, BadTarget
from evalloss.run.readahead import prefetch, read_ahead
from evalloss.sources import Block, DataSource
from evalloss.sources.base import changed
from evalloss.stats.state import Reducible

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch


def one_pass(
    source: DataSource,
    dtype: torch.dtype,
    device: torch.device,
    accumulators: Sequence[Accumulator],
    observers: Sequence[Observer],
    batch_size: int,
    world: distributed.World,
) -> None:
    """This process's share of the data through every model, read once.

    Each block is split into batches and every model sees each batch before the next. With
    several processes all check in after each block, so a failure on one stops them all."""
    source = source.for_pass(batch_size, device)
    source_blocks = source.blocks(dtype, rank=world.rank, world=world.size, gather=world.gather)
    if read_ahead(device, world.local_size):
        pin = Block.pinned if device.type == "cuda" else None
        blocks: Generator[Block, None, None] = prefetch(source_blocks, prepare=pin)
    else:
        blocks = (b for b in source_blocks)
    join = _Join(observers)
    error, working = None, True
    try:
        while True:
            if working and error is None:
                try:
                    block = next(blocks, None)
                    if block is None:
                        working = False
                    else:
                        _feed(source, block, accumulators, join, batch_size)
                except EvallossError as exc:
                    error = exc
            failed, anyone = world.step(error is not None, working and error is None)
            if failed or not anyone:
                break
    finally:
        blocks.close()
    world.agree(error)
    join.flush(accumulators)
    world.agree(_changed(source, world))


def _changed(source: DataSource, world: distributed.World) -> DataError | None:
    """A data file that changed while it was read, or that differs between the processes
    (a copy per node that is not the same file): no figure may come from it."""
    now = source.stamp()
    stamps = world.gather(now)
    if now != source.opened:
        return changed(source.path)
    if len(set(map(tuple, stamps))) > 1:
        shown = ", ".join(f"rank {r}: {size} bytes" for r, (size, _) in enumerate(stamps))
        return DataError(
            f"the processes of the run see different files here ({shown}, or other "
            "modification times): give every process the same data",
            path=source.path,
        )
    return None


def _feed(
    source: DataSource,
    block: Block,
    accumulators: Sequence[Accumulator],
    join: _Join,
    batch_size: int,
) -> None:
    for start in range(0, len(block), batch_size):
        end = start + batch_size
        x = block.input_rows(start, end)
        y = block.targets[start:end]
        losses = []
        for acc in accumulators:
            try:
                losses.append(acc.feed(x, y, row=block.row + start))
            except BadTarget as bad:
                raise source.bad_target(block, start + bad.row, bad.column, bad.why) from None
        weights = accumulators[0].last_weights
        assert weights is not None
        items = None if block.items is None else block.items[start:end]
        keys = _keys(block, start, end, accumulators)
        join.batch(Batch(block.row + start, y, losses, weights, keys), items)


def _keys(
    block: Block, start: int, end: int, accumulators: Sequence[Accumulator]
) -> ItemKeys | None:
    """The slice codes of items ``start`` to ``end`` of ``block``, and every model's correct
    elements per item (None where the run is not sliced)."""
    if block.groups is None:
        return None
    hits = [acc.last_correct for acc in accumulators]
    correct = counted = None
    if all(h is not None for h in hits):
        correct = tuple(h[0].numpy() for h in hits if h is not None)
        counted = hits[0][1].numpy() if hits[0] is not None else None
    groups = {k: v[start:end] for k, v in block.groups.items()}
    return ItemKeys(groups, correct, counted)


class _Join:
    """Hands each batch to the observers; where a source scores an item in several rows (the
    windows of a long document: ``Block.items``), joins them first: an item's losses and
    weights are summed over its rows, across batches and blocks, and the observers see it
    once, complete. The models' counts then count items, not rows (`flush`)."""

    def __init__(self, observers: Sequence[Observer]) -> None:
        self.observers = observers
        self.items = 0  # complete items handed over from joined rows
        self.rows = 0  # rows they came from
        self._open: tuple[int, list[float], int] | None = None  # item, its losses, weight
        self._codes: dict[str, int] = {}  # the open item's slice codes (its first row's)
        self._done_codes: list[dict[str, int]] = []

    def batch(self, batch: Batch, items: npt.NDArray[np.int64] | None) -> None:
        """``batch`` to the observers; where ``items`` (each row's item) is given, the items
        it completes, joined."""
        if items is None:
            for observer in self.observers:
                observer.batch(batch)
            return
        import numpy as np

        self.rows += len(items)
        values = np.stack([loss.numpy() for loss in batch.losses], axis=1)  # (n, models)
        keys, weights = batch.keys, batch.weights
        done_ids, done_values, done_weights = [], [], []
        for i, item in enumerate(items.tolist()):
            if self._open is not None and self._open[0] != item:
                done_ids.append(self._open[0])
                done_values.append(self._open[1])
                done_weights.append(self._open[2])
                self._done_codes.append(self._codes)
                self._open = None
            if self._open is None:
                self._open = (item, [0.0] * values.shape[1], 0)
                if keys is not None:  # a document's rows share its slice values
                    self._codes = {k: int(v[i]) for k, v in keys.groups.items()}
            sums = [a + float(b) for a, b in zip(self._open[1], values[i], strict=True)]
            self._open = (item, sums, self._open[2] + int(weights[i]))
        self._hand_over(done_ids, done_values, done_weights)

    def flush(self, accumulators: Sequence[Accumulator]) -> None:
        """The last open item, and every model's item count made a count of items."""
        if self._open is not None:
            self._done_codes.append(self._codes)
            self._hand_over([self._open[0]], [self._open[1]], [self._open[2]])
            self._open = None
        for acc in accumulators:
            acc.items -= self.rows - self.items

    def _hand_over(self, ids: list[int], values: list[list[float]], weights: list[int]) -> None:
        import torch

        if not ids:
            return
        self.items += len(ids)
        table = torch.tensor(values, dtype=torch.float64)  # (k, models)
        losses = [table[:, m] for m in range(table.shape[1])]
        counts = torch.tensor(weights, dtype=torch.int64)
        keys = None
        if self._done_codes and self._done_codes[0]:
            import numpy as np

            columns = self._done_codes[0]
            keys = ItemKeys({k: np.array([c[k] for c in self._done_codes], dtype=np.int64)
                             for k in columns})  # fmt: skip
        self._done_codes = []
        joined = Batch(ids[0], None, losses, counts, keys)
        for observer in self.observers:
            observer.batch(joined)


def reduce(world: distributed.World, states: Sequence[Reducible]) -> None:
    """Merge every process's ``states`` exactly, in rank order (a no-op in one process)."""
    if world.size == 1:
        return
    gathered = world.gather([s.state() for s in states])
    for k, state in enumerate(states):
        state.merge_states([g[k] for g in gathered])
