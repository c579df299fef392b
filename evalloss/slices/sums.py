"""Per-slice exact figures (``--slice``): an observer of the pass and a reducible state.

Every batch's items arrive with their slice codes (`run.batch.ItemKeys`); they wait in a list
until `FLUSH_ITEMS` have come, then each column's `cells.ColumnSums` adds them to every
slice at once, in a few NumPy calls whatever the number of slices: exact sums of every
model's item values (`groupsum.GroupedSum`), integer items, weights and correct elements,
and against the baseline what `stats.PairedSum` (or `ratio.PairedRatio` for token losses)
keeps, per model and slice. No per-row and no per-slice Python while the data is read;
memory is bounded by the slices, not the data. Across processes the slices' sums merge by
slice value (`by_value`, a `stats.state.keyed` field), exactly.
`holm` adjusts the p-values of a model's slices of one column (Holm, 1979).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from evalloss.report import SliceColumn, SliceFigures, SliceResult, _finite
from evalloss.slices.cells import Cell, ColumnSums
from evalloss.stats.state import NESTED, Reducible, each, fields, keyed

if TYPE_CHECKING:
    from evalloss.run.batch import Batch, ItemKeys
    from evalloss.sources.slicing import Slicing

FLUSH_ITEMS = 1 << 16  # items gathered before they are grouped by slice


def _new_cell(owner: SliceSums) -> Cell:
    return Cell(owner.models, owner.base, owner.tokens)


class SliceSums(Reducible):
    """Every model's figures per slice of every ``--slice`` column (a `run.batch.Observer` and
    a `stats.state.Reducible`: its cells merge slice value by slice value)."""

    FIELDS = fields(by_value=each(keyed(NESTED, new=_new_cell)))

    def __init__(self, slicing: Slicing, models: int, base: int | None, *, tokens: bool,
                 accuracy: bool) -> None:  # fmt: skip
        self.slicing, self.models, self.base = slicing, models, base
        self.tokens, self.accuracy = tokens, accuracy
        self.columns = {c.name: ColumnSums(models, base, tokens) for c in slicing.columns}
        self._merged: dict[str, dict[int, Cell]] | None = None  # after `merge_states`
        self._built: dict[str, dict[int, Cell]] | None = None  # `cells`, until more items
        self._pending: list[tuple[ItemKeys, Any, Any]] = []
        self._waiting = 0

    @property
    def cells(self) -> dict[str, dict[int, Cell]]:
        """Every column's slices: code -> its sums (`cells.Cell`)."""
        self.flush()
        if self._merged is not None:
            return self._merged
        if self._built is None:
            self._built = {name: {code: sums.cell(code) for code in sums.codes()}
                           for name, sums in self.columns.items()}  # fmt: skip
        return self._built

    def batch(self, batch: Batch) -> None:
        import numpy as np

        keys = batch.keys
        assert keys is not None, "a sliced run's source gives every item its slice codes"
        values = np.stack([loss.numpy() for loss in batch.losses], axis=1)  # (n, models)
        self._pending.append((keys, values, batch.weights.numpy().astype(np.int64)))
        self._waiting += len(values)
        if self._waiting >= FLUSH_ITEMS:
            self.flush()

    def flush(self) -> None:
        """Group the waiting items by slice, column by column, into their cells."""
        import numpy as np

        if not self._pending:
            return
        pending, self._pending, self._waiting = self._pending, [], 0
        self._built = None
        values = np.concatenate([v for _, v, _ in pending])
        weights = np.concatenate([w for _, _, w in pending])
        correct = counted = None
        if self.accuracy and all(k.correct is not None for k, _, _ in pending):
            correct = np.concatenate([np.stack(k.correct, axis=1) for k, _, _ in pending
                                      if k.correct is not None])  # fmt: skip
            counted = np.concatenate([k.counted for k, _, _ in pending if k.counted is not None])
        for column, sums in self.columns.items():
            codes = np.concatenate([k.groups[column] for k, _, _ in pending])
            sums.add(codes, values, weights, correct, counted)

    @property
    def by_value(self) -> dict[str, dict[tuple[str, Any], Cell]]:
        """Each column's cells keyed by their slice value and its type (codes differ between
        processes; 1, 1.0 and True are three slices): what merges across processes."""
        every = self.cells
        return {c.name: {(type(c.values[code]).__name__, c.values[code]): cell
                         for code, cell in every[c.name].items()}
                for c in self.slicing.columns}  # fmt: skip

    @by_value.setter
    def by_value(self, merged: dict[str, dict[tuple[str, Any], Cell]]) -> None:
        self._merged = {c.name: {c.code(value): cell for (_, value), cell in merged[c.name].items()}
                        for c in self.slicing.columns}  # fmt: skip

    def results(self, model: int, base_figures: dict[tuple[str, int], float | None]
                ) -> tuple[SliceResult, ...]:  # fmt: skip
        """Model ``model``'s slices, column by column, values in their order (bins in
        order, other values sorted, missing last); ``base_figures``: the baseline's figure
        on each (column, code), for ``relative``."""
        out: list[SliceResult] = []
        every = self.cells
        for column in self.slicing.columns:
            cells = every[column.name]
            codes = sorted(cells, key=lambda c: _order(column.values[c], c, column.edges))
            found = [self._result(column.name, column.values[c], cells[c], model,
                                  base_figures.get((column.name, c)), _range(column.edges, c))
                     for c in codes]  # fmt: skip
            out += holm_adjusted(found)
        return tuple(out)

    def report(self) -> SliceFigures:
        """The columns and every model's figures on them, as the report states them."""
        base_figures = {} if self.base is None else self.figures(self.base)
        columns = tuple(SliceColumn(c.name, c.edges) for c in self.slicing.columns)
        models = tuple(self.results(m, base_figures) for m in range(self.models))
        return SliceFigures(columns, models)

    def figures(self, model: int) -> dict[tuple[str, int], float | None]:
        """Model ``model``'s figure on every (column, code): per token or per item."""
        return {(name, c): _figure(cell, model, self.tokens)
                for name, cells in self.cells.items() for c, cell in cells.items()}  # fmt: skip

    def _result(self, column: str, value: Any, cell: Cell, model: int,
                base_figure: float | None,
                bounds: tuple[float, float] | None) -> SliceResult:  # fmt: skip
        total = cell.sums[model]
        loss_sum = None if cell.nonfinite[model] or total.overflowed else total.value
        per_item = None if loss_sum is None or not cell.items else _finite(loss_sum / cell.items)
        pair = cell.paired.get(model)
        return SliceResult(
            column=column, value=value, items=cell.items, weight=cell.weight,
            loss_sum=loss_sum, loss_per_item=per_item,
            accuracy=cell.correct[model] / cell.counted if self.accuracy and cell.counted
            else None,
            nonfinite_items=cell.nonfinite[model], range=bounds,
            loss_per_token=_figure(cell, model, tokens=True) if self.tokens else None,
            vs_baseline=None if pair is None else pair.comparison(base_figure),
        )  # fmt: skip


