"""The format registry: a report -> text. One module per format, imported on use.

Each format module has ``render(report) -> str``. A new format is one module here plus one
line in `FORMATS`. ``explain`` reports render through `explain`; ``--plot`` is `plot`.
Importing this package imports neither tabulate nor torch (``--help`` stays fast).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from evalloss.report import Report

# format name -> module in this package
FORMATS: dict[str, str] = {
    "table": "table",
    "json": "jsonformat",
    "markdown": "markdown",
    "csv": "csvformat",
    "html": "html",
}


# formats read by people in a terminal or a page: no control character may reach them
TEXT_FORMATS = ("table", "markdown")


def render(report: Report, fmt: str) -> str:
    """The whole report as one string in format ``fmt``. In the text formats every name that
    came from a file (paths, model names, columns) has its control characters escaped
    (`errors.one_line`): a file name cannot split a line or repaint the terminal."""
    from evalloss.render.cells import displayable

    module = import_module(f".{FORMATS[fmt]}", __name__)
    text: str = module.render(displayable(report) if fmt in TEXT_FORMATS else report)
    return text
