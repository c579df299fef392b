"""CSV and TSV through pyarrow, in one pass, in byte ranges parsed in parallel.

The file is cut into byte ranges at line starts (`chunks`); each range is parsed by pyarrow's
multi-threaded ``read_csv`` with explicit column types, one range in memory at a time, so
memory is bounded by the range, not the file. A range holding a quote character may hold a
quoted newline that makes byte cuts unsafe: from there on the file is read with pyarrow's
exact streaming reader (``newlines_in_values=True``). With ``world > 1`` each process reads
its byte share, unless some process's share holds a quote: then (agreed through ``gather``)
every process parses the whole file exactly and keeps every ``world``-th block. Bad input is
found on the fast path (pyarrow's typed parse, a vectorised finiteness check); only then does a
slow exact scan with the ``csv`` module find the line, column and value to report.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalloss.errors import DataError, EvallossWarning
from evalloss.io import hashing, remote
from evalloss.sources import chunks, slicing, tabular
from evalloss.sources.base import Block, Gather
from evalloss.sources.csvtext import TSV_SUFFIXES as TSV_SUFFIXES  # re-exported
from evalloss.sources.csvtext import (
    breaks,
    cell_problem,
    read_column,
    read_header,
    shown,
    unclosed_quote,
    unreadable,
)
from evalloss.sources.tabular import Tabular

if TYPE_CHECKING:
    import torch

    from evalloss.options import Options

BLOCK_BYTES = 1 << 20  # pyarrow's parse block (threads split a range into these)


def accepts(path: str, options: Options) -> bool:
    """The last resort: any file not claimed by another source is read as CSV/TSV text."""
    return True


def open_source(path: str, options: Options) -> CsvFile:
    """Read the header line, resolve the columns, and check they exist."""
    header = not options.no_header
    delimiter, names = read_header(path, header)
    hint = ""
    if len(names) == 1:
        sep = "tab" if delimiter == "\t" else "comma"
        hint = f": the file has one column, {shown(names[0])}; is it {sep}-separated?"
    columns = tabular.resolve(path, names, options.target, options.feature, hint, options.slice)
    sliced = slicing.open_slicing(
        path,
        options.slice,
        options.slice_bins,
        lambda name: read_column(path, names, name, delimiter, header),
    )
    return CsvFile.of(path, columns, options, header=header, delimiter=delimiter, slicing=sliced)


@dataclass(frozen=True)
class CsvFile(Tabular):
    """A CSV/TSV file with its columns resolved. ``blocks()`` reads it once, front to back."""

    header: bool = True
    delimiter: str = ","

    def blocks(
        self,
        dtype: torch.dtype,
        *,
        rank: int = 0,
        world: int = 1,
        gather: Gather | None = None,
        exact: bool = False,
    ) -> Iterator[Block]:
        """This process's share of the rows, in blocks. ``exact``: without byte cuts (every
        process parses the whole file and keeps every ``world``-th block). With ``gather``,
        the processes agree on it first: exact if any one's byte share holds a quote."""
        # an object in storage is not scanned first (each process would fetch its share
        # twice): a quote in a process's share stops the run instead (`_csv_blocks`)
        if world > 1 and gather is not None and not exact and not remote.is_uri(self.path):
            exact = any(gather(self.byte_cuts_unsafe(rank, world)))
            if exact and rank == 0:
                warnings.warn(
                    f"{self.path}: quoted fields may hide newlines, so the file cannot be cut "
                    "into byte ranges: every process parses all of it (exact, slower)",
                    EvallossWarning,
                    stacklevel=3,
                )
        return self._csv_blocks(dtype, rank, world, exact)

    def byte_cuts_unsafe(self, rank: int = 0, world: int = 1) -> bool:
        """Whether this process's CSV byte share holds a quote character (a quoted field
        may hide a newline, so byte cuts may split a record)."""
        start = chunks.header_end(self.path) if self.header else 0
        if start is None:
            return True
        bounds = chunks.shard_bounds(self.path, start, world)
        return chunks.has_quote(self.path, bounds[rank], bounds[rank + 1])

    def _csv_blocks(
        self, dtype: torch.dtype, rank: int, world: int, exact: bool
    ) -> Iterator[Block]:
        start = chunks.header_end(self.path) if self.header else 0
        if exact or start is None:
            yield from self._stream_blocks(dtype, 0, 0, rank, world)
            return
        bounds = chunks.shard_bounds(self.path, start, world)
        hashed = "sha256" in self._state or hashing.hashed_ahead(self.path)  # or on its way
        own = world == 1 and self.checksum and not hashed
        digest = hashing.Digest(self.path, start) if own else None
        try:
            yield from self._ranges(dtype, bounds, rank, world, digest)
        finally:
            if digest is not None:
                digest.close()

    def _ranges(self, dtype: torch.dtype, bounds: list[int], rank: int, world: int,
                digest: hashing.Digest | None) -> Iterator[Block]:  # fmt: skip
        row = 0
        for part in chunks.ranges(self.path, bounds[rank], bounds[rank + 1], digest):
            if chunks.QUOTE in part.data:
                if world > 1:
                    raise DataError(
                        "quoted fields: byte-range shards are unsafe; read it exactly"
                        + (" (an object: in one process, or from a local disk)"
                           if remote.is_uri(self.path) else ""),
                        path=self.path,
                    )  # fmt: skip
                yield from self._stream_blocks(dtype, part.offset, row, 0, 1)
                return  # the rest was read by pyarrow: hashed on demand
            if part.data.isspace():
                continue
            block = self._to_block(self._parse(part, dtype), row, dtype, part.offset)
            row += len(block)
            yield block
        if digest is not None:
            self._state["sha256"] = digest.hexdigest()
        if world == 1 and row == 0:
            raise DataError("no data rows", path=self.path)

    def _options(self, dtype: torch.dtype, skip: int, quoted: bool,
                 block: int = BLOCK_BYTES) -> dict[str, Any]:  # fmt: skip
        import pyarrow as pa
        from pyarrow import csv as pacsv

        nulls = {"null_values": []} if self.slicing is None else slicing.csv_nulls(
            self.slicing.columns[0].edges is not None
        )
        arrow_float = pa.float64() if str(dtype) == "torch.float64" else pa.float32()
        types = dict.fromkeys(self.features, arrow_float) | {c: pa.float64() for c in self.targets}
        if self.slicing is not None:  # a slice column that is not read as numbers: as text
            kind = pa.float64() if self.slicing.columns[0].edges is not None else pa.string()
            types = dict.fromkeys(self.slicing.names, kind) | types
        return {
            "read_options": pacsv.ReadOptions(
                column_names=list(self.columns), skip_rows=skip, block_size=block
            ),
            # byte ranges hold no quote (checked): parsed without quoting, about 8% faster
            "parse_options": pacsv.ParseOptions(
                delimiter=self.delimiter,
                newlines_in_values=quoted,
                quote_char='"' if quoted else False,
            ),
            # no null spellings: a cell that is not a number fails the parse and `_diagnose`
            # names it (pyarrow's null check took 15% of the parse); a slice column may have gaps
            "convert_options": pacsv.ConvertOptions(
                column_types=types,
                include_columns=self.read_columns,
                **nulls,
            ),
        }

    def _parse(self, part: chunks.Range, dtype: torch.dtype) -> Any:
        """One byte range -> an Arrow table (pyarrow's threads parse it in parallel)."""
        import pyarrow as pa
        from pyarrow import csv as pacsv

        try:
            return pacsv.read_csv(
                pa.BufferReader(part.data),
                **self._options(dtype, 0, quoted=False, block=chunks.parse_block(part.data)),
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
            opened = remote.open_input if remote.is_uri(self.path) else pa.OSFile
            stream = opened(self.path)
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
        with remote.open_binary(self.path) as raw:
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
        if block.locator is not None:  # a byte-range block: counted from its first line
            return self.cell(index, column, why, offset=block.locator)
        return self.cell(block.row + index, column, why)

    def cell(self, row: int, column: str, why: str | None = None, *, offset: int = 0) -> DataError:
        """An error about the cell at data row ``row`` (0-based, counted from the record at
        byte ``offset``), with its line and value."""
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
