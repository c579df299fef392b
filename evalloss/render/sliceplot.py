"""``--plot`` with ``--slice`` and ``--baseline``: the winner's paired delta on every slice,
with its 95% CI, worst regression first (at most `MAX_SLICES`, the rest counted)."""

from __future__ import annotations

from typing import Any

from evalloss.render.slicetable import value
from evalloss.report import Report

MAX_SLICES = 30  # slices drawn; more are counted in the title


def wanted(report: Report) -> bool:
    """Whether the figure gets the per-slice panel."""
    return bool(report.slicing) and any(m.vs_baseline is not None for m in report.models)


def draw(ax: Any, report: Report, colour: str) -> None:
    """The winner's slices: delta and 95% CI against the baseline, worst first."""
    winner = next(m for m in report.models if m.vs_baseline is not None)
    pieces = [s for s in winner.slices if s.vs_baseline is not None
              and s.vs_baseline.delta is not None]  # fmt: skip
    pieces.sort(key=lambda s: -(s.vs_baseline.delta or 0.0) if s.vs_baseline else 0.0)
    shown = pieces[:MAX_SLICES]
    for y, piece in enumerate(reversed(shown)):
        vs = piece.vs_baseline
        assert vs is not None and vs.delta is not None
        low, high = vs.ci95 if vs.ci95 is not None else (vs.delta, vs.delta)
        ax.errorbar(vs.delta, y, xerr=[[vs.delta - low], [high - vs.delta]], fmt="o",
                    color=colour, capsize=3, markersize=4)  # fmt: skip
    labels = [f"{piece.column}={value(piece)} ({piece.items})" for piece in reversed(shown)]
    ax.set_yticks(range(len(shown)), labels, fontsize=8)
    ax.axvline(0, color="black", linewidth=1)
    more = f" ({len(pieces) - len(shown)} more not drawn)" if len(pieces) > len(shown) else ""
    ax.set_title(f"{winner.name} against the baseline per slice, worst first{more}", fontsize=10)
    ax.set_xlabel("mean difference on the slice with its 95% CI (exact)")
    ax.grid(alpha=0.25, axis="x")
