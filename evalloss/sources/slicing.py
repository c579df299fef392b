"""Slice columns (``--slice COL``): each item's slice, as an integer code, from the same
record batches the pass reads (no second read of the data, no per-row Python).

A category column (strings, integers, booleans) is dictionary-encoded per batch by pyarrow;
each distinct value gets a code the first time it is seen, so the codes of one process are
stable for its whole pass (`SliceColumn.values` maps them back). A missing value is a slice of
its own, value ``None``: a null (in CSV an empty, unquoted cell, `CSV_NULLS`); an empty string
(in CSV a quoted ``""``) is a value, its own slice, in every form. A numeric column with
``--slice-bins K`` is cut at exact quantiles of the whole column, read before the pass (that
one column only: a Parquet column chunk, or a CSV parse keeping one column): the K-quantiles
``v[ceil(k n / K) - 1]`` of the n sorted non-missing values (the inverted CDF), bins
``[e0, e1], (e1, e2], ..., (e(K-1), eK]``; equal edges (ties) merge bins.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evalloss.errors import DataError, OptionError, shown

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

MAX_BINS = 1000


def csv_nulls(binned: bool) -> dict[str, Any]:
    """pyarrow's CSV conversion options for a run's slice columns, so that CSV gives the slices
    Parquet and JSON Lines give: in a category column only an empty, unquoted cell is missing
    (a quoted ``""`` is the empty string; ``NA`` or ``null`` are values, as they are where
    written as strings); a numeric column cut into bins also takes pyarrow's null spellings
    (``NA``, ``null``, ...) as missing, no number being spelled so."""
    if binned:
        return {"strings_can_be_null": True}
    return {"null_values": [""], "strings_can_be_null": True, "quoted_strings_can_be_null": False}


@dataclass
class SliceColumn:
    """One slice column: its bin edges (None: a category column) and the values seen."""

    name: str
    edges: tuple[float, ...] | None = None
    values: list[Any] = field(default_factory=list)  # code -> value (None: missing)
    _index: dict[Any, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.edges is not None:  # bins: code k is bin k, the last code is "missing"
            for k in range(len(self.edges) - 1):
                self.code(label(self.edges, k))
            self.code(None)

    def code(self, value: Any) -> int:
        """The code of ``value`` (a new one the first time it is seen)."""
        if isinstance(value, float) and math.isnan(value):
            value = None
        found = self._index.get((type(value).__name__, value))
        if found is None:
            found = self._index[(type(value).__name__, value)] = len(self.values)
            self.values.append(value)
        return found

    def encode(self, array: Any) -> npt.NDArray[np.int64]:
        """An Arrow array of this column -> each row's code (n,) int64."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if self.edges is not None:
            x = np.asarray(array.cast(pa.float64()).fill_null(math.nan).to_numpy(
                zero_copy_only=False), dtype=np.float64)  # fmt: skip
            codes = np.searchsorted(np.asarray(self.edges[1:-1]), x, side="left")
            codes[np.isnan(x)] = len(self.edges) - 1
            return codes.astype(np.int64)
        encoded = pc.dictionary_encode(array, null_encoding="encode")
        lookup = np.array([self.code(v) for v in encoded.dictionary.to_pylist()], np.int64)
        indices = encoded.indices.to_numpy(zero_copy_only=False)
        return lookup[indices] if len(lookup) else np.zeros(len(array), np.int64)


def label(edges: Sequence[float], k: int) -> str:
    """Bin ``k``'s name: ``[e0, e1]`` for the first, ``(e(k), e(k+1)]`` after it."""
    return f"{'[' if k == 0 else '('}{edges[k]!r}, {edges[k + 1]!r}]"


@dataclass
class Slicing:
    """The run's slice columns, in command-line order."""

    columns: tuple[SliceColumn, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def encode(self, batch: Any) -> dict[str, npt.NDArray[np.int64]]:
        """A record batch or table holding the slice columns -> each column's codes."""
        return {c.name: c.encode(batch.column(c.name)) for c in self.columns}


def check_names(path: str, names: Sequence[str], wanted: Sequence[str]) -> None:
    """Every slice column exists, and none is given twice."""
    for column in wanted:
        if list(wanted).count(column) > 1:
            raise OptionError(f"column {shown(column)} is given twice", key="--slice")
        if column not in names:
            listed = ", ".join(shown(n, 40) for n in list(names)[:50])
            raise DataError(f"no such slice column; columns are: {listed}", path=path,
                            key=column)  # fmt: skip


def open_slicing(
    path: str, wanted: Sequence[str], bins: int | None, read_column: Callable[[str], Any]
) -> Slicing | None:
    """The slice columns of a run; with ``bins``, every one is read first, whole
    (``read_column``: name -> Arrow array), for its quantile edges."""
    if not wanted:
        return None
    columns = []
    for name in wanted:
        edges = None
        if bins is not None:
            edges = quantile_edges(path, name, read_column(name), bins)
        columns.append(SliceColumn(name, edges))
    return Slicing(tuple(columns))


def quantile_edges(path: str, name: str, array: Any, bins: int) -> tuple[float, ...]:
    """The exact K-quantile edges of a numeric column (`open_slicing`): min, the K - 1
    inner quantiles (ties merged), max."""
    import numpy as np
    import pyarrow as pa

    kind = array.type
    if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_null(kind)):
        raise DataError(f"--slice-bins needs numbers; this column holds {kind}", path=path,
                        key=name)  # fmt: skip
    x = np.asarray(array.cast(pa.float64()).fill_null(math.nan).to_numpy(zero_copy_only=False),
                   dtype=np.float64)  # fmt: skip
    x = np.sort(x[~np.isnan(x)])
    if not np.isfinite(x).all():
        raise DataError("--slice-bins: the column holds an infinite value", path=path, key=name)
    n = len(x)
    if n == 0:
        raise DataError("--slice-bins: the column has no numbers", path=path, key=name)
    inner = [float(x[-(-k * n // bins) - 1]) for k in range(1, bins)]
    edges = sorted({float(x[0]), *inner, float(x[-1])})
    if len(edges) < 2:
        raise DataError(f"all rows in one slice: every value is {float(x[0])!r}", path=path,
                        key=name)  # fmt: skip
    return tuple(edges)


def check_bins(bins: int | None, wanted: Sequence[str]) -> int | None:
    """``--slice-bins``: a whole number from 2 to `MAX_BINS`, with ``--slice``."""
    if bins is None:
        return None
    if isinstance(bins, bool) or not isinstance(bins, int) or not 2 <= bins <= MAX_BINS:
        raise OptionError(f"must be a whole number from 2 to {MAX_BINS}", key="--slice-bins")
    if not wanted:
        raise OptionError("needs --slice (the numeric column to cut)", key="--slice-bins")
    return bins
