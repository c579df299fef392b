"""Your own data set: ``--data path/to/file.py:Name`` or ``--data package.module:Name``.

``Name`` is called with no arguments and returns a torch ``Dataset`` (map-style: ``__len__``
and ``__getitem__``) or ``IterableDataset`` of ``(input, target)`` pairs; evalloss reads it
through a ``DataLoader`` in order, batched at ``--batch-size``. It is the door for image
folders, audio, anything a few lines of your code can read. Like ``--model``, the spec is
typed by you (`usercode`): no name read from a file is ever imported.

A map-style Dataset is read by ``--workers`` worker processes (default `default_workers`),
with pinned memory when the models run on CUDA; under torchrun each process reads a
contiguous range of its items. An IterableDataset is read in this process (each worker would
yield all of it unless it shards itself, and evalloss cannot tell: items would count twice);
under torchrun each process keeps every K-th batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalloss.errors import DataError, EvallossError, OptionError
from evalloss.io import usercode
from evalloss.sources.base import Block, Gather, Plain
from evalloss.sources.tensors import as_inputs, as_targets, first_nonfinite, located

if TYPE_CHECKING:
    import torch

    from evalloss.options import Options

MAX_DEFAULT_WORKERS = 4


def accepts(path: str, options: Options) -> bool:
    """A ``file.py:Name`` or ``package.module:Name`` spec that is not a file's name."""
    return usercode.is_spec(path) and not usercode.is_file(Path(path))


def open_source(path: str, options: Options) -> DatasetSource:
    """Import the factory, call it, and check what it returns (a map-style Dataset: its
    first item too, so a malformed pair is named before any model runs)."""
    from torch.utils.data import Dataset, IterableDataset

    name = path.rpartition(":")[2]
    factory = usercode.load(path, DataError, "--data")
    try:
        dataset = factory()
    except (Exception, SystemExit) as exc:  # the user's code failed, or called sys.exit()
        raise DataError(f"{name}() failed: {usercode.failure(exc)}", key=path) from exc
    if not isinstance(dataset, Dataset):
        raise DataError(
            f"{name}() returned {type(dataset).__name__}, not a torch Dataset or IterableDataset",
            key=path,
        )
    iterable = isinstance(dataset, IterableDataset)
    if iterable and options.workers:
        raise OptionError(
            "an IterableDataset is read in this process: each worker would yield all of it "
            "(items counted twice) unless it shards itself; --workers is for map-style ones",
            key="--workers",
        )
    source = DatasetSource(path, dataset, iterable, options.workers, checksum=options.checksum)
    if not iterable:
        source = replace(source, shape=source.first_shape())
    return source