def _figure(cell: Cell, model: int, tokens: bool) -> float | None:
    total = cell.sums[model]
    if cell.nonfinite[model] or total.overflowed:
        return None
    count = cell.weight if tokens else cell.items
    return _finite(total.value / count) if count else None


def _order(value: Any, code: int, edges: tuple[float, ...] | None) -> tuple[Any, ...]:
    if edges is not None or value is None:
        return (value is None, code, "", 0)
    return (False, 0, type(value).__name__, value)


def _range(edges: tuple[float, ...] | None, code: int) -> tuple[float, float] | None:
    if edges is None or code >= len(edges) - 1:
        return None
    return (edges[code], edges[code + 1])


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm's step-down adjustment of ``p_values`` (None: no test, left out of the count):
    sorted ascending p(1) <= ... <= p(m), adjusted p(i) = max over j <= i of
    min(1, (m - j + 1) p(j))."""
    tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    m = len(tested)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for j, (p, i) in enumerate(tested):
        running = max(running, min(1.0, (m - j) * p))
        out[i] = running
    return out


def holm_adjusted(found: list[SliceResult]) -> list[SliceResult]:
    """One column's slices with their Holm-adjusted p-values."""
    from dataclasses import replace

    adjusted = holm([None if r.vs_baseline is None else r.vs_baseline.p_value for r in found])
    return [replace(r, p_holm=p) for r, p in zip(found, adjusted, strict=True)]
