"""GitHub Actions, when ``GITHUB_ACTIONS=true``: the verdict as a workflow annotation, the
Markdown report in the job summary, and step outputs.

- ``::error title=evalloss::<verdict>`` when the gate fails, ``::notice title=evalloss::...``
  otherwise, on stderr (the runner reads workflow commands there too, and stdout carries the
  report alone); the text escaped as the runner wants (``%``, CR, LF).
- the Markdown report appended to ``$GITHUB_STEP_SUMMARY``;
- ``passed`` (true, false, or empty without a gate), ``winner`` (its path) and ``report``
  (the ``-o`` path) appended to ``$GITHUB_OUTPUT``.

A summary or output file that cannot be written is one warning line: the report and the exit
code stand.
"""

from __future__ import annotations

import os
import secrets
import warnings

import click

from evalloss.errors import EvallossWarning
from evalloss.report import Report


def active() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def publish(report: Report, output: str | None) -> None:
    """Annotate, summarise and set the outputs of this step (rank 0 only, by the caller)."""
    from evalloss import render
    from evalloss.render.cells import displayable, verdict

    line = verdict(displayable(report)) or _best(report)
    failed = report.gate is not None and not report.gate.passed
    kind = "error" if failed else "notice"
    click.echo(f"::{kind} title=evalloss::{escape(line)}", err=True)
    _append("GITHUB_STEP_SUMMARY", render.render(report, "markdown"))
    passed = "" if report.gate is None else str(report.gate.passed).lower()
    winner = "" if report.gate is None or report.gate.winner is None else report.gate.winner
    _append("GITHUB_OUTPUT", _outputs({"passed": passed, "winner": winner, "report": output or ""}))


def escape(text: str) -> str:
    """A workflow command's message, escaped: ``%``, then CR and LF."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _best(report: Report) -> str:
    best = report.models[0] if report.models else None
    figure = "-" if best is None or best.figure is None else f"{best.figure:.6g}"
    return f"best model {best.name if best else '-'}: {figure}"


def _outputs(values: dict[str, str]) -> str:
    """``name<<DELIMITER`` blocks: safe for any value (a path may hold anything)."""
    lines = []
    for name, value in values.items():
        delimiter = f"EVALLOSS_{secrets.token_hex(8)}"
        lines += [f"{name}<<{delimiter}", value, delimiter]
    return "\n".join(lines) + "\n"


def _append(variable: str, text: str) -> None:
    path = os.environ.get(variable)
    if not path:
        return
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")
    except OSError as exc:
        warnings.warn(
            f"cannot write ${variable} ({exc.strerror or exc}); the report stands",
            EvallossWarning,
            stacklevel=2,
        )
