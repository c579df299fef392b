"""``csv``: one row per model, in rank order, the JSON fields flattened (``vs_baseline.delta``)."""

from __future__ import annotations

import csv
import io
from typing import Any

from evalloss.report import Report

from .cells import raw


def render(report: Report) -> str:
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
