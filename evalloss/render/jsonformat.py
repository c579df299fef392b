"""``json``: the contract's report (docs/report-schema.json)."""

from __future__ import annotations

from evalloss.render.cells import to_json
from evalloss.report import Report


def render(report: Report) -> str:
    return to_json(report.to_dict())
