"""``markdown``: GitHub-flavoured, for ``$GITHUB_STEP_SUMMARY`` or a pull-request comment."""

from __future__ import annotations

from html import escape

from evalloss.render import curve
from evalloss.render.cells import (
    cell,
    columns,
    marked,
    md,
    notes,
    pipe_table,
    unit,
    verdict,
    vs_cells,
)
from evalloss.render.slicetable import tables
from evalloss.report import Report


def render(report: Report) -> str:
    fields, names = columns(report)
    headers = list(names)
    align = ["right", "left", *["right"] * (len(fields) - 2)]
    rows = []
    for m in report.models:
        row = [cell(m.rank), f"`{md(marked(m, m.name))}`"]
        row += [cell(getattr(m, c)) for c in fields[2:]]
        if report.has_baseline:
            row += vs_cells(m)[1:] if m.vs_baseline is not None else ["-"] * 5
        rows.append(row)
    if report.has_baseline:
        headers += ["delta vs baseline", "relative", "95% CI", "p", "wins"]
        align += ["right"] * 5
    table = pipe_table(rows, headers, align)
    lines = [
        f"### evalloss: {report.loss} loss per {unit(report)}",
        "",
        f"{report.data.items} items of `{md(report.data.path)}`, {report.precision}, "
        f"{report.device}, targets: {', '.join(f'`{md(t)}`' for t in report.data.targets)}",
        "",
        table,
        *(f"\n{note}" for note in notes(report)),
    ]
    lines += _markdown_curve(report)
    lines += _markdown_slices(report)
    lines += _markdown_gate(report)
    lines += _markdown_provenance(report)
    return "\n".join(lines) + "\n"


def _markdown_curve(report: Report) -> list[str]:
    """A Trainer run's checkpoints in step order, exact beside logged."""
    curved = curve.table(report, lambda m: f"`{md(m.name)}`")
    if curved is None:
        return []
    align = ["right", "left", "right", "right", "right"]
    return ["", f"{md(curved.title)}:", "", pipe_table(curved.rows, curved.headers, align)]


def _markdown_slices(report: Report) -> list[str]:
    """One collapsible section per slice column, worst first."""
    lines = []
    for sliced in tables(report):
        rows = [[md(escape(c, quote=False)) for c in row] for row in sliced.rows]
        align = ["left", "left", *["right"] * (len(sliced.headers) - 2)]
        lines += ["", f"<details><summary>{md(escape(sliced.title, quote=False))}</summary>", "",
                  pipe_table(rows, sliced.headers, align), "", "</details>"]  # fmt: skip
    return lines


def _markdown_provenance(report: Report) -> list[str]:
    """A small footer: what ran, and the data file's hash (the JSON report has them all)."""
    p = report.provenance
    if p is None:
        return []
    text = (
        f"evalloss {p.evalloss}, torch {p.torch}, Python {p.python} on {p.device} "
        f"({p.device_name}), {p.threads} threads"
    )
    text = md(text)
    data = (p.sha256 or {}).get(report.data.path)
    if data:
        text += f"; data sha256 `{data[:16]}`"
    return ["", f"<sub>{text}</sub>"]


def _markdown_gate(report: Report) -> list[str]:
    """The verdict line (PASS/FAIL in bold) and, under a gate, one bullet per check."""
    line = verdict(report)
    gate = report.gate
    if line is None:
        return []
    if gate is None:
        return ["", md(line)]
    word, _, rest = line.partition("  ")
    head = f"**{word}** {md(rest)}" if rest else f"**{word}**"
    checks = [
        f"- {'pass' if c.passed else '**fail**'} {md(c.rule)}: {md(c.detail)}" for c in gate.checks
    ]
    return ["", head, *(["", *checks] if checks else [])]
