"""``json``: the contract's report (docs/report-schema.json)."""

from __future__ import annotations

from evalloss.report import Report

from .cells import to_json


def render(report: Report) -> str:
    return to_json(report.to_dict())
