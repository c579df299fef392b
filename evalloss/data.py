"""Data files -> blocks of tensors: CSV/TSV (pyarrow's streaming reader) and Parquet.

The file is read once, in blocks; memory is bounded by the block, not the file. Every block
becomes one contiguous (rows, features) tensor and one (rows, targets) float64 tensor without
per-row Python work. Bad input is found on the fast path (pyarrow's typed parse, a vectorised
finiteness check); only then does a slow exact scan with the ``csv`` module find the line,
column and value to report.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DataError

if TYPE_CHECKING:
    import torch

PARQUET_SUFFIXES = (".parquet", ".pq")
TSV_SUFFIXES = (".tsv", ".tab")
BLOCK_BYTES = 1 << 20  # CSV bytes parsed per block
BLOCK_ROWS = 65_536  # Parquet rows per block


@dataclass(frozen=True)
class Block:
    """Consecutive items: ``row`` is the 0-based data-row index of the first one."""

    row: int
    features: torch.Tensor  # (n, F), the model's float dtype
    targets: torch.Tensor  # (n, T), float64


@dataclass(frozen=True)
class Dataset:
    """A data file with its columns resolved. ``blocks()`` reads it once, front to back."""

    path: str
    kind: str  # "csv" or "parquet"
    columns: tuple[str, ...]
    features: tuple[str, ...]
    targets: tuple[str, ...]
    header: bool = True
    delimiter: str = ","

    def blocks(self, dtype: torch.dtype) -> Iterator[Block]:
        if self.kind == "parquet":
            return self._parquet_blocks(dtype)
        return self._csv_blocks(dtype)

    # -- CSV -------------------------------------------------------------------------------

    def _csv_blocks(self, dtype: torch.dtype) -> Iterator[Block]:
        import pyarrow as pa
        from pyarrow import csv as pacsv

        arrow_float = pa.float64() if str(dtype) == "torch.float64" else pa.float32()
        types = dict.fromkeys(self.features, arrow_float) | {c: pa.float64() for c in self.targets}
        try:
            reader = pacsv.open_csv(
                self.path,
                read_options=pacsv.ReadOptions(
                    column_names=list(self.columns),
                    skip_rows=1 if self.header else 0,
                    block_size=BLOCK_BYTES,
                ),
                parse_options=pacsv.ParseOptions(delimiter=self.delimiter, newlines_in_values=True),
                convert_options=pacsv.ConvertOptions(
                    column_types=types,
                    include_columns=[*self.features, *self.targets],
                ),
            )
            row = 0
            for batch in reader:
                yield self._to_block(batch, row, dtype)
                row += batch.num_rows
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise self._diagnose(str(exc)) from exc
        if row == 0:
            raise DataError("no data rows", path=self.path)

    def _diagnose(self, arrow_message: str) -> DataError:
        """Find the first bad record with an exact scan: its line, column and value."""
        wanted = {self.columns.index(c): c for c in (*self.features, *self.targets)}
        try:
            for line, record in self._records():
                if len(record) != len(self.columns):
                    return DataError(
                        f"expected {len(self.columns)} fields, found {len(record)}",
                        path=self.path,
                        line=line,
                    )
                for i, column in wanted.items():
                    problem = _cell_problem(record[i])
                    if problem:
                        return DataError(problem, path=self.path, line=line, key=column)
        except UnicodeDecodeError as exc:
            return DataError(f"not valid UTF-8 text ({exc.reason})", path=self.path)
        except csv.Error as exc:
            return DataError(f"malformed CSV ({exc})", path=self.path)
        return DataError(f"cannot parse ({arrow_message})", path=self.path)

    def _records(self) -> Iterator[tuple[int, list[str]]]:
        """(1-based line, fields) of every data record, skipping blank lines as pyarrow does."""
        with open(self.path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=self.delimiter)
            first = reader.line_num + 1
            for record in reader:
                if record and not (self.header and first == 1):
                    yield first, record
                first = reader.line_num + 1

    def locate(self, row: int) -> int | None:
        """The 1-based line of data row ``row`` (slow; for error messages only)."""
        if self.kind == "parquet":
            return None
        for i, (line, _) in enumerate(self._records()):
            if i == row:
                return line
        return None

    def cell(self, row: int, column: str, why: str | None = None) -> DataError:
        """An error about the cell at data row ``row`` (0-based), with its line and value."""
        if self.kind == "parquet":
            return DataError(
                f"row {row + 1}: {why or 'value is null or not finite'}", path=self.path, key=column
            )
        index = self.columns.index(column)
        for i, (line, record) in enumerate(self._records()):
            if i == row:
                text = record[index]
                problem = f"{why}: {text!r}" if why else _cell_problem(text)
                return DataError(
                    problem or f"bad value {text!r}", path=self.path, line=line, key=column
                )
        return DataError(why or "bad value", path=self.path, key=column)

    # -- Parquet ---------------------------------------------------------------------------

    def _parquet_blocks(self, dtype: torch.dtype) -> Iterator[Block]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            row = 0
            for batch in pq.ParquetFile(self.path).iter_batches(
                batch_size=BLOCK_ROWS, columns=[*self.features, *self.targets]
            ):
                yield self._to_block(batch, row, dtype)
                row += batch.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"cannot read Parquet ({exc})", path=self.path) from exc
        if row == 0:
            raise DataError("no data rows", path=self.path)

    # -- both ------------------------------------------------------------------------------

    def _to_block(self, batch: Any, row: int, dtype: torch.dtype) -> Block:
        import numpy as np
        import pyarrow as pa
        import torch

        def matrix(columns: Sequence[str], arrow_type: Any) -> Any:
            table = batch.select(list(columns))
            table = table.cast(pa.schema([(c, arrow_type) for c in columns]))
            return np.asarray(table.to_tensor(null_to_nan=True, row_major=True))

        features = matrix(self.features, pa.float64() if dtype == torch.float64 else pa.float32())
        targets = matrix(self.targets, pa.float64())
        for values, names in ((features, self.features), (targets, self.targets)):
            finite = np.isfinite(values)
            if not finite.all():
                r, c = np.argwhere(~finite)[0]
                raise self.cell(row + int(r), names[int(c)])
        return Block(row, torch.from_numpy(features), torch.from_numpy(targets))


def _cell_problem(text: str) -> str | None:
    """Why ``text`` is not a finite number, or None if it is one."""
    value = text.strip()
    if not value:
        return "empty value"
    try:
        number = float(value)
    except ValueError:
        return f"not a number: {text!r}"
    if number != number or number in (float("inf"), float("-inf")):
        return f"not a finite number: {text!r}"
    return None


def open_data(
    path: str | os.PathLike[str],
    *,
    target: Sequence[str] = (),
    feature: Sequence[str] = (),
    no_header: bool = False,
) -> Dataset:
    """Open ``path``, resolve the target and feature columns, and check they exist."""
    path = os.fspath(path)
    if not Path(path).is_file():
        raise DataError("no such file" if not Path(path).exists() else "not a file", path=path)
    if path.lower().endswith(PARQUET_SUFFIXES):
        kind, delimiter, header = "parquet", ",", True
        columns = _parquet_columns(path)
    else:
        kind, header = "csv", not no_header
        delimiter, columns = _csv_columns(path, header)
    if len(set(columns)) != len(columns):
        dup = next(c for c in columns if columns.count(c) > 1)
        raise DataError("duplicate column name", path=path, line=1, key=dup)
    targets = tuple(target) or columns[-1:]
    features = tuple(feature) or tuple(c for c in columns if c not in targets)
    for name in (*targets, *features):
        if name not in columns:
            raise DataError(
                f"no such column; columns are: {', '.join(columns)}", path=path, key=name
            )
    if not features:
        raise DataError("no feature columns left after the targets", path=path)
    overlap = set(targets) & set(features)
    if overlap:
        raise DataError("column is both a target and a feature", path=path, key=min(overlap))
    return Dataset(path, kind, columns, features, targets, header, delimiter)


def _csv_columns(path: str, header: bool) -> tuple[str, tuple[str, ...]]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            first = f.readline()
            f.seek(0)
            delimiter = (
                "\t"
                if path.lower().endswith(TSV_SUFFIXES) or ("\t" in first and "," not in first)
                else ","
            )
            names = next(csv.reader(f, delimiter=delimiter), None)
    except UnicodeDecodeError as exc:
        raise DataError(f"not valid UTF-8 text ({exc.reason})", path=path, line=1) from exc
    except (OSError, csv.Error) as exc:
        raise DataError(f"cannot read ({exc})", path=path) from exc
    if not names:
        raise DataError("empty file: no header and no data rows", path=path)
    columns = tuple(n.strip() for n in names) if header else tuple(map(str, range(len(names))))
    return delimiter, columns


def _parquet_columns(path: str) -> tuple[str, ...]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return tuple(pq.read_schema(path).names)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"not a readable Parquet file ({exc})", path=path) from exc
