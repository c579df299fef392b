"""What the tabular sources (CSV, Parquet) share: resolving the columns, and record batches ->
blocks of one float feature matrix and one float64 target matrix, without per-row Python."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evalloss.errors import DataError, OptionError, shown
from evalloss.io import hashing
from evalloss.sources.base import Block, OneFile
from evalloss.sources.slicing import Slicing, check_names

if TYPE_CHECKING:
    from typing import Self

    import torch

    from evalloss.options import Options


@dataclass(frozen=True)
class Columns:
    """The file's columns, and the features and targets chosen among them."""

    names: tuple[str, ...]
    features: tuple[str, ...]
    targets: tuple[str, ...]


def resolve(
    path: str,
    names: Sequence[str],
    target: Sequence[str],
    feature: Sequence[str],
    hint: str = "",
    slices: Sequence[str] = (),
) -> Columns:
    """Check the file's column names and choose the targets (default: the last column) and
    features (default: every other column that is not a slice column); every mistake is one
    `DataError` or `OptionError`. ``hint``: said when no feature is left (e.g. "is it
    tab-separated?")."""
    names = tuple(names)
    check_names(path, names, slices)
    seen: set[str] = set()
    for name in names:
        if name in seen:
            what = "duplicate column name" if name else "two columns have an empty name"
            raise DataError(what, path=path, line=1, key=name or None)
        seen.add(name)
    for option, given in (("--target", target), ("--feature", feature)):
        twice = sorted({c for c in given if list(given).count(c) > 1})
        if twice:
            raise OptionError(f"column {shown(twice[0])} is given twice", key=option)
    targets = tuple(target) or names[-1:]
    features = tuple(feature) or tuple(c for c in names if c not in (*targets, *slices))
    for name in (*targets, *features):
        if name not in seen:  # a set: a file may have 100k+ columns
            listed = ", ".join(c if c.isprintable() and len(c) <= 40 else shown(c, 40)
                               for c in names[:50])  # fmt: skip
            if len(names) > 50:
                listed += f", ... ({len(names)} in all)"
            raise DataError(f"no such column; columns are: {listed}", path=path, key=name)
    if not features:
        raise DataError("no feature columns left after the targets" + hint, path=path)
    overlap = set(targets) & set(features)
    if overlap:
        raise DataError("column is both a target and a feature", path=path, key=min(overlap))
    return Columns(names, features, targets)


@dataclass(frozen=True)
class Tabular(OneFile):
    """A tabular file with its columns resolved; subclasses read it (`csvfile`, `parquetfile`)."""

    path: str
    columns: tuple[str, ...]
    features: tuple[str, ...]
    targets: tuple[str, ...]
    checksum: bool = True  # hash the file while a single process reads it front to back
    _state: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    slicing: Slicing | None = field(default=None, compare=False)  # --slice columns

    @classmethod
    def of(cls, path: str, columns: Columns, options: Options, **extra: Any) -> Self:
        """The source of ``path`` with its resolved ``columns``; ``extra``: the form's own."""
        return cls(
            path=path,
            columns=columns.names,
            features=columns.features,
            targets=columns.targets,
            checksum=options.checksum,
            **extra,
        )

    @property
    def read_columns(self) -> list[str]:
        """The columns a pass reads: features, targets, then the slice columns not yet in."""
        wanted = [*self.features, *self.targets]
        extra = self.slicing.names if self.slicing else ()
        return wanted + [c for c in extra if c not in wanted]

    @property
    def item_shape(self) -> tuple[int, ...]:
        return (len(self.features),)

    def sha256(self) -> dict[str, str]:
        """The data file's hex sha256: kept from a front-to-back pass, else read now."""
        if "sha256" not in self._state:
            self._state["sha256"] = hashing.sha256_of(self.path)
        return {self.path: self._state["sha256"]}

    def at(self, block: Block, index: int, column: str, why: str | None = None) -> DataError:
        raise NotImplementedError

    def bad_target(self, block: Block, index: int, column: int, why: str) -> DataError:
        return self.at(block, index, self.targets[column], why)

    def _to_block(self, batch: Any, row: int, dtype: torch.dtype, locator: Any = None) -> Block:
        """A record batch or table -> one Block of contiguous tensors (no per-row Python)."""
        import numpy as np
        import pyarrow as pa
        import torch

        def matrix(columns: Sequence[str], arrow_type: Any) -> Any:
            table = batch.select(list(columns))
            if any(t != arrow_type for t in table.schema.types):  # CSV: parsed as wanted
                # integers are rounded to the float type as CSV's parser rounds their text
                # (float32: exact up to 2**24); any other conversion must be exact
                types = table.schema.types
                rounding = all(pa.types.is_integer(t) or t == arrow_type for t in types)
                wanted = pa.schema([(c, arrow_type) for c in columns])
                table = table.cast(wanted, safe=not rounding)
            if table.num_rows == 0:
                return np.empty((0, len(columns)), dtype=arrow_type.to_pandas_dtype())
            # column-major: the columns side by side (no transposing in pyarrow, 20x faster);
            # each batch is made row-major as it is evaluated (`Block.input_rows`)
            return np.asarray(table.to_tensor(null_to_nan=True, row_major=False))

        features = matrix(self.features, pa.float64() if dtype == torch.float64 else pa.float32())
        targets = matrix(self.targets, pa.float64())
        groups = None if self.slicing is None else self.slicing.encode(batch)
        inputs, wanted = torch.from_numpy(features), torch.from_numpy(targets).contiguous()
        block = Block(row, inputs, wanted, groups, locator=locator)
        for values, names in ((features, self.features), (targets, self.targets)):
            finite = np.isfinite(values)
            if not finite.all():
                r, c = np.argwhere(~finite)[0]
                raise self.at(block, int(r), names[int(c)])
        return block
