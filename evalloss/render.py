"""Report -> text (table, markdown, csv, json), and the atomic write of that text."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tabulate import tabulate

from .report import ExplainReport, Report

FORMATS = ("table", "json", "markdown", "csv")
_COLUMNS = ("rank", "name", "loss_per_item", "loss_sum", "items", "accuracy")
_HEADERS = ("rank", "model", "loss/item", "loss sum", "items", "accuracy")


def render(report: Report, fmt: str) -> str:
    """The whole report as one string in format ``fmt``."""
    if fmt == "json":
        return to_json(report.to_dict())
    if fmt == "csv":
        return _csv(report)
    rows = [[_cell(getattr(m, c)) for c in _COLUMNS] for m in report.models]
    if fmt == "markdown":
        return tabulate(rows, _HEADERS, tablefmt="github", disable_numparse=True) + "\n"
    title = (
        f"{report.loss} loss per item over {report.data.items} items of {report.data.path}"
        f" ({report.precision}, {report.device})"
    )
    table = tabulate(rows, _HEADERS, tablefmt="simple", disable_numparse=True)
    return f"{title}\n\n{table}\n"


_EXPLAIN_COLUMNS = (
    "batch_size",
    "batches",
    "last_batch",
    "sum_of_averages",
    "normalized_sum",
    "normalized_sum_error",
    "average_of_averages",
    "average_of_averages_error",
)
_EXPLAIN_HEADERS = (
    "batch size",
    "batches",
    "last batch",
    "sum of averages",
    "normalized sum",
    "error",
    "average of averages",
    "error",
)
EXPLAIN_NOTE = (
    "Only the exact loss sum and loss per item can be compared across batch sizes: they add up "
    "every item's own loss, however the items are batched.",
    "The sum of averages (`epoch_loss += loss.item()`) shrinks as the batch size grows, so it "
    "cannot; the normalized sum and the average of averages equal the exact figures only when "
    "every batch, the last included, has the same size.",
)


def render_explain(report: ExplainReport, fmt: str) -> str:
    """The `explain` report as one string in format ``fmt``."""
    if fmt == "json":
        return to_json(report.to_dict())
    if fmt == "csv":
        return _explain_csv(report)
    rows = [
        [
            _error(getattr(r, c)) if c.endswith("_error") else _cell(getattr(r, c))
            for c in _EXPLAIN_COLUMNS
        ]
        for r in report.rows
    ]
    rows.append(["exact", "", "", "", _cell(report.loss_sum), "", _cell(report.per_item), ""])
    title = (
        f"{report.loss} loss of {report.checkpoint} over {report.items} items of "
        f"{report.data.path} ({report.precision}, {report.device}), as a training log would "
        "print it at each batch size"
    )
    note = list(EXPLAIN_NOTE)
    if report.nonfinite_items:
        note.insert(0, f"{report.nonfinite_items} items have a non-finite loss: no figure exists.")
    if fmt == "markdown":
        table = tabulate(rows, _EXPLAIN_HEADERS, tablefmt="github", disable_numparse=True)
        return f"{title}.\n\n{table}\n\n{' '.join(note)}\n"
    table = tabulate(rows, _EXPLAIN_HEADERS, tablefmt="simple", disable_numparse=True)
    return f"{title}\n\n{table}\n\n" + "".join(f"{line}\n" for line in note)


def _explain_csv(report: ExplainReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*_EXPLAIN_COLUMNS, "loss_sum", "per_item", "items"])
    for r in report.rows:
        writer.writerow(
            [_field(getattr(r, c)) for c in _EXPLAIN_COLUMNS]
            + [_raw(report.loss_sum), _raw(report.per_item), str(report.items)]
        )
    return out.getvalue()


def _field(value: float | None) -> str:
    return _raw(value) if isinstance(value, float) or value is None else str(value)


def _error(value: float | None) -> str:
    """A relative error as a signed percentage; tiny rounding noise shows as +0.00%."""
    if value is None:
        return "-"
    return "0%" if value == 0 else f"{value:+.2%}"


def to_json(document: Any) -> str:
    """Strict JSON: keys sorted, no NaN or Infinity tokens."""
    return json.dumps(document, sort_keys=True, indent=2, allow_nan=False) + "\n"


def _csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*_COLUMNS[:4], "path", "items", "accuracy", "nonfinite_items"])
    for m in report.models:
        writer.writerow(
            [
                m.rank,
                m.name,
                _raw(m.loss_per_item),
                _raw(m.loss_sum),
                m.path,
                m.items,
                _raw(m.accuracy),
                m.nonfinite_items,
            ]
        )
    return out.getvalue()


def _raw(value: float | None) -> str:
    return "" if value is None else repr(value)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.6e}"
    return str(value)


def write(text: str, output: str | os.PathLike[str] | None) -> None:
    """Print ``text``, or write it to ``output`` atomically: complete or not at all."""
    if output is None:
        print(text, end="", flush=True)
        return
    target = Path(output)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).replace(target)
    except BaseException:
        with contextlib.suppress(OSError):
            Path(tmp).unlink()
        raise
