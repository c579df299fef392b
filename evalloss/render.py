"""Report -> text (table, markdown, csv, json); the cell formats `render_explain` shares.

``table`` is for a terminal and stays within 80 columns (long model names are shortened in
the middle); ``markdown`` is GitHub-flavoured, for ``$GITHUB_STEP_SUMMARY`` or a pull-request
comment; ``csv`` has one row per model with the JSON fields flattened (``vs_baseline.delta``);
``json`` is the contract's report.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from tabulate import tabulate

from . import gate
from .names import shorten
from .report import ModelResult, Report

FORMATS = ("table", "json", "markdown", "csv")
WIDTH = 80  # the table format fits a classic terminal
_MIN_NAME = 12  # a model name is never shortened below this
_ELLIPSIS = "..."  # ASCII: safe on any console encoding
_COLUMNS = ("rank", "name", "loss_per_item", "loss_sum", "items", "accuracy")
_HEADERS = ("rank", "model", "loss/item", "loss sum", "items", "accuracy")
_BASELINE = " (baseline)"
_VS_HEADERS = ("model", "delta", "relative", "95% CI", "p", "wins")


def render(report: Report, fmt: str) -> str:
    """The whole report as one string in format ``fmt``."""
    if fmt == "json":
        return to_json(report.to_dict())
    if fmt == "csv":
        return _csv(report)
    if fmt == "markdown":
        return _markdown(report)
    return _table(report)


def to_json(document: Any) -> str:
    """Strict JSON: keys sorted, no NaN or Infinity tokens."""
    return json.dumps(document, sort_keys=True, indent=2, allow_nan=False) + "\n"


# -- table ---------------------------------------------------------------------------------


def _title(report: Report, width: int = WIDTH) -> str:
    what = f"{report.loss} loss per item over {report.data.items} items"
    how = f"({report.precision}, {report.device})"
    path = report.data.path
    if len(f"{what} of {path} {how}") <= width:
        return f"{what} of {path} {how}"
    if len(path) + 3 > width:  # keep the end of the path: the file name
        path = _ELLIPSIS + path[len(path) + 3 + len(_ELLIPSIS) - width :]
    return f"{what} {how}\nof {path}"


def _table(report: Report) -> str:
    rows = [[cell(getattr(m, c)) for c in _COLUMNS] for m in report.models]
    marks = [_BASELINE if m.is_baseline else "" for m in report.models]
    parts = [_title(report), _fit(rows, _HEADERS, "simple", name_column=1, marks=marks)]
    if report.has_baseline:
        vs_rows = [_vs_row(m) for m in report.models if m.vs_baseline is not None]
        if vs_rows:
            parts += [
                "against the baseline, paired item by item (delta < 0: lower loss):",
                _fit(vs_rows, _VS_HEADERS, "simple", name_column=0),
            ]
    parts += [line for line in (verdict(report),) if line]
    return "\n\n".join(parts) + "\n"


def _marked(model: ModelResult, name: str) -> str:
    return f"{name}{_BASELINE}" if model.is_baseline else name


def _vs_row(model: ModelResult) -> list[str]:
    vs = model.vs_baseline
    assert vs is not None
    ci = "-" if vs.ci95 is None else f"[{vs.ci95[0]:.4g}, {vs.ci95[1]:.4g}]"
    relative = "-" if vs.relative is None else f"{vs.relative:+.2%}"
    p_value = "-" if vs.p_value is None else f"{vs.p_value:.3g}"
    wins = "-" if vs.wins is None else f"{vs.wins:.1%}"
    delta = "-" if vs.delta is None else f"{vs.delta:+.4g}"
    return [model.name, delta, relative, ci, p_value, wins]


def _fit(
    rows: list[list[str]],
    headers: Sequence[str],
    fmt: str,
    name_column: int,
    marks: Sequence[str] = (),
) -> str:
    """The table, with the names in ``name_column`` shortened until it fits in WIDTH.

    ``marks`` (one per row) are appended to the names after shortening.
    """
    marks = list(marks) or [""] * len(rows)
    names = [r[name_column] for r in rows]

    def table(shown: Sequence[str]) -> str:
        cells = [
            [*r[:name_column], n + m, *r[name_column + 1 :]]
            for r, n, m in zip(rows, shown, marks, strict=True)
        ]
        return tabulate(cells, headers, tablefmt=fmt, disable_numparse=True)

    text = table(names)
    excess = max(len(line) for line in text.splitlines()) - WIDTH
    longest = max((len(n) + len(m) for n, m in zip(names, marks, strict=True)), default=0)
    if excess > 0 and longest > _MIN_NAME:
        width = max(_MIN_NAME, longest - excess, len(headers[name_column]))
        text = table(shorten(names, [max(width - len(m), _MIN_NAME) for m in marks]))
    return text


def cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.6e}"
    return str(value)


def verdict(report: Report) -> str | None:
    """One line for a CI log: PASS/FAIL, the winner against the baseline, each gate check.

    ``PASS  bs10 beats baseline bs50 by 0.0534 (30.0%), 95% CI [-0.071, -0.036],
    p = 2e-06; improvement 0.0534 > 0.0178 (10% of 0.178)``; a failed check reads
    ``min-improvement failed: improvement 0.0106 is not > 0.0499 (10% of 0.499)``. Without a
    gate, the comparison alone (no PASS/FAIL); None without a gate and without a baseline.
    """
    result = report.gate
    baseline = next((m for m in report.models if m.is_baseline), None)
    if result is None and baseline is None:
        return None
    winner = next((m for m in report.models if not m.is_baseline), None)
    if winner is None or winner.loss_per_item is None:
        head = "no model besides the baseline has a finite loss"
        if baseline is None:
            head = "no model has a finite loss"
        elif winner is None:
            head = "no model besides the baseline"
    elif baseline is None:
        head = f"best model {winner.name}"
    else:
        head = _versus(winner, baseline)
    parts = [head]
    for check in () if result is None else result.checks:
        if check.detail != head:
            parts.append(check.detail if check.passed else f"{check.rule} failed: {check.detail}")
    line = "; ".join(parts)
    return line if result is None else f"{'PASS' if result.passed else 'FAIL'}  {line}"


def _versus(winner: ModelResult, baseline: ModelResult) -> str:
    """``bs10 beats baseline bs50 by 0.0534 (30.0%), 95% CI [-0.071, -0.036], p = 2e-06``"""
    name = f"baseline {baseline.name}"
    if baseline.loss_per_item is None:
        return f"{winner.name} beats {name}, whose loss is not finite"
    gained = gate.improvement(winner, baseline.loss_per_item)
    vs = winner.vs_baseline
    if gained is None:
        return f"{winner.name} against {name}: no paired difference"
    if gained == 0:
        text = f"{winner.name} ties with {name}"
    else:
        verb = "beats" if gained > 0 else "trails"
        text = f"{winner.name} {verb} {name} by {gate.numbers(abs(gained))[0]}"
        if vs is not None and vs.relative is not None:
            text += f" ({abs(vs.relative) * 100:.1f}%)"
    if vs is not None and vs.ci95 is not None and vs.p_value is not None:
        low, high = gate.numbers(*vs.ci95)
        text += f", 95% CI [{low}, {high}], p = {_p_value(vs.p_value)}"
    return text


def _p_value(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-3 or p == 0 else f"{p:.0e}"


# -- markdown ------------------------------------------------------------------------------


def _markdown(report: Report) -> str:
    align = ["right", "left", "right", "right", "right", "right"]
    headers = list(_HEADERS)
    rows = []
    for m in report.models:
        row = [cell(m.rank), f"`{md(_marked(m, m.name))}`"]
        row += [cell(getattr(m, c)) for c in _COLUMNS[2:]]
        if report.has_baseline:
            row += _vs_row(m)[1:] if m.vs_baseline is not None else ["-"] * 5
        rows.append(row)
    if report.has_baseline:
        headers += ["delta vs baseline", "relative", "95% CI", "p", "wins"]
        align += ["right"] * 5
    table = pipe_table(rows, headers, align)
    lines = [
        f"### evalloss: {report.loss} loss per item",
        "",
        f"{report.data.items} items of `{md(report.data.path)}`, {report.precision}, "
        f"{report.device}, targets: {', '.join(f'`{md(t)}`' for t in report.data.targets)}",
        "",
        table,
    ]
    lines += _markdown_gate(report)
    lines += _markdown_provenance(report)
    return "\n".join(lines) + "\n"


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
        f"- {'pass' if c.passed else '**fail**'} {md(c.rule)}: {md(c.detail)}"
        for c in gate.checks
    ]
    return ["", head, *(["", *checks] if checks else [])]


def pipe_table(rows: list[list[str]], headers: Sequence[str], align: Sequence[str]) -> str:
    """A GitHub-flavoured markdown table of the cells as given (no number parsing)."""
    return tabulate(rows, headers, tablefmt="pipe", colalign=align, disable_numparse=True)


def md(text: str) -> str:
    """Text safe inside a GitHub table cell or inline code span."""
    return text.replace("|", "\\|").replace("`", "'").replace("\n", " ")


# -- csv -----------------------------------------------------------------------------------


def _csv(report: Report) -> str:
    """One row per model, in rank order; nested JSON fields flattened with dots, then the
    checkpoint's sha256 (from the provenance) when the files were hashed."""
    hashes = (report.provenance.sha256 if report.provenance else None) or {}
    rows = [_flatten(m) for m in report.to_dict()["models"]]
    if hashes:
        for row in rows:
            row["sha256"] = hashes.get(row["path"])
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([raw(row.get(c)) for c in columns])
    return out.getvalue()


def _flatten(value: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, dict):
            flat |= _flatten(item, f"{name}.")
        elif key == "ci95":
            low, high = item if item is not None else (None, None)
            flat |= {f"{name}.low": low, f"{name}.high": high}
        elif key == "vs_baseline" and item is None:  # the baseline's own row
            flat |= dict.fromkeys((f"{name}.{k}" for k in _VS_KEYS), None)
        else:
            flat[name] = item
    return flat


_VS_KEYS = ("delta", "relative", "ci95.low", "ci95.high", "p_value", "wins")


def raw(value: Any) -> str:
    """A CSV cell: empty for null, lowercase booleans, floats that read back exactly."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)