def default_workers() -> int:
    """Worker processes when none are asked for: the cores less two (the main process and
    torch's threads need them), at most `MAX_DEFAULT_WORKERS`. Measured on 2 cores
    (docs/performance.md): no worker was fastest, 1 or 2 workers 3-14% slower (they take
    the cores the model runs on)."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(0, min(MAX_DEFAULT_WORKERS, (cores or 1) - 2))


@dataclass(frozen=True)
class DatasetSource(Plain):
    """The user's Dataset, made: read in `blocks` through a ``DataLoader``."""

    path: str  # the spec, as given
    dataset: Any
    iterable: bool
    workers: int | None = None
    batch: int = 256  # items per forward pass (`for_pass`)
    pin: bool = False  # pinned memory (the models run on CUDA)
    shape: tuple[int, ...] | None = None  # the first item's input shape
    checksum: bool = True  # the report's provenance hashes the checkpoints and the code
    targets: tuple[str, ...] = ("target",)
    features: tuple[str, ...] = ("input",)

    @property
    def item_shape(self) -> tuple[int, ...] | None:
        return self.shape

    @property
    def opened(self) -> tuple[int, int]:
        return (0, 0)

    def stamp(self) -> tuple[int, int]:
        return (0, 0)

    def sha256(self) -> dict[str, str]:
        """The factory's source file's sha256 (the data it reads is not hashed)."""
        from evalloss.io.hashing import sha256_of

        code = usercode.source_file(self.path)
        return {} if code is None else {code: sha256_of(code)}

    def for_pass(self, batch_size: int, device: torch.device) -> DatasetSource:
        return replace(self, batch=batch_size, pin=device.type == "cuda")

    def first_shape(self) -> tuple[int, ...] | None:
        """The first item's input shape; a malformed first item is named here."""
        try:
            if len(self.dataset) == 0:
                raise DataError("the Dataset has no items", key=self.path)
            item = self.dataset[0]
        except EvallossError:
            raise
        except (Exception, SystemExit) as exc:
            raise DataError(f"item 1: {usercode.failure(exc)}", key=self.path) from exc
        if not isinstance(item, tuple | list) or len(item) != 2:
            raise DataError(f"item 1 is {_kind(item)}, expected an (input, target) pair",
                            key=self.path)  # fmt: skip
        shape = getattr(item[0], "shape", None)
        return tuple(int(d) for d in shape) if shape is not None else None

    def blocks(
        self, dtype: torch.dtype, *, rank: int = 0, world: int = 1, gather: Gather | None = None
    ) -> Iterator[Block]:
        """One block per ``DataLoader`` batch, in the Dataset's order."""
        from torch.utils.data import DataLoader, Subset

        dataset, first, keep = self.dataset, 0, None
        if not self.iterable and world > 1:
            n = len(dataset)
            first = n * rank // world
            dataset = Subset(dataset, range(first, n * (rank + 1) // world))
        elif world > 1:
            keep = rank  # every world-th batch
        workers = 0 if self.iterable else self.workers
        workers = default_workers() if workers is None else workers
        loader = DataLoader(dataset, batch_size=self.batch, shuffle=False, num_workers=workers,
                            pin_memory=self.pin)  # fmt: skip
        row = first
        total = None if self.iterable else first + len(dataset)
        for number, batch in enumerate(self._batches(loader, first, total)):
            x, y = self._pair(batch, row)
            if keep is None or number % world == keep:
                block = Block(row, as_inputs(x, dtype), as_targets(y), locator=row)
                for values, key in ((block.inputs, "input"), (block.targets, "target")):
                    bad = first_nonfinite(values)
                    if bad is not None:
                        raise self.at(block, bad, key)
                yield block
            row += len(y)
        if row == first and world == 1:
            raise DataError("the Dataset yielded no items", key=self.path)

    def _batches(self, loader: Any, first: int, total: int | None) -> Iterator[Any]:
        """The loader's batches; the user's code failing in a worker or here: one line."""
        iterator, row = iter(loader), first
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except (Exception, SystemExit) as exc:
                last = row + self.batch if total is None else min(total, row + self.batch)
                raise DataError(f"reading items {row + 1}-{last} failed: {usercode.failure(exc)}",
                                key=self.path) from exc  # fmt: skip
            yield batch
            row += len(batch[1]) if isinstance(batch, list | tuple) and len(batch) == 2 else 0

    def _pair(self, batch: Any, row: int) -> tuple[Any, torch.Tensor]:
        """A collated batch -> (inputs, targets), checked: two tensors (or a dict of inputs)
        with the same number of items."""
        import torch

        if not isinstance(batch, list | tuple) or len(batch) != 2:
            raise DataError(f"items from {row + 1}: expected (input, target) pairs, got "
                            f"{_kind(batch)} per batch", key=self.path)  # fmt: skip
        x, y = batch
        tensors = list(x.values()) if isinstance(x, dict) else [x]
        if not tensors or not all(isinstance(t, torch.Tensor) for t in [*tensors, y]):
            what = "target" if all(isinstance(t, torch.Tensor) for t in tensors) else "input"
            raise DataError(f"items from {row + 1}: the {what} is not a tensor or a number "
                            "(a transform such as ToTensor() missing?)", key=self.path)  # fmt: skip
        if y.dim() == 0 or any(t.dim() == 0 or len(t) != len(y) for t in tensors):
            raise DataError(f"items from {row + 1}: inputs and targets differ in item count",
                            key=self.path)  # fmt: skip
        return x, y

    def at(self, block: Block, index: int, column: str, why: str | None = None) -> DataError:
        why = why or f"the {column} holds a value that is not finite"
        return DataError(f"item {block.row + index + 1}: {why}", key=self.path)

    def bad_target(self, block: Block, index: int, column: int, why: str) -> DataError:
        return DataError(located(block, index, column, why), key=self.path)


def _kind(value: Any) -> str:
    if isinstance(value, tuple | list):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"
