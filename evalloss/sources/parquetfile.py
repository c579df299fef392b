"""Parquet through pyarrow, by row groups: this process's share of the groups, in blocks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalloss.errors import DataError
from evalloss.io import remote
from evalloss.sources import slicing, tabular
from evalloss.sources.base import Block, Gather
from evalloss.sources.tabular import Tabular

if TYPE_CHECKING:
    import torch

    from evalloss.options import Options

SUFFIXES = (".parquet", ".pq")
BLOCK_ROWS = 65_536  # rows per block


def accepts(path: str, options: Options) -> bool:
    return path.lower().endswith(SUFFIXES)


def open_source(path: str, options: Options) -> ParquetFile:
    """Read the schema, resolve the columns, and check they exist."""
    columns = tabular.resolve(path, _parquet_columns(path), options.target, options.feature,
                              slices=options.slice)  # fmt: skip
    sliced = slicing.open_slicing(path, options.slice, options.slice_bins,
                                  lambda name: read_column(path, name))  # fmt: skip
    return ParquetFile.of(path, columns, options, slicing=sliced)


def read_column(path: str, name: str) -> object:
    """One column of a Parquet file, whole (its column chunks only)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with remote.arrow_input(path) as where:
            return pq.read_table(where, columns=[name]).column(name)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"cannot read Parquet ({exc})", path=path, key=name) from exc


@dataclass(frozen=True)
class ParquetFile(Tabular):
    """A Parquet file with its columns resolved. ``blocks()`` reads it once, by row groups."""

    def blocks(
        self, dtype: torch.dtype, *, rank: int = 0, world: int = 1, gather: Gather | None = None
    ) -> Iterator[Block]:
        """Row groups ``[G r / K, G (r+1) / K)`` for process r of K, in blocks."""
        import pyarrow as pa

        try:
            parquet = _open(self.path, self.opened)
            meta = parquet.metadata
            groups = meta.num_row_groups
            mine = list(range(groups * rank // world, groups * (rank + 1) // world))
            row = sum(meta.row_group(g).num_rows for g in range(mine[0] if mine else 0))
            batches = (
                parquet.iter_batches(
                    batch_size=BLOCK_ROWS, row_groups=mine, columns=self.read_columns
                )
                if mine
                else iter(())
            )
            for batch in batches:
                yield self._to_block(batch, row, dtype)
                row += batch.num_rows
        except (pa.ArrowException, OSError, ValueError) as exc:  # a corrupt file
            if remote.is_uri(self.path) and isinstance(exc, OSError):  # the store's
                raise remote.failure(self.path, exc) from exc
            raise DataError(f"cannot read Parquet ({exc})", path=self.path) from exc
        if world == 1 and row == 0:
            raise DataError("no data rows", path=self.path)

    def at(self, block: Block, index: int, column: str, why: str | None = None) -> DataError:
        return DataError(
            f"row {block.row + index + 1}: {why or 'value is null or not finite'}",
            path=self.path,
            key=column,
        )


def _open(path: str, opened: tuple[int, int]) -> Any:
    """The file opened for reading by row groups (an object: its footer as read at open)."""
    import pyarrow.parquet as pq

    if not remote.is_uri(path):
        return pq.ParquetFile(path, pre_buffer=False)  # pre-buffering: RSS grows
    footer = _FOOTERS.get((path, opened))
    # pre-buffered: a row group's column chunks coalesced into few ranged GETs (each GET
    # costs a round trip), for a row group's worth of memory
    return pq.ParquetFile(remote.open_native(path), pre_buffer=True, metadata=footer)


_FOOTERS: dict[tuple[str, tuple[int, int]], Any] = {}  # an object's footer, read once


def _parquet_columns(path: str) -> tuple[str, ...]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        if remote.is_uri(path):  # one read of the footer, kept for the pass
            with remote.arrow_input(path) as f:
                meta = pq.ParquetFile(f).metadata
            _FOOTERS[(path, remote.stamp(path))] = meta
            return tuple(meta.schema.to_arrow_schema().names)
        return tuple(pq.read_schema(path).names)
    except (pa.ArrowException, OSError, ValueError) as exc:  # ValueError: UnicodeDecodeError
        raise DataError(f"not a readable Parquet file ({exc})", path=path) from exc
