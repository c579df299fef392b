"""``--per-item``: every item's loss under every model, streamed to Parquet or CSV.

`Export` streams every item's loss for every model to Parquet or CSV as the data is read:
rows are buffered up to `FLUSH_ROWS`, then written as one Parquet row group or CSV chunk, so
memory is bounded by the buffer, not the data. The file appears only when the pass completes
(temp file in the same folder, then ``os.replace``), like ``-o``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalloss.errors import OptionError
from evalloss.io.files import Atomic, check_output
from evalloss.run.distributed import single_process_only

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch

    from evalloss.sources.slicing import Slicing


SUFFIXES = {".parquet": "parquet", ".pq": "parquet", ".csv": "csv", ".tsv": "tsv"}
FLUSH_ROWS = 65_536  # rows buffered before a write: one Parquet row group


def columns(names: Sequence[str], targets: Sequence[str], slices: Sequence[str] = ()) -> list[str]:
    """Column names, all different: ``row``, the targets (``target:NAME`` where a name is
    taken), one per model (``loss:NAME`` where taken), then the slice columns (``slice:NAME``
    where taken), so the file reads back."""
    taken = ["row"]
    for prefix, wanted in (("target:", targets), ("loss:", names), ("slice:", slices)):
        for name in wanted:
            unique, n = name if name not in taken else prefix + name, 1
            while unique in taken:
                n += 1
                unique = f"{prefix}{name}#{n}"
            taken.append(unique)
    return taken


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
        integer_targets: bool, inputs: Sequence[str] = (), slicing: Slicing | None = None,
    ) -> None:  # fmt: skip
        self.path = Path(path)
        self.kind = SUFFIXES[self.path.suffix.lower()]
        self.slicing = slicing
        self.columns = columns(names, targets, slicing.names if slicing else ())
        self._codes: list[dict[str, npt.NDArray[np.int64]]] = []
        self.targets = len(targets)
        self.integer_targets = integer_targets
        self._buffer: list[tuple[int, npt.NDArray[Any], list[npt.NDArray[np.float64]]]] = []
        self._buffered = 0
        self._writer: Any = None
        self._file = Atomic(self.path, inputs)
        self._tmp = self._file.tmp

    def add(self, row: int, targets: torch.Tensor, losses: Sequence[torch.Tensor],
            codes: dict[str, npt.NDArray[np.int64]] | None = None) -> None:  # fmt: skip
        """Items ``row`` .. ``row + n - 1``: targets (n, T) float64, one (n,) loss per model,
        and where the run is sliced each slice column's codes (n,)."""
        self._buffer.append((row, targets.numpy(), [loss.numpy() for loss in losses]))
        if self.slicing is not None:
            assert codes is not None
            self._codes.append(codes)
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
        for sliced in self.slicing.columns if self.slicing else ():
            codes = np.concatenate([c[sliced.name] for c in self._codes])
            values: npt.NDArray[Any] = np.empty(len(sliced.values), dtype=object)
            values[:] = sliced.values
            arrays.append(pa.array(values[codes].tolist()))
        table = pa.Table.from_arrays(arrays, names=self.columns)
        self._buffer, self._buffered, self._codes = [], 0, []
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
