"""The one exit-code mapping: every outcome of a command -> its documented code and stderr line.

0 report produced (gate passed or none) · 1 gate failed · 2 usage or input error (one line on
stderr) · 3 internal error (traceback) · 4 a torchrun peer died or stalled · 130/143
SIGINT/SIGTERM · 141 stdout closed early.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import click

from evalloss._version import __version__
from evalloss.errors import EvallossError, one_line

EXIT_OK, EXIT_GATE, EXIT_USAGE, EXIT_BUG, EXIT_PEER = 0, 1, 2, 3, 4
EXIT_SIGINT, EXIT_SIGTERM, EXIT_PIPE = 130, 143, 141


class GateFailed(Exception):  # noqa: N818 - a verdict, not an error
    """Raised by a command after printing its report when the promotion gate failed."""


class _Terminated(BaseException):  # like KeyboardInterrupt: no `except Exception` catches it
    """SIGTERM arrived."""


class _Interrupted(BaseException):
    """SIGINT (KeyboardInterrupt) arrived while a command ran."""


class _PipeClosed(BaseException):
    """stdout's reader went away (EPIPE)."""


def _on_signal(signum: int, frame: Any) -> None:
    """The first SIGINT or SIGTERM ends the command; any more in a burst are ignored, so the
    one line and the one exit code (130 or 143) are never interrupted themselves."""
    for held in _SIGNALS:
        signal.signal(held, signal.SIG_IGN)
    _received.append(signum)
    raise _Terminated if signum == signal.SIGTERM else _Interrupted


_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []  # signals that ended a command in this process


def error_line(message: str) -> None:
    """``evalloss: error: <message>``: one line on stderr, whatever the message holds."""
    with contextlib.suppress(OSError):  # stderr closed too (`2>&1 | head`): the code still holds
        click.echo(f"evalloss: error: {one_line(message)}", err=True)


@contextlib.contextmanager
def warnings_as_lines() -> Iterator[None]:
    """Print every warning as one stderr line, ``evalloss: warning: <what>``, escaped: ours as
    they are, a library's (e.g. torch's on odd weights) with its category and first line."""
    from evalloss.errors import EvallossWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", EvallossWarning)

        def show(message: Warning | str, category: type[Warning], *args: Any, **kw: Any) -> None:
            text = str(message)
            if not issubclass(category, EvallossWarning):
                first = (text.strip().splitlines() or [""])[0]
                text = f"{category.__name__}: {first}"
            with contextlib.suppress(OSError):
                click.echo(f"evalloss: warning: {one_line(text)}", err=True)

        warnings.showwarning = show
        yield


class EvallossGroup(click.Group):
    """Maps every outcome to the documented exit code, so CliRunner sees the real codes."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command. Ctrl-C and a closed pipe leave as our own exceptions, past click's
        handlers (which would print a blank line for Ctrl-C and exit 1 on EPIPE)."""
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            raise _PipeClosed from exc
        except KeyboardInterrupt as exc:
            raise _Interrupted from exc

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        """Parse the top-level arguments; ``--help | head`` is a closed pipe like any other."""
        try:
            return super().make_context(*args, **kwargs)
        except BrokenPipeError as exc:
            raise _PipeClosed from exc

    def main(self, args: Sequence[str] | None = None, **extra: Any) -> Any:  # type: ignore[override]
        if extra.get("standalone_mode") is False:  # a caller that wants exceptions back
            return super().main(args, **extra)
        main_thread = threading.current_thread() is threading.main_thread()
        previous = [signal.signal(s, _on_signal) for s in _SIGNALS] if main_thread else []
        _received.clear()
        try:
            super().main(args, standalone_mode=False, **extra)
            code = EXIT_OK
        except BaseException as exc:  # every outcome has its code, mapped here only
            code = exit_code(_signalled(exc))
        if not _received:  # after a signal, the rest of a burst stays ignored until the exit
            for held, handler in zip(_SIGNALS, previous, strict=False):
                signal.signal(held, signal.SIG_DFL if handler is None else handler)
        sys.exit(code)


# Outcomes that are not errors of the input: (kinds, exit code, stderr line or None)
_OUTCOMES: tuple[tuple[tuple[type[BaseException], ...], int, str | None], ...] = (
    ((GateFailed,), EXIT_GATE, None),
    ((click.Abort, KeyboardInterrupt, _Interrupted), EXIT_SIGINT,
     "interrupted (SIGINT); no report written"),
    ((_Terminated,), EXIT_SIGTERM, "terminated (SIGTERM); no report written"),
    ((BrokenPipeError, _PipeClosed), EXIT_PIPE, None),
)  # fmt: skip


def _signalled(exc: BaseException) -> BaseException:
    """What ended the command: a signal that arrived wins over an error raised after it. A C
    extension that runs Python while it works (safetensors' and torch's loaders do) can turn the
    handler's exception into an error of its own ("could not determine the shape of object
    type ..."): the signal, not that error, ended the run."""
    if not _received or isinstance(exc, (GateFailed, _Terminated, _Interrupted, KeyboardInterrupt)):
        return exc
    return _Terminated() if _received[0] == signal.SIGTERM else _Interrupted()


def exit_code(exc: BaseException) -> int:
    """The documented exit code of what ended a command, its one stderr line printed."""
    if isinstance(exc, EvallossError):
        if not getattr(exc, "quiet", False):  # under torchrun, rank 0 alone reports it
            error_line(str(exc))
        return exc.exit_code
    if isinstance(exc, click.ClickException):  # a usage error, a missing file for click.Path
        error_line(exc.format_message())
        return EXIT_USAGE
    if isinstance(exc, click.exceptions.Exit):  # --help, --version
        return exc.exit_code
    for kinds, code, line in _OUTCOMES:
        if isinstance(exc, kinds):
            if line is not None:
                error_line(line)
            if code == EXIT_PIPE:
                _quiet_stdout()
            return code
    traceback.print_exception(exc)
    error_line(f"internal error in evalloss {__version__}: please report it with the above")
    return EXIT_BUG


def _quiet_stdout() -> None:
    """After EPIPE, point stdout at devnull so the interpreter's final flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
