"""``csv``: one row per model, in rank order, the JSON fields flattened (``vs_baseline.delta``)."""

from __future__ import annotations

import csv
import io
from typing import Any

from evalloss.render.cells import raw
from evalloss.report import Report


def render(report: Report) -> str:
    """One row per model, in rank order; nested JSON fields flattened with dots, then the
    checkpoint's sha256 (from the provenance) when the files were hashed."""
    hashes = (report.provenance.sha256 if report.provenance else None) or {}
    models = report.to_dict()["models"]
    rows = [_flatten({k: v for k, v in m.items() if k != "slices"}) for m in models]
    if hashes:
        for row in rows:
            row["sha256"] = hashes.get(row["path"])
    rows += _slice_rows(models)
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([raw(row.get(c)) for c in columns])
    return out.getvalue()


def _slice_rows(models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """With ``--slice``: one more row per model and slice, after the models' rows: the
    model's rank, name and path, ``slice.column`` and ``slice.value`` (a bin's edges in
    ``slice.range.low``/``high``), then the slice's figures under the models' column names."""
    rows = []
    for model in models:
        for piece in model.get("slices", ()):
            row = {"rank": model["rank"], "name": model["name"], "path": model["path"]}
            low, high = piece["range"] or (None, None)
            row |= {"slice.column": piece["column"], "slice.value": piece["value"],
                    "slice.range.low": low, "slice.range.high": high}  # fmt: skip
            rest = {k: v for k, v in piece.items() if k not in ("column", "value", "range")}
            if "vs_baseline" in piece and piece["vs_baseline"] is None:
                rest["vs_baseline"] = None
            rows.append(row | _flatten(rest))
    return rows


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
