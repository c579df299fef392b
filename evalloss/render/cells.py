"""What every format shares: cell formats, the comparison cells, and the verdict line."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from tabulate import tabulate

from evalloss import gate
from evalloss.errors import one_line
from evalloss.report import DataInfo, ExplainReport, ModelResult, Report

COLUMNS = ("rank", "name", "loss_per_item", "loss_sum", "items", "accuracy")
HEADERS = ("rank", "model", "loss/item", "loss sum", "items", "accuracy")
TOKEN_COLUMNS = ("rank", "name", "loss_per_token", "perplexity", "loss_sum", "tokens", "items")
TOKEN_HEADERS = ("rank", "model", "loss/token", "perplexity", "loss sum", "tokens", "items")
ELEMENT_COLUMNS = ("rank", "name", "loss_per_item", "loss_per_element", "loss_sum", "items",
                   "accuracy")  # fmt: skip
ELEMENT_HEADERS = ("rank", "model", "loss/item", "loss/element", "loss sum", "items", "accuracy")
BASELINE = " (baseline)"


def columns(report: Report) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The model table's fields and headers: per token for a token loss (and bits per byte
    for text), else per item (and per counted element where items differ in weight)."""
    if not report.per_token:
        return (ELEMENT_COLUMNS, ELEMENT_HEADERS) if report.by_element else (COLUMNS, HEADERS)
    if report.unit == "byte":  # bits per byte ranks: it first
        return (*TOKEN_COLUMNS[:2], "bits_per_byte", *TOKEN_COLUMNS[2:]), (
            *TOKEN_HEADERS[:2], "bits/byte", *TOKEN_HEADERS[2:])  # fmt: skip
    if report.data.bytes is None:
        return TOKEN_COLUMNS, TOKEN_HEADERS
    # lm-evaluation-harness's convention (--prefix-token): its word perplexity beside
    text, names = ("bits_per_byte", "word_perplexity"), ("bits/byte", "word ppl")
    shown = 2 if report.data.prefix_token is not None and report.data.words is not None else 1
    return (*TOKEN_COLUMNS[:4], *text[:shown], *TOKEN_COLUMNS[4:]), (
        *TOKEN_HEADERS[:4], *names[:shown], *TOKEN_HEADERS[4:])  # fmt: skip


def unit(report: Report) -> str:
    """``"token"``, ``"byte"`` or ``"item"``: what the figure is per (titles)."""
    return report.unit if report.unit in ("token", "byte") else "item"


BY_BYTES = ("ranked by bits per byte: the models have different tokenizers, so their losses "
            "per token count different tokens and cannot be compared; the paired statistics "
            "are per byte, in bits")  # fmt: skip


def notes(report: Report) -> list[str]:
    """Sentences a reader needs to read the table right."""
    return [BY_BYTES] if report.unit == "byte" else []


def to_json(document: Any) -> str:
    """Strict JSON: keys sorted, no NaN or Infinity tokens."""
    return json.dumps(document, sort_keys=True, indent=2, allow_nan=False) + "\n"


def displayable(report: Report) -> Report:
    """The report with every name from a file escaped for one terminal line (`one_line`):
    the data's path and targets, each model's name and path, the gate's winner and baseline."""
    models = tuple(replace(m, name=one_line(m.name), path=one_line(m.path)) for m in report.models)
    gate = report.gate
    if gate is not None:
        gate = replace(
            gate,
            winner=None if gate.winner is None else one_line(gate.winner),
            baseline=None if gate.baseline is None else one_line(gate.baseline),
        )
    return replace(report, data=_data(report.data), models=models, gate=gate)


def displayable_explain(report: ExplainReport) -> ExplainReport:
    """`displayable` for an explain report: its data and checkpoint."""
    return replace(report, data=_data(report.data), checkpoint=one_line(report.checkpoint))


def _data(data: DataInfo) -> DataInfo:
    return replace(data, path=one_line(data.path), targets=tuple(map(one_line, data.targets)))


def marked(model: ModelResult, name: str) -> str:
    return f"{name}{BASELINE}" if model.is_baseline else name


def vs_cells(model: ModelResult) -> list[str]:
    vs = model.vs_baseline
    assert vs is not None
    ci = "-" if vs.ci95 is None else f"[{vs.ci95[0]:.4g}, {vs.ci95[1]:.4g}]"
    relative = "-" if vs.relative is None else f"{vs.relative:+.2%}"
    p_value = "-" if vs.p_value is None else f"{vs.p_value:.3g}"
    wins = "-" if vs.wins is None else f"{vs.wins:.1%}"
    delta = "-" if vs.delta is None else f"{vs.delta:+.4g}"
    return [model.name, delta, relative, ci, p_value, wins]


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
    winner = gate.find_winner(report.models)
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


def pipe_table(rows: list[list[str]], headers: Sequence[str], align: Sequence[str]) -> str:
    """A GitHub-flavoured markdown table of the cells as given (no number parsing)."""
    return tabulate(rows, headers, tablefmt="pipe", colalign=align, disable_numparse=True)


def md(text: str) -> str:
    """Text safe inside a GitHub table cell or inline code span."""
    return text.replace("|", "\\|").replace("`", "'").replace("\n", " ")


def raw(value: Any) -> str:
    """A CSV cell: empty for null, lowercase booleans, floats that read back exactly."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)
