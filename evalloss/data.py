"""Data files -> blocks of tensors: CSV/TSV and Parquet through pyarrow, in one pass.

CSV is cut into byte ranges at line starts (`chunks`); each range is parsed by pyarrow's
multi-threaded ``read_csv`` with explicit column types, one range in memory at a time, so
memory is bounded by the range, not the file. A range holding a quote character may hold a
quoted newline that makes byte cuts unsafe: from there on the file is read with pyarrow's
exact streaming reader (``newlines_in_values=True``). Parquet is read by row groups. Every
block becomes one contiguous (rows, features) tensor and one (rows, targets) float64 tensor
without per-row Python work. With ``world > 1`` each process reads only its share: Parquet
row groups, or CSV byte ranges. Bad input is found on the fast path (pyarrow's typed parse, a
vectorised finiteness check); only then does a slow exact scan with the ``csv`` module find
the line, column and value to report.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import chunks
from .csvtext import TSV_SUFFIXES as TSV_SUFFIXES  # re-exported
from .csvtext import breaks, cell_problem, read_header, shown, unclosed_quote, unreadable
from .errors import DataError

if TYPE_CHECKING:
    import torch

PARQUET_SUFFIXES = (".parquet", ".pq")
BLOCK_BYTES = 1 << 20  # pyarrow's parse block (threads split a range into these)
BLOCK_ROWS = 65_536  # Parquet rows per block


@dataclass(frozen=True)
class Block:
    """Consecutive items. ``row``: 0-based index of the first one among the rows this reader
    yields (the data set's index at world size 1, and always for Parquet). ``offset``: for a
    CSV byte-range block, the byte offset of its first line (errors are located from it)."""

    row: int
    features: torch.Tensor  # (n, F), the model's float dtype
    targets: torch.Tensor  # (n, T), float64
    offset: int | None = None


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
    checksum: bool = True  # hash the file while a single process reads it front to back
    _state: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def blocks(
        self, dtype: torch.dtype, *, rank: int = 0, world: int = 1, exact: bool = False
    ) -> Iterator[Block]:
        """This process's share of the rows, in blocks. ``exact``: CSV without byte cuts (every
        process parses the whole file and keeps every ``world``-th block)."""
        if self.kind == "parquet":
            return self._parquet_blocks(dtype, rank, world)
        return self._csv_blocks(dtype, rank, world, exact)

    def sha256(self) -> str:
        """The data file's hex sha256: kept from a front-to-back pass, else read now."""
        if "sha256" not in self._state:
            self._state["sha256"] = chunks.sha256_of(self.path)
        return self._state["sha256"]

    def byte_cuts_unsafe(self, rank: int = 0, world: int = 1) -> bool:
        """Whether this process's CSV byte share holds a quote character (a quoted field
        may hide a newline, so byte cuts may split a record). False for Parquet."""
        if self.kind == "parquet":
            return False
        start = chunks.header_end(self.path) if self.header else 0
        if start is None:
            return True
        bounds = chunks.shard_bounds(self.path, start, world)
        return chunks.has_quote(self.path, bounds[rank], bounds[rank + 1])

    # -- CSV -------------------------------------------------------------------------------

    def _csv_blocks(
        self, dtype: torch.dtype, rank: int, world: int, exact: bool
    ) -> Iterator[Block]:
        start = chunks.header_end(self.path) if self.header else 0
        if exact or start is None:
            yield from self._stream_blocks(dtype, 0, 0, rank, world)
            return
        bounds = chunks.shard_bounds(self.path, start, world)
        digest = hashlib.sha256() if world == 1 and self.checksum else None
        if digest is not None:
            with open(self.path, "rb") as f:
                digest.update(f.read(start))
        row = 0
        for part in chunks.ranges(self.path, bounds[rank], bounds[rank + 1], digest):
            if chunks.QUOTE in part.data:
                if world > 1:
                    raise DataError(
                        "quoted fields: byte-range shards are unsafe; read it exactly",
                        path=self.path,
                    )
                digest = None  # the rest is read by pyarrow: hash on demand
                yield from self._stream_blocks(dtype, part.offset, row, 0, 1)
                return
            if part.data.isspace():
                continue
            block = self._to_block(self._parse(part, dtype), row, dtype, part.offset)
            row += len(block.features)
            yield block
        if digest is not None:
            self._state["sha256"] = digest.hexdigest()
        if world == 1 and row == 0:
            raise DataError("no data rows", path=self.path)

    def _options(self, dtype: torch.dtype, skip: int, quoted: bool) -> dict[str, Any]:
        import pyarrow as pa
        from pyarrow import csv as pacsv

        arrow_float = pa.float64() if str(dtype) == "torch.float64" else pa.float32()
        types = dict.fromkeys(self.features, arrow_float) | {c: pa.float64() for c in self.targets}
        return {
            "read_options": pacsv.ReadOptions(
                column_names=list(self.columns), skip_rows=skip, block_size=BLOCK_BYTES
            ),
            # byte ranges hold no quote (checked): parsed without quoting, about 8% faster
            "parse_options": pacsv.ParseOptions(
                delimiter=self.delimiter,
                newlines_in_values=quoted,
                quote_char='"' if quoted else False,
            ),
            "convert_options": pacsv.ConvertOptions(
                column_types=types, include_columns=[*self.features, *self.targets]
            ),
        }

    def _parse(self, part: chunks.Range, dtype: torch.dtype) -> Any:
        """One byte range -> an Arrow table (pyarrow's threads parse it in parallel)."""
        import pyarrow as pa
        from pyarrow import csv as pacsv

        try:
            return pacsv.read_csv(
                pa.BufferReader(part.data), **self._options(dtype, 0, quoted=False)
            )
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise self._diagnose(str(exc), part.offset) from exc

    def _stream_blocks(
        self, dtype: torch.dtype, offset: int, row: int, rank: int, world: int
    ) -> Iterator[Block]:
        """Exact: pyarrow's streaming reader from ``offset`` (a record start), quoted newlines
        allowed; on one core. With ``world > 1`` keep every ``world``-th block."""
        import pyarrow as pa
        from pyarrow import csv as pacsv

        try:
            stream = pa.OSFile(self.path)
            stream.seek(offset)
            skip = 1 if self.header and offset == 0 else 0
            reader = pacsv.open_csv(stream, **self._options(dtype, skip, quoted=True))
            for number, batch in enumerate(reader):
                if number % world == rank:
                    yield self._to_block(batch, row, dtype)
                row += batch.num_rows
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise self._diagnose(str(exc)) from exc
        if world == 1 and row == 0:
            raise DataError("no data rows", path=self.path)

    def _diagnose(self, arrow_message: str, offset: int = 0) -> DataError:
        """Find the first bad record from ``offset`` with an exact scan: line, column, value."""
        wanted = {self.columns.index(c): c for c in (*self.features, *self.targets)}
        end = 1 if self.header and offset == 0 else 0  # the last line of the last record read
        try:
            for line, record in self._records(offset):
                end = line + breaks("".join(record))
                if len(record) != len(self.columns):
                    return unclosed_quote(self.path, line, record) or DataError(
                        f"expected {len(self.columns)} fields, found {len(record)}",
                        path=self.path,
                        line=line,
                    )
                for i, column in wanted.items():
                    problem = cell_problem(record[i])
                    if problem:
                        return unclosed_quote(self.path, line, [record[i]]) or DataError(
                            problem, path=self.path, line=line, key=column
                        )
        except UnicodeDecodeError as exc:
            return unreadable(self.path, self.delimiter) or DataError(
                f"not valid UTF-8 text ({exc.reason})", path=self.path
            )
        except csv.Error as exc:
            found = unreadable(self.path, self.delimiter)
            if found is None and "field larger" in str(exc) and (end or offset == 0):
                return DataError(  # no long line, yet a long field: a quote that never closes
                    f"a quoted field opened on this line runs on past {csv.field_size_limit()} "
                    "characters (unterminated quote?)",
                    path=self.path,
                    line=end + 1,
                )
            return found or DataError(f"malformed CSV ({exc})", path=self.path)
        return DataError(f"cannot parse ({arrow_message})", path=self.path)

    def _records(self, offset: int = 0) -> Iterator[tuple[int, list[str]]]:
        """(1-based line, fields) of every data record from byte ``offset`` (a record start),
        skipping blank lines as pyarrow does."""
        with open(self.path, "rb") as raw:
            raw.seek(offset)
            text = io.TextIOWrapper(
                raw, encoding="utf-8-sig" if offset == 0 else "utf-8", newline=""
            )
            reader = csv.reader(text, delimiter=self.delimiter)
            base = chunks.line_of(self.path, offset) - 1 if offset else 0
            first = reader.line_num + 1
            for record in reader:
                if record and not (self.header and offset == 0 and first == 1):
                    yield base + first, record
                first = reader.line_num + 1

    def at(self, block: Block, index: int, column: str, why: str | None = None) -> DataError:
        """An error about item ``index`` of ``block`` in ``column``, with its line and value."""
        if block.offset is not None:
            return self.cell(index, column, why, offset=block.offset)
        return self.cell(block.row + index, column, why)

    def cell(self, row: int, column: str, why: str | None = None, *, offset: int = 0) -> DataError:
        """An error about the cell at data row ``row`` (0-based, counted from the record at
        byte ``offset``), with its line and value."""
        if self.kind == "parquet":
            return DataError(
                f"row {row + 1}: {why or 'value is null or not finite'}", path=self.path, key=column
            )
        index = self.columns.index(column)
        try:
            for i, (line, record) in enumerate(self._records(offset)):
                if i == row:
                    text = record[index]
                    problem = f"{why}: {shown(text)}" if why else cell_problem(text)
                    return DataError(
                        problem or f"bad value {shown(text)}",
                        path=self.path,
                        line=line,
                        key=column,
                    )
        except (csv.Error, UnicodeDecodeError):  # e.g. a huge field pyarrow took as a number
            found = unreadable(self.path, self.delimiter)
            if found is not None:
                return found
        return DataError(why or "bad value", path=self.path, key=column)

    # -- Parquet ---------------------------------------------------------------------------

    def _parquet_blocks(self, dtype: torch.dtype, rank: int, world: int) -> Iterator[Block]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(self.path, pre_buffer=False)  # pre-buffering: RSS grows
            meta = parquet.metadata
            groups = meta.num_row_groups
            mine = list(range(groups * rank // world, groups * (rank + 1) // world))
            row = sum(meta.row_group(g).num_rows for g in range(mine[0] if mine else 0))
            batches = (
                parquet.iter_batches(
                    batch_size=BLOCK_ROWS, row_groups=mine, columns=[*self.features, *self.targets]
                )
                if mine
                else iter(())
            )
            for batch in batches:
                yield self._to_block(batch, row, dtype)
                row += batch.num_rows
        except (pa.ArrowException, OSError, ValueError) as exc:  # a corrupt file
            raise DataError(f"cannot read Parquet ({exc})", path=self.path) from exc
        if world == 1 and row == 0:
            raise DataError("no data rows", path=self.path)

    # -- both ------------------------------------------------------------------------------

    def _to_block(
        self, batch: Any, row: int, dtype: torch.dtype, offset: int | None = None
    ) -> Block:
        """A record batch or table -> one Block of contiguous tensors (no per-row Python)."""
        import numpy as np
        import pyarrow as pa
        import torch

        def matrix(columns: Sequence[str], arrow_type: Any) -> Any:
            table = batch.select(list(columns))
            if any(t != arrow_type for t in table.schema.types):  # CSV: parsed as wanted
                table = table.cast(pa.schema([(c, arrow_type) for c in columns]))
            if table.num_rows == 0:
                return np.empty((0, len(columns)), dtype=arrow_type.to_pandas_dtype())
            return np.asarray(table.to_tensor(null_to_nan=True, row_major=True))

        features = matrix(self.features, pa.float64() if dtype == torch.float64 else pa.float32())
        targets = matrix(self.targets, pa.float64())
        block = Block(row, torch.from_numpy(features), torch.from_numpy(targets), offset)
        for values, names in ((features, self.features), (targets, self.targets)):
            finite = np.isfinite(values)
            if not finite.all():
                r, c = np.argwhere(~finite)[0]
                raise self.at(block, int(r), names[int(c)])
        return block


def open_data(
    path: str | os.PathLike[str],
    *,
    target: Sequence[str] = (),
    feature: Sequence[str] = (),
    no_header: bool = False,
    checksum: bool = True,
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
        delimiter, columns = read_header(path, header)
    seen: set[str] = set()
    for name in columns:
        if name in seen:
            what = "duplicate column name" if name else "two columns have an empty name"
            raise DataError(what, path=path, line=1, key=name or None)
        seen.add(name)
    targets = tuple(target) or columns[-1:]
    features = tuple(feature) or tuple(c for c in columns if c not in targets)
    known = set(columns)  # a set: a file may have 100k+ columns
    for name in (*targets, *features):
        if name not in known:
            raise DataError(
                f"no such column; columns are: {', '.join(columns)}", path=path, key=name
            )
    if not features:
        hint = ""
        if kind == "csv" and len(columns) == 1:
            sep = "tab" if delimiter == "\t" else "comma"
            hint = f": the file has one column, {shown(columns[0])}; is it {sep}-separated?"
        raise DataError("no feature columns left after the targets" + hint, path=path)
    overlap = set(targets) & set(features)
    if overlap:
        raise DataError("column is both a target and a feature", path=path, key=min(overlap))
    return Dataset(path, kind, columns, features, targets, header, delimiter, checksum)


def _parquet_columns(path: str) -> tuple[str, ...]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return tuple(pq.read_schema(path).names)
    except (pa.ArrowException, OSError, ValueError) as exc:  # ValueError: UnicodeDecodeError
        raise DataError(f"not a readable Parquet file ({exc})", path=path) from exc
