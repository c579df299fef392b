"""evalloss: the exact per-item loss of PyTorch checkpoints over a whole data set.

``import evalloss`` is cheap: torch, pyarrow and numpy load only when a function that needs
them is first used (PEP 562 ``__getattr__``).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from evalloss import report as _report
from evalloss._version import __version__
from evalloss.errors import (
    CheckpointError,
    DataError,
    EvallossError,
    EvallossWarning,
    LossError,
    ModelError,
    OptionError,
    PeerError,
)

__all__ = [
    "CheckpointError",
    "DataError",
    "EvallossError",
    "EvallossWarning",
    "ExplainReport",
    "LossError",
    "ModelError",
    "OptionError",
    "PeerError",
    "Report",
    "Result",
    "RunningLoss",
    "__version__",
    "compare",
    "evaluate",
    "explain",
    "save",
]

_LAZY = {
    "compare": "api",
    "evaluate": "run.engine",
    "save": "models.save",
    "Report": "report",
    "Result": "report",
    "explain": "explainer.table",
    "ExplainReport": "report",
    "RunningLoss": "run.running",
}

if TYPE_CHECKING:
    from evalloss.api import compare
    from evalloss.explainer.table import explain
    from evalloss.models.save import save
    from evalloss.report import ExplainReport, Report, Result
    from evalloss.run.engine import evaluate
    from evalloss.run.running import RunningLoss


def _html(report: Any) -> str:
    from evalloss.render import html

    return html.render(report)


def _explain_html(report: Any) -> str:
    from evalloss.render import explain

    return explain.render(report, "html")


# The package root wires the layers: the ground layer's reports show as HTML in Jupyter
# through the renderers above it, imported on first display (`report.VIEWS`).
_report.VIEWS.update({"html": _html, "explain-html": _explain_html})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'evalloss' has no attribute {name!r}")
