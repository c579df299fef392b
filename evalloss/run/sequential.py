"""Models evaluated one group after another, for three reasons: their tokenizers differ (each
group sees its own tokens of the same documents), their declared contexts differ (each model
is scored with its own, as alone), or they do not fit in memory together.

Each group gets its own pass over the data in file order, its models built just before and
dropped just after, and a `Recorder` keeps every item's value for each of its models (float64,
16 bytes an item and model). Then the observers (paired statistics, per-item export, plot) see
the items as one pass over every model would have shown them: the report is the same. Blocks
of one tokenizer are kept in memory between passes up to `KEEP_BYTES` (the data tokenized
once); past that the data is read again. Where tokenizers differ, items are weighted by their
UTF-8 bytes: the figure that compares is bits per byte.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from evalloss.errors import DataError, EvallossWarning
from evalloss.models import peftfolder
from evalloss.run import onepass
from evalloss.run.batch import Batch, ItemKeys
from evalloss.run.engine import Accumulator
from evalloss.sources import Block, open_data

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch

    from evalloss.run import distributed
    from evalloss.run.batch import Observer
    from evalloss.run.plan import Plan
    from evalloss.run.prepared import Prepared
    from evalloss.sources import DataSource
    from evalloss.sources.base import Gather

KEEP_BYTES = 1 << 30  # tokenized blocks kept between passes
MAX_TARGETS = 64  # more target elements per item are not recorded (masks: weights shown)
MEMORY_SHARE = 0.5  # models together may take this share of the memory available
STEP = 65536  # items replayed to the observers at once


def groups(plan: Plan, one_at_a_time: bool) -> list[list[int]]:
    """The models' groups, in order: one per tokenizer (text data) and context, split where
    adapters of another peft type share a base (`peftfolder.rounds`), and one per model when
    asked or when their weights would not fit together."""
    rounds = peftfolder.rounds(plan.checkpoints)
    found = [[i for i in g if rounds[i] == r] for g in _by_reading(plan).values()
             for r in sorted({rounds[i] for i in g})]  # fmt: skip
    if len(plan.checkpoints) > 1 and not one_at_a_time:
        need, have = weight_bytes(plan), available_bytes(plan.device)
        if have is not None and need > MEMORY_SHARE * have:
            warnings.warn(f"evaluating the models one at a time: their weights take "
                          f"{need / 2**30:.1f} GiB, {have / 2**30:.1f} GiB is available on "
                          f"{plan.device.type}", EvallossWarning, stacklevel=4)  # fmt: skip
            one_at_a_time = True
    if one_at_a_time:
        return [[i] for g in found for i in g]
    return found


Reading = tuple[str | None, tuple[int | None, int | None]]  # a tokenizer, a (context, stride)


def _by_reading(plan: Plan) -> dict[Reading, list[int]]:
    """The models by how they read the data: their tokenizer (text data) and context."""
    found: dict[Reading, list[int]] = {}
    for i in range(len(plan.checkpoints)):
        found.setdefault(reading(plan, i), []).append(i)
    return found


def reading(plan: Plan, index: int) -> Reading:
    """How model ``index`` reads the data (`_by_reading`'s key)."""
    text = plan.source.bytes_read() is not None
    tokenizer = plan.tokenizers[index] if plan.tokenizers and text else None
    return tokenizer, plan.sequence(index)


def weight_bytes(plan: Plan) -> int:
    """What every model's weights take in the run's dtype (from the headers' shapes): the
    adapters' bases once each (the run keeps one copy), unless the base is in the run."""
    total = 0
    listed = {os.path.realpath(c.path) for c in plan.checkpoints if c.adapter is None}
    shared = [b for p, b in peftfolder.bases(plan.checkpoints).items() if p not in listed]
    for checkpoint in (*plan.checkpoints, *shared):
        for shape in checkpoint.shapes.values():
            count = 1
            for d in shape:
                count *= d
            total += count
    return total * plan.dtype.itemsize


def available_bytes(device: torch.device) -> int | None:
    """Free memory on the device (CUDA), or the memory Linux says is available (CPU)."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    meminfo = Path("/proc/meminfo")
    if device.type != "cpu" or not meminfo.is_file():
        return None
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


class Recorder:
    """Every item's value for each model of a group, and its weight, in the order seen; where
    the run is sliced, the items' keys too; with ``targets``, each item's targets (float64,
    (n, T): tabular data, for the result cache)."""

    def __init__(self, *, targets: bool = False) -> None:
        self.rows: list[int] = []
        self.values: list[npt.NDArray[np.float64]] = []
        self.weights: list[npt.NDArray[np.int64]] = []
        self.keys: list[ItemKeys] = []
        self.targets: list[npt.NDArray[np.float64]] | None = [] if targets else None

    def batch(self, batch: Batch) -> None:
        import numpy as np

        self.rows.append(batch.row)
        self.values.append(np.stack([loss.numpy() for loss in batch.losses], axis=1))
        self.weights.append(batch.weights.numpy().astype(np.int64))
        if batch.keys is not None:
            self.keys.append(batch.keys)
        if self.targets is None:
            return
        targets = batch.targets
        if targets is None or targets.dim() > 2 or targets[0].numel() > MAX_TARGETS:
            self.targets = None  # not columns of a table (masks, images): the export shows weights
        else:
            self.targets.append(targets.reshape(len(targets), -1).numpy().astype(np.float64))


@dataclass(frozen=True)
class Passes:
    """What the passes leave: every model's accumulator; for text, this process's bytes (and
    words); and whether the items were weighted by their bytes (the tokenizers differ)."""

    accumulators: list[Accumulator]
    text_bytes: int | None
    by_bytes: bool
    text_words: int | None = None


def evaluate(prepared: Prepared, observers: Sequence[Observer], world: distributed.World
             ) -> Passes:  # fmt: skip
    """Every group's pass, then the observers fed as by one pass."""
    import numpy as np

    accumulators, recorders, sources = record(prepared, world)
    done = [a for a in accumulators if a is not None]
    assert len(done) == len(accumulators)
    first = next(iter(sources.values()))
    text_bytes = first.bytes_read()
    weights = recorders[0][1].weights
    by_bytes = len({tokenizer for tokenizer, _ in sources}) > 1
    if by_bytes:  # tokenizers differ: items weigh their bytes (text data)
        weights = [np.asarray(first.document_bytes(), dtype=np.int64)]
    replay(recorders, weights, observers, len(done), prepared.plan.options.data)
    return Passes(done, text_bytes, by_bytes=by_bytes, text_words=first.words_read())


Recorded = list[tuple[list[int], Recorder]]  # each group's models and their recorded items


def record(
    prepared: Prepared, world: distributed.World, *, targets: bool = False
) -> tuple[list[Accumulator | None], Recorded, dict[Reading, DataSource]]:
    """Every group's pass, each group's items recorded (with ``targets``: theirs too): the
    models' accumulators (None for a model in no group), each group's `Recorder`, the
    source each tokenizer and context read."""
    plan = prepared.plan
    accumulators: list[Accumulator | None] = [None] * len(plan.checkpoints)
    recorders, kept = [], _Kept()
    sources: dict[Reading, DataSource] = {}
    for group in prepared.groups:
        how = reading(plan, group[0])
        if how not in sources:
            tokenizer = plan.tokenizers[group[0]] if plan.tokenizers else None
            (context, stride) = how[1]
            options = replace(plan.options, tokenizer=tokenizer, ordered=True, context=context,
                              stride=stride)  # fmt: skip
            sources[how] = open_data(plan.options.data, options)
            shared = plan.source.slicing
            if shared is not None:  # one dictionary of slice values for every pass
                sources[how] = replace(sources[how], slicing=shared)  # type: ignore[type-var]
            kept = _Kept()
        source = kept.around(sources[how])
        built = [Accumulator(plan.build(plan.checkpoints[i]), plan.loss, plan.device,
                             plan.checkpoints[i].path) for i in group]  # fmt: skip
        recorder = Recorder(targets=targets)
        onepass.one_pass(source, plan.dtype, plan.device, built, [recorder], plan.batch_size,
                         world)  # fmt: skip
        for i, acc in zip(group, built, strict=True):
            acc.module = None  # type: ignore[assignment]  # its weights go; its sums stay
            accumulators[i] = acc
        recorders.append((group, recorder))
    return accumulators, recorders, sources


def replay(recorders: Recorded, weights: list[Any], observers: Sequence[Observer],
           models: int, path: str,
           targets: npt.NDArray[np.float64] | None = None) -> None:  # fmt: skip
    """The recorded items, every model's values side by side (and their ``targets``, where
    kept), to the observers: in runs of consecutive item numbers (an observer's ``row``
    starts a run), at most `STEP` at once."""
    import numpy as np
    import torch

    first = recorders[0][1]
    sizes = [len(v) for v in first.values]
    ids = np.concatenate([np.arange(r, r + n) for r, n in zip(first.rows, sizes, strict=True)]
                         or [np.empty(0, np.int64)])  # fmt: skip
    table = np.empty((len(ids), models))
    for group, recorder in recorders:
        values = np.concatenate(recorder.values) if recorder.values else np.empty((0, len(group)))
        if len(values) != len(table):
            raise DataError("gave a different number of items on another pass: it changed "
                            "while it was read", path=path)  # fmt: skip
        table[:, group] = values
    counts = torch.from_numpy(np.concatenate(weights) if weights else np.empty(0, np.int64))
    losses = [torch.from_numpy(np.ascontiguousarray(table[:, m])) for m in range(models)]
    keys = _keys(recorders, models)
    shown = None if targets is None else torch.from_numpy(targets)
    breaks = np.flatnonzero(np.diff(ids) != 1) + 1
    for run_start, run_end in zip([0, *breaks], [*breaks, len(ids)], strict=True):
        for start in range(run_start, run_end, STEP):
            end = min(start + STEP, run_end)
            part = Batch(int(ids[start]), None if shown is None else shown[start:end],
                         [loss[start:end] for loss in losses], counts[start:end],
                         None if keys is None else keys.rows(start, end))  # fmt: skip
            for observer in observers:
                observer.batch(part)


def _keys(recorders: Recorded, models: int) -> ItemKeys | None:
    """The recorded items' keys, every model's correct elements side by side."""
    import numpy as np

    first = recorders[0][1].keys
    if not first:
        return None
    groups = {k: np.concatenate([r.groups[k] for r in first]) for k in first[0].groups}
    if any(r.correct is None for _, rec in recorders for r in rec.keys):
        return ItemKeys(groups)
    correct: list[Any] = [None] * models
    for group, recorder in recorders:
        for j, m in enumerate(group):
            correct[m] = np.concatenate([r.correct[j] for r in recorder.keys if r.correct])
    counted = np.concatenate([r.counted for r in first if r.counted is not None])
    return ItemKeys(groups, tuple(correct), counted)


class _Kept:
    """One source's blocks, kept from its first pass for the next (up to `KEEP_BYTES`)."""

    def __init__(self) -> None:
        self.blocks: list[Block] | None = None

    def around(self, source: DataSource) -> DataSource:
        return cast("DataSource", _KeptSource(source, self))


class _KeptSource:
    """A source whose blocks come from memory after its first pass (`_Kept`)."""

    def __init__(self, inner: DataSource, kept: _Kept) -> None:
        self.inner, self.kept = inner, kept

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def for_pass(self, batch_size: int, device: torch.device) -> DataSource:
        """The inner source set up for the pass, still kept (the passes share a batch size)."""
        return cast("DataSource", _KeptSource(self.inner.for_pass(batch_size, device), self.kept))

    def blocks(self, dtype: torch.dtype, *, rank: int = 0, world: int = 1,
               gather: Gather | None = None) -> Iterator[Block]:  # fmt: skip
        if self.kept.blocks is not None:
            yield from self.kept.blocks
            return
        keep: list[Block] | None = []
        size = 0
        for block in self.inner.blocks(dtype, rank=rank, world=world, gather=gather):
            size += _size(block)
            if keep is not None and size <= KEEP_BYTES:
                keep.append(block)
            else:
                keep = None
            yield block
        self.kept.blocks = keep


def _size(block: Block) -> int:
    inputs = block.inputs.values() if isinstance(block.inputs, dict) else [block.inputs]
    return sum(t.numel() * t.element_size() for t in [*inputs, block.targets])

