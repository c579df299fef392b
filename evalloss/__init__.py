"""evalloss: the exact per-item loss of PyTorch checkpoints over a whole data set.

``import evalloss`` is cheap: torch, pyarrow and numpy load only when a function that needs
them is first used (PEP 562 ``__getattr__``).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from . import report as _report
from ._version import __version__
from .errors import (
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
    "__version__",
    "compare",
    "evaluate",
    "explain",
    "save",
]

_LAZY = {
    "compare": "api",
    "evaluate": "engine",
    "save": "models.save",
    "Report": "report",
    "Result": "report",
    "explain": "explainer",
    "ExplainReport": "report",
}

if TYPE_CHECKING:
    from .api import compare
    from .engine import evaluate
    from .explainer import explain
    from .models.save import save
    from .report import ExplainReport, Report, Result


def _html(report: Any) -> str:
    from .render import html

    return html.render(report)


def _explain_html(report: Any) -> str:
    from .render import explain

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
