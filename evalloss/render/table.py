"""``table``: for a terminal, within 80 columns (long model names shortened in the middle)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

from tabulate import tabulate

from evalloss.render import curve
from evalloss.render.cells import BASELINE, cell, columns, notes, unit, verdict, vs_cells
from evalloss.render.names import shorten
from evalloss.render.slicetable import tables
from evalloss.report import Report

WIDTH = 80  # the table format fits a classic terminal
_MIN_NAME = 12  # a model name is never shortened below this
_ELLIPSIS = "..."  # ASCII: safe on any console encoding
_VS_HEADERS = ("model", "delta", "relative", "95% CI", "p", "wins")


def render(report: Report) -> str:
    fields, headers = columns(report)
    rows = [[cell(getattr(m, c)) for c in fields] for m in report.models]
    marks = [BASELINE if m.is_baseline else "" for m in report.models]
    parts = [_title(report), _fit(rows, headers, "simple", name_column=1, marks=marks)]
    parts += [textwrap.fill(note, WIDTH) for note in notes(report)]
    if report.has_baseline:
        vs_rows = [vs_cells(m) for m in report.models if m.vs_baseline is not None]
        if vs_rows:
            parts += [
                "against the baseline, paired item by item (delta < 0: lower loss):",
                _fit(vs_rows, _VS_HEADERS, "simple", name_column=0),
            ]
    curved = curve.table(report)
    if curved is not None:
        parts += [textwrap.fill(curved.title + ":", WIDTH),
                  _fit(curved.rows, curved.headers, "simple", name_column=1)]  # fmt: skip
    for sliced in tables(report):
        parts += [textwrap.fill(sliced.title + ":", WIDTH),
                  _fit(sliced.rows, sliced.headers, "simple", name_column=1)]  # fmt: skip
    parts += [line for line in (verdict(report),) if line]
    return "\n\n".join(parts) + "\n"


def _title(report: Report, width: int = WIDTH) -> str:
    what = f"{report.loss} loss per {unit(report)} over {report.data.items} items"
    how = f"({report.precision}, {report.device})"
    path = report.data.path
    if len(f"{what} of {path} {how}") <= width:
        return f"{what} of {path} {how}"
    if len(path) + 3 > width:  # keep the end of the path: the file name
        path = _ELLIPSIS + path[len(path) + 3 + len(_ELLIPSIS) - width :]
    return f"{what} {how}\nof {path}"


def _fit(
    rows: list[list[str]],
    headers: Sequence[str],
    fmt: str,
    name_column: int,
    marks: Sequence[str] = (),
) -> str:
    """The table, with the names in ``name_column`` shortened until it fits in WIDTH.

    Past WIDTH the columns first lose the padding tabulate gives headers (two spaces between
    columns, no more), so that names are cut only where that is not enough. ``marks`` (one
    per row) are appended to the names after shortening.
    """
    marks = list(marks) or [""] * len(rows)
    names = [r[name_column] for r in rows]

    def table(shown: Sequence[str], *, compact: bool = False) -> str:
        cells = [
            [*r[:name_column], n + m, *r[name_column + 1 :]]
            for r, n, m in zip(rows, shown, marks, strict=True)
        ]
        if compact:
            return _compact(cells, headers)
        return tabulate(cells, headers, tablefmt=fmt, disable_numparse=True)

    text = table(names)
    if _widest(text) <= WIDTH:
        return text
    text = table(names, compact=True)
    excess = _widest(text) - WIDTH
    longest = max((len(n) + len(m) for n, m in zip(names, marks, strict=True)), default=0)
    if excess > 0 and longest > _MIN_NAME:
        width = max(_MIN_NAME, longest - excess, len(headers[name_column]))
        text = table(shorten(names, [max(width - len(m), _MIN_NAME) for m in marks]),
                     compact=True)  # fmt: skip
    return text


def _widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


def _compact(cells: list[list[str]], headers: Sequence[str]) -> str:
    """tabulate's "simple" table without the padding it adds to headers."""
    lines = tabulate([list(headers), *cells], tablefmt="plain",
                     disable_numparse=True).splitlines()  # fmt: skip
    widths = [max(len(c) for c in column) for column in zip(headers, *cells, strict=True)]
    return "\n".join([lines[0].rstrip(), "  ".join("-" * w for w in widths),
                      *(line.rstrip() for line in lines[1:])])  # fmt: skip
