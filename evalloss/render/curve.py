"""A Trainer run's curve (`Report.stepped`): the models with a step, in step order, the exact
figure beside the ``eval_loss`` the run logged at that step (docs/fine-tuning.md).

Every format shows the table (`table`) where some model has a step; the HTML report and
``--plot`` draw the two curves (`drawn`) where two or more have one. The ranking is not
changed: it is by the exact figure.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from evalloss.render.cells import cell
from evalloss.report import ModelResult, Report

HEADERS = ("step", "model", "exact loss/{unit}", "logged eval_loss", "logged vs exact")
EXACT = "exact (evalloss)"
LOGGED = "logged eval_loss (Trainer)"


@dataclass(frozen=True)
class CurveTable:
    """The curve as a table: its title, headers and rows of cells (plain text)."""

    title: str
    headers: tuple[str, ...]
    rows: list[list[str]]


def exact(model: ModelResult) -> float | None:
    """The figure the logged eval_loss stands beside: per token for a token loss."""
    return model.loss_per_token if model.tokens is not None else model.loss_per_item


def per(report: Report) -> str:
    return "token" if report.per_token else "item"


def relative(model: ModelResult) -> float | None:
    """(logged - exact) / |exact|; None where either is missing or the exact figure is 0."""
    truth, logged = exact(model), model.logged_eval_loss
    if truth is None or logged is None or truth == 0:
        return None
    return (logged - truth) / abs(truth)


def table(report: Report, name: Callable[[ModelResult], str] | None = None) -> CurveTable | None:
    """The models with a step, in step order (None where there is none)."""
    if not report.stepped:
        return None
    rows = []
    for m in report.stepped:
        off = relative(m)
        rows.append([str(m.step), m.name if name is None else name(m), cell(exact(m)),
                     cell(m.logged_eval_loss), "-" if off is None else f"{off:+.2%}"])  # fmt: skip
    title = (f"the Trainer checkpoints in step order: the exact loss per {per(report)} beside "
             "the eval_loss Trainer logged at that step")  # fmt: skip
    return CurveTable(title, tuple(h.format(unit=per(report)) for h in HEADERS), rows)


def drawn(report: Report) -> bool:
    """Two or more models with a step: a curve to draw."""
    return len(report.stepped) >= 2


def series(report: Report) -> dict[str, list[tuple[int, float]]]:
    """The two curves as (step, value) points: the exact one and the logged one (missing
    values left out)."""
    out: dict[str, list[tuple[int, float]]] = {EXACT: [], LOGGED: []}
    for m in report.stepped:
        assert m.step is not None
        for label, value in ((EXACT, exact(m)), (LOGGED, m.logged_eval_loss)):
            if value is not None:
                out[label].append((m.step, value))
    return out


def axes(ax: Any, report: Report) -> None:
    """The two curves on a matplotlib axes (`render.plot`)."""
    for (label, points), style in zip(series(report).items(), ("o-", "s--"), strict=True):
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, style, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(f"loss per {per(report)}")
    ax.set_title("the run's curve: exact against logged")
    ax.legend()
