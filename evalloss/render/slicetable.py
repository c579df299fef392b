"""What every format shows of ``--slice``: one table per slice column, worst first.

Rows are (slice, model) pairs: with a baseline, the other models' slices by regression
(paired ``delta`` against the baseline on that slice, largest first), then the baseline's own;
without one, by loss (highest first). Slice values come from the data: `value` escapes them
for one line (`errors.one_line`); each format escapes them again for its own syntax.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from evalloss.errors import one_line
from evalloss.render.cells import cell
from evalloss.report import ModelResult, Report, SliceResult

HEADERS = ("slice", "model", "items", "loss/{unit}", "accuracy")
VS_HEADERS = ("delta", "95% CI", "p (Holm)", "wins")


@dataclass(frozen=True)
class SliceTable:
    """One slice column: its title, headers and rows of cells (plain text, one line each)."""

    column: str
    title: str
    headers: tuple[str, ...]
    rows: list[list[str]]
    entries: list[tuple[ModelResult, SliceResult]]  # the rows' model and slice, in order


def value(piece: SliceResult) -> str:
    """A slice's value for one line: ``(missing)`` for a missing value, ``(empty)`` for the
    empty string, escaped."""
    if piece.value is None or piece.value == "":
        return "(missing)" if piece.value is None else "(empty)"
    return one_line(str(piece.value))


def tables(report: Report, name: Callable[[ModelResult], str] | None = None) -> list[SliceTable]:
    """One `SliceTable` per slice column, in command-line order."""
    per = "token" if report.per_token else "item"
    headers = tuple(h.format(unit=per) for h in HEADERS)
    if report.has_baseline:
        headers += VS_HEADERS
    out = []
    for info in report.slicing:
        entries = [(m, s) for m in report.models for s in m.slices if s.column == info.column]
        entries.sort(key=lambda e: _worst_first(e[0], e[1], report.has_baseline))
        rows = [_row(m, s, report.has_baseline, name) for m, s in entries]
        title = f"slices of {one_line(info.column)}"
        if info.edges is not None:
            edges = ", ".join(f"{e:.6g}" for e in info.edges)
            title += f" ({len(info.edges) - 1} quantile bins; edges {edges})"
        out.append(SliceTable(info.column, title, headers, rows, entries))
    return out


def _worst_first(model: ModelResult, piece: SliceResult, baseline: bool) -> tuple[float, ...]:
    if baseline:
        vs = piece.vs_baseline
        delta = None if vs is None else vs.delta
        return (model.is_baseline, delta is None, -(delta or 0.0))
    figure = piece.figure
    return (figure is None, -(figure or 0.0))


def _row(model: ModelResult, piece: SliceResult, baseline: bool,
         name: Callable[[ModelResult], str] | None) -> list[str]:  # fmt: skip
    shown = name(model) if name is not None else one_line(model.name)
    row = [value(piece), shown, cell(piece.items), cell(piece.figure), cell(piece.accuracy)]
    if baseline:
        vs = piece.vs_baseline
        if vs is None:
            row += ["-"] * 4
        else:
            ci = "-" if vs.ci95 is None else f"[{vs.ci95[0]:.4g}, {vs.ci95[1]:.4g}]"
            row += [
                "-" if vs.delta is None else f"{vs.delta:+.4g}",
                ci,
                "-" if piece.p_holm is None else f"{piece.p_holm:.3g}",
                "-" if vs.wins is None else f"{vs.wins:.1%}",
            ]
    return row
