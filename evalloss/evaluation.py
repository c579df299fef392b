"""One pass over the data for every model: this process's share, in blocks (read ahead by a
thread where that pays), split into batches, every model fed each batch; then the exact
reduction across processes.

`run` reads the data once whatever the number of models. With several processes (`distributed`)
each reads its share and all check in after every block, so a failure anywhere stops them all
within a block; `reduce` merges the exact states in rank order. `threads` sets torch's
intra-op threads for the run.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from . import distributed
from .data import Block, Dataset
from .engine import Accumulator, BadTarget, prefetch
from .errors import EvallossError, EvallossWarning, OptionError
from .stats import PairedSum

if TYPE_CHECKING:
    import torch


def run(
    dataset: Dataset,
    dtype: torch.dtype,
    device: torch.device,
    accumulators: Sequence[Accumulator],
    paired: dict[int, PairedSum],
    base: int | None,
    batch_size: int,
    world: distributed.World,
    on_batch: Callable[[int, torch.Tensor, list[torch.Tensor]], None] | None = None,
) -> int:
    """This process's share of the data through every model, read once; its item count.

    Each block is split into batches and every model sees each batch before the next. With
    several processes all check in after each block, so a failure on one stops them all."""
    shard: dict[str, Any] = {}
    if world.size > 1:
        unsafe = any(world.gather(dataset.byte_cuts_unsafe(world.rank, world.size)))
        if unsafe and world.rank == 0:
            warnings.warn(
                f"{dataset.path}: quoted fields may hide newlines, so the file cannot be cut "
                "into byte ranges: every process parses all of it (exact, slower)",
                EvallossWarning,
                stacklevel=3,
            )
        shard = {"rank": world.rank, "world": world.size, "exact": unsafe}
    source = dataset.blocks(dtype, **shard)
    if read_ahead(device, world.local_size):
        blocks: Generator[Block, None, None] = prefetch(source, pin=device.type == "cuda")
    else:
        blocks = (b for b in source)
    items, error, working = 0, None, True
    try:
        while True:
            if working and error is None:
                try:
                    block = next(blocks, None)
                    if block is None:
                        working = False
                    else:
                        _feed(dataset, block, accumulators, paired, base, batch_size, on_batch)
                        items += len(block.features)
                except EvallossError as exc:
                    error = exc
            failed, anyone = world.step(error is not None, working and error is None)
            if failed or not anyone:
                break
    finally:
        blocks.close()
    world.agree(error)
    return items


def _feed(
    dataset: Dataset,
    block: Block,
    accumulators: Sequence[Accumulator],
    paired: dict[int, PairedSum],
    base: int | None,
    batch_size: int,
    on_batch: Callable[[int, torch.Tensor, list[torch.Tensor]], None] | None,
) -> None:
    for start in range(0, len(block.features), batch_size):
        x = block.features[start : start + batch_size]
        y = block.targets[start : start + batch_size]
        losses = []
        for acc in accumulators:
            try:
                losses.append(acc.feed(x, y, row=block.row + start))
            except BadTarget as bad:
                raise dataset.at(
                    block, start + bad.row, dataset.targets[bad.column], bad.why
                ) from None
        if base is not None:
            for i, pair in paired.items():
                pair.add(losses[i].numpy(), losses[base].numpy())
        if on_batch is not None:
            on_batch(block.row + start, y, losses)


def reduce(
    world: distributed.World,
    accumulators: Sequence[Accumulator],
    paired: dict[int, PairedSum],
    items: int,
) -> int:
    """Merge every process's states exactly, in rank order; the total item count."""
    if world.size == 1:
        return items
    states = world.gather(
        (items, [a.state() for a in accumulators], {i: p.state() for i, p in paired.items()})
    )
    for k, acc in enumerate(accumulators):
        acc.merge_states([s[1][k] for s in states])
    for i in paired:
        merged = PairedSum()
        for s in states:
            merged.merge(PairedSum.from_state(s[2][i]))
        paired[i] = merged
    return sum(s[0] for s in states)


def read_ahead(device: torch.device, local_processes: int) -> bool:
    """Whether a reader thread parses the next block while the models evaluate this one: when
    the models leave cores free to parse (a GPU, or torch on fewer threads than this process's
    cores). With torch on every core the two phases take turns instead, each on all cores:
    measured on 2 cores (docs/performance.md), a reader thread then made a CSV pass 13% slower
    (parser and models fight for the cores), while with torch on one thread it made it 13%
    faster. ``EVALLOSS_READ_AHEAD=1`` or ``0`` forces it either way (a benchmark knob)."""
    import torch

    forced = os.environ.get("EVALLOSS_READ_AHEAD")
    if forced in ("0", "1"):
        return forced == "1"
    return device.type != "cpu" or torch.get_num_threads() < cores(local_processes)


def cores(local_processes: int = 1) -> int:
    """This process's share of the CPU cores it may run on, at least 1."""
    if hasattr(os, "sched_getaffinity"):
        total = len(os.sched_getaffinity(0))
    else:
        total = os.cpu_count() or 1
    return max(1, total // local_processes)


@contextlib.contextmanager
def threads(wanted: int | None, local_processes: int) -> Iterator[None]:
    """torch's intra-op threads for the run (restored after): ``threads``, or the cores this
    process may use (the machine's, divided by the processes on this node). pyarrow parses on
    its own pool; the reader thread mostly waits on it."""
    import torch

    if wanted is not None and wanted < 1:
        raise OptionError(f"must be a positive integer, got {wanted}", key="--threads")
    share = cores(local_processes)
    previous = torch.get_num_threads()
    torch.set_num_threads(wanted or share)
    arrow_previous = None
    if local_processes > 1:
        import pyarrow as pa

        arrow_previous = pa.cpu_count()
        pa.set_cpu_count(share)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
        if arrow_previous is not None:
            import pyarrow as pa

            pa.set_cpu_count(arrow_previous)
