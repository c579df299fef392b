"""Per-item losses leaving the pass: the ``--per-item`` export and the sample behind ``--plot``.

`Export` streams every item's loss for every model to Parquet or CSV as the data is read:
rows are buffered up to `FLUSH_ROWS`, then written as one Parquet row group or CSV chunk, so
memory is bounded by the buffer, not the data. The file appears only when the pass completes
(temp file in the same folder, then ``os.replace``), like ``-o``.

`Sample` keeps a bounded, deterministic sample of items for the plot: every row gets a fixed
pseudo-random key (a hash of its row number) and the `SAMPLE_ITEMS` rows with the smallest
keys are kept, for all models at once, so paired differences stay paired. The sample does
not depend on batch size, block size or the order blocks arrive in.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .distributed import single_process_only
from .errors import OptionError
from .files import Atomic, check_output

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch

    from .report import Report

SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv"}
FLUSH_ROWS = 65_536  # rows buffered before a write: one Parquet row group
SAMPLE_ITEMS = 200_000  # items kept for the plot


def columns(names: Sequence[str], targets: Sequence[str]) -> list[str]:
    """Column names: ``row``, the targets, then one per model (``loss:NAME`` on a clash)."""
    taken = {"row", *targets}
    return ["row", *targets, *(f"loss:{n}" if n in taken else n for n in names)]


def check_path(path: str | os.PathLike[str], inputs: Sequence[str] = ()) -> None:
    """A usable ``--per-item`` path: a known suffix, writable like ``-o`` and not one of the
    ``inputs`` (`output.check_output`), one process."""
    if Path(path).suffix.lower() not in SUFFIXES:
        raise OptionError(f"must end in {', '.join(SUFFIXES)}", path=Path(path), key="--per-item")
    check_output(path, inputs, option="--per-item")
    single_process_only("--per-item")


class Export:
    """A streaming, atomic writer of per-item losses: ``row``, targets, one column per model."""

    def __init__(
        self, path: str | os.PathLike[str], names: Sequence[str], targets: Sequence[str], *,
        integer_targets: bool,
    ) -> None:  # fmt: skip
        self.path = Path(path)
        self.kind = SUFFIXES[self.path.suffix.lower()]
        self.columns = columns(names, targets)
        self.targets = len(targets)
        self.integer_targets = integer_targets
        self._buffer: list[tuple[int, npt.NDArray[Any], list[npt.NDArray[np.float64]]]] = []
        self._buffered = 0
        self._writer: Any = None
        self._file = Atomic(self.path)
        self._tmp = self._file.tmp

    def add(self, row: int, targets: torch.Tensor, losses: Sequence[torch.Tensor]) -> None:
        """Items ``row`` .. ``row + n - 1``: targets (n, T) float64, one (n,) loss per model."""
        self._buffer.append((row, targets.numpy(), [loss.numpy() for loss in losses]))
        self._buffered += len(targets)
        if self._buffered >= FLUSH_ROWS:
            self._flush()

    def _flush(self) -> None:
        import numpy as np
        import pyarrow as pa

        if not self._buffer:
            return
        rows = np.concatenate(
            [np.arange(r, r + len(t), dtype=np.int64) for r, t, _ in self._buffer]
        )
        targets = np.concatenate([t for _, t, _ in self._buffer])  # (n, T)
        arrays = [pa.array(rows)]
        for j in range(self.targets):
            column = targets[:, j]
            arrays.append(pa.array(column.astype(np.int64) if self.integer_targets else column))
        models = len(self._buffer[0][2])
        for k in range(models):
            arrays.append(pa.array(np.concatenate([losses[k] for _, _, losses in self._buffer])))
        table = pa.Table.from_arrays(arrays, names=self.columns)
        self._buffer, self._buffered = [], 0
        try:
            if self._writer is None:
                self._writer = self._open(table.schema)
            self._writer.write_table(table)
        except (OSError, pa.ArrowException) as exc:  # a full disk, a vanished folder
            raise OptionError(f"cannot write ({exc})", path=self.path, key="--per-item") from exc

    def _open(self, schema: Any) -> Any:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        if self.kind == "parquet":
            return pq.ParquetWriter(self._tmp, schema)
        options = pacsv.WriteOptions(
            delimiter="\t" if self.kind == "tsv" else ",", quoting_style="needed"
        )
        return pacsv.CSVWriter(str(self._tmp), schema, write_options=options)

    def commit(self) -> None:
        """Write what is buffered and put the file in place (on failure, drop it)."""
        import pyarrow as pa

        try:
            self._flush()
            if self._writer is None:  # no items: an empty file with the header
                self._writer = self._open(pa.schema([(c, pa.float64()) for c in self.columns]))
            self._writer.close()
            self._file.commit()
        except (OSError, pa.ArrowException) as exc:
            self.abort()
            raise OptionError(f"cannot write ({exc})", path=self.path, key="--per-item") from exc
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop the partial file: nothing is left behind."""
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._writer.close()
        self._file.abort()


