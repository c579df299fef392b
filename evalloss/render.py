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

from .report import Report

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
