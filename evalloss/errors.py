"""The one error tree. Every user-facing failure is an `EvallossError` with an exit code.

Each error renders as one line, ``<file>[:<line>][: <column or key>]: <what>``, which the CLI
prefixes with ``evalloss: error:``. Third-party errors are wrapped where they enter, keeping
the cause (``raise DataError(...) from exc``).
"""

from __future__ import annotations

from pathlib import Path


def shown(value: object, limit: int = 60) -> str:
    """A value read from a file or typed by a user, quoted for a one-line message: ``repr``
    escapes every control character (CR, LF, ESC of an ANSI sequence, line and paragraph
    separators, bidi overrides), so no message can split its line or repaint a terminal. Cut
    to about ``limit`` characters."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def one_line(text: str) -> str:
    """``text`` safe for one terminal line: a line break becomes a space, and every other
    character that is not printable (CR, ESC, line separators, bidi overrides, ...) its escape,
    so no message, whatever a file put in it, can split its line or repaint the terminal."""
    text = text.replace("\r\n", " ").replace("\n", " ")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


_KEY_LIMIT = 120


class EvallossError(Exception):
    """Base of every error evalloss reports to a user. Exit code 2: usage or input error."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = None if path is None else str(path)
        self.line = line
        self.key = key

    def __str__(self) -> str:
        where = self.path or ""
        if self.line is not None:
            where += f":{self.line}"
        key = self.key
        if key is not None and len(key) > _KEY_LIMIT:  # e.g. a 100 KB column name
            key = f"{key[:_KEY_LIMIT]}... ({len(key)} characters)"
        parts = [p for p in (where, key) if p]
        return one_line(": ".join([*parts, self.message]))


class DataError(EvallossError):
    """The data file is missing, malformed, or does not fit the model or loss."""


class CheckpointError(EvallossError):
    """A checkpoint cannot be read, is not safetensors, or does not fit its architecture."""


class ModelError(EvallossError):
    """The architecture cannot be built, or the model misbehaves while evaluating."""


class LossError(EvallossError):
    """Unknown loss, disagreeing loss metadata, or outputs/targets the loss cannot take."""


class OptionError(EvallossError):
    """An option value that is well-formed but meaningless (the library's own checks)."""


class PeerError(EvallossError):
    """Under torchrun, another process died or stalled: the run cannot finish. Exit 4."""

    exit_code = 4


class EvallossWarning(UserWarning):
    """Something the user should know that does not stop the run (e.g. NaN weights)."""