class Sample:
    """A bounded, deterministic sample of items: their per-item loss under every model.

    Incoming batches wait in a list until they hold ``size`` items, then merge with the kept
    sample and are cut back to ``size``: each item is copied O(1) times on average, whatever
    the batch size, and memory stays under about three times ``size`` items.
    """

    def __init__(self, models: int, size: int = SAMPLE_ITEMS) -> None:
        import numpy as np

        self.size = size
        self.seen = 0
        self.keys = np.empty(0, dtype=np.uint64)
        self.losses = np.empty((0, models), dtype=np.float64)  # (kept, models)
        self._pending: list[tuple[npt.NDArray[np.uint64], npt.NDArray[np.float64]]] = []
        self._waiting = 0

    def add(self, row: int, losses: Sequence[torch.Tensor]) -> None:
        import numpy as np

        n = len(losses[0])
        self.seen += n
        keys = _hash(np.arange(row, row + n, dtype=np.uint64))
        self._pending.append((keys, np.stack([loss.numpy() for loss in losses], axis=1)))
        self._waiting += n
        if self._waiting >= self.size:
            self._merge()

    def _merge(self) -> None:
        import numpy as np

        if self._pending:
            self.keys = np.concatenate([self.keys, *(k for k, _ in self._pending)])
            self.losses = np.concatenate([self.losses, *(v for _, v in self._pending)])
            self._pending, self._waiting = [], 0
        if len(self.keys) > self.size:
            keep = np.argpartition(self.keys, self.size)[: self.size]
            self.keys, self.losses = self.keys[keep], self.losses[keep]

    def values(self) -> npt.NDArray[np.float64]:
        """The kept items' losses, (kept, models), at most ``size`` rows."""
        self._merge()
        return self.losses


def _hash(rows: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64 of each row number: a fixed, well-mixed key per row (wraps mod 2**64)."""
    import numpy as np

    z = rows + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class Taps:
    """What watches the pass besides the models' sums: export, plot sample, progress.

    Checked when made (before any model is built); ``with taps:`` opens the export and drops
    it if the pass fails; `finish` puts the export in place and draws the plot.
    """

    def __init__(
        self,
        *,
        names: Sequence[str],
        targets: Sequence[str],
        integer_targets: bool,
        per_item: str | os.PathLike[str] | None = None,
        plot: str | os.PathLike[str] | None = None,
        progress: Callable[[int], None] | None = None,
        inputs: Sequence[str] = (),
    ) -> None:
        self.names, self.targets, self.integer_targets = names, targets, integer_targets
        self.per_item, self.plot, self.progress = per_item, plot, progress
        if per_item is not None:
            check_path(per_item, inputs)
        if plot is not None:
            from .render import plot as plotting

            plotting.check(plot, inputs)
        self.export: Export | None = None
        self.sample = Sample(len(names)) if plot is not None else None

    def __enter__(self) -> Taps:
        if self.per_item is not None:
            self.export = Export(
                self.per_item, self.names, self.targets, integer_targets=self.integer_targets
            )
        return self

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if kind is not None and self.export is not None:
            self.export.abort()

    def batch(self, row: int, targets: torch.Tensor, losses: Sequence[torch.Tensor]) -> None:
        """One batch seen by every model: items ``row`` .., targets (n, T), losses (n,) each."""
        if self.export is not None:
            self.export.add(row, targets, losses)
        if self.sample is not None:
            self.sample.add(row, losses)
        if self.progress is not None:
            self.progress(len(targets))

    def finish(self, report: Report) -> None:
        """Draw the plot, then put the export in place (last: a failed plot drops it)."""
        if self.plot is not None and self.sample is not None:
            from .render import plot as plotting

            plotting.draw(report, self.names, self.sample.values(), self.sample.seen, self.plot)
        if self.export is not None:
            self.export.commit()
