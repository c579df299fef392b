"""Every file evalloss writes: pre-checks, the one atomic writer, and the report's way out.

``check_output`` runs before any evaluation: a URI, a missing or unwritable folder, or an
output path that is one of the inputs, is refused at once. `Atomic` is the one way a file is
written (the report, ``--per-item``, ``--plot``, `evalloss.save`): a temp file in the same
folder, fsynced, given the usual permissions, then renamed over the target; on any error or
signal the old target stays as it was and the temp file is removed. ``write`` puts a finished
text on stdout or through `Atomic` into ``--output``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from evalloss.errors import OptionError
from evalloss.io import remote


def check_outputs(
    outputs: Mapping[str, str | os.PathLike[str] | None],
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> None:
    """`check_output` for each ``{option: path}`` given, and no two of them the same file."""
    given = [(option, path) for option, path in outputs.items() if path is not None]
    inputs = list(inputs)  # read once per output
    for option, path in given:
        check_output(path, inputs, option=option)
    for i, (option, path) in enumerate(given):
        for other, earlier in given[:i]:
            if _same_file(Path(path), Path(earlier)):
                raise OptionError(
                    f"the same file as {other}; refusing to overwrite it",
                    path=Path(path),
                    key=option,
                )


def local_only(path: str | os.PathLike[str], option: str) -> None:
    """Refuse a URI (``s3://``, ``gs://``, ``file://``, ...) where a local path is written:
    pathlib would make ``s3://b/r.json`` the local ``s3:/b/r.json``, written wherever a folder
    ``s3:`` happens to exist. Outputs are never written to object storage (a rename, what
    makes a local write atomic, is not something a bucket has)."""
    text = os.fspath(path)
    if remote.is_uri(text):
        why = ("the cache is a local folder" if option == "--cache" else
               "outputs are local files: write it to a local path and copy it (aws s3 cp, "
               "gcloud storage cp)")  # fmt: skip
        raise OptionError(f"is a URI: {why}", path=text, key=option)


def check_output(
    output: str | os.PathLike[str] | None,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
    *,
    option: str = "--output",
) -> None:
    """Refuse, before any evaluation, an ``output`` that cannot be written or is an input.

    A missing or unwritable folder, a folder given as the file, and a path that is one of
    ``inputs`` (a checkpoint, the data file, the model's file) are all `OptionError`s.
    """
    if output is None:
        return
    local_only(output, option)
    shown = Path(output)
    try:
        target = shown if _special(shown) else _real(shown)
    except (OSError, RuntimeError) as exc:  # a symlink loop
        raise OptionError(f"cannot follow it ({exc})", path=shown, key=option) from exc
    folder = target.parent
    if target.is_dir():
        raise OptionError("is a folder, not a file path", path=shown, key=option)
    if not folder.is_dir():
        why = f"no such folder {str(folder)!r}"
        if folder.exists():
            why = f"{str(folder)!r} is not a folder"
        raise OptionError(why, path=shown, key=option)
    for given in inputs:
        if given is not None and _same_file(target, Path(given)):
            raise OptionError(
                f"is one of the inputs ({os.fspath(given)}); refusing to overwrite it",
                path=shown,
                key=option,
            )
    if _special(target):  # /dev/stdout, /dev/null, a FIFO: written in place, no temp file
        return
    try:  # the one reliable test: permissions, read-only mounts, quotas, ACLs
        with _signals_held():  # never leave the probe behind
            fd, probe = tempfile.mkstemp(
                dir=folder, prefix=_temp_prefix(target.name), suffix=".tmp"
            )
            os.close(fd)
            Path(probe).unlink()
    except OSError as exc:
        raise OptionError(
            f"cannot write to folder {str(folder)!r} ({exc.strerror or exc})",
            path=shown,
            key=option,
        ) from exc


def stamp(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(size, modification time in ns) of a file: what tells that it changed (0, 0 if gone).
    An object in storage (a URI): (size, a number made from its ETag), `remote.stamp`."""
    if remote.is_uri(path):
        return remote.stamp(str(path))
    try:
        info = Path(path).stat()
    except OSError:
        return (0, 0)
    return (info.st_size, info.st_mtime_ns)


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return a.samefile(b)
        return a.resolve() == b.resolve()
    except (OSError, ValueError):
        return False


def write(
    text: str,
    output: str | os.PathLike[str] | None,
    inputs: Iterable[str | os.PathLike[str] | None] = (),
) -> None:
    """Print ``text``, or write it to ``output`` atomically: complete or not at all.

    The text goes to a temporary file in the target's folder, is flushed and fsynced, then
    renamed over the target. On any error or signal the old target stays as it was and the
    temporary file is removed. The new file gets the old one's permissions (else 0666 - umask).
    A symlink is followed (its target gets the report); a device or FIFO (``/dev/stdout``)
    is written in place. A failed write (full disk, ...) is an `OptionError`.
    """
    try:
        _write(text, output, [p for p in inputs if p is not None])
    except BrokenPipeError:
        raise  # the reader went away: the CLI exits 141, quietly
    except OSError as exc:  # a full disk, a vanished folder, an I/O error
        why = exc.strerror or str(exc)
        if output is None:
            raise OptionError(f"cannot write the report to stdout ({why})") from exc
        raise OptionError(
            f"cannot write it ({why}); no report written", path=Path(output), key="--output"
        ) from exc


def _write(
    text: str, output: str | os.PathLike[str] | None, inputs: Iterable[str | os.PathLike[str]]
) -> None:
    if output is None:
        _to_stdout(text)
        return
    if _special(Path(output)):  # /dev/stdout, a FIFO: no rename possible, and nothing to tear
        with open(output, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        return
    with atomic(output, inputs) as tmp, open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def _to_stdout(text: str) -> None:
    """The whole text on stdout, or an error: a closed stdout (``>&-``) is not a report."""
    import sys

    out = sys.stdout
    if out is None or out.closed:
        raise OSError(errno.EBADF, "stdout is closed")
    raw = getattr(out, "buffer", None)
    if raw is None:  # a text-only stream
        out.write(text)
        out.flush()
        return
    out.flush()
    # BufferedWriter.write may write a large text only in part to a pipe whose reader left
    # (and TextIOWrapper ignores that): loop, so the rest fails with EPIPE -> exit 141
    data = memoryview(text.encode(out.encoding or "utf-8", out.errors or "strict"))
    while data:
        data = data[raw.write(data) :]
    raw.flush()


class Atomic:
    """A file that appears at ``target`` complete or not at all.

    Write to ``tmp`` (a new empty file in the target's folder), then `commit`: fsync, the old
    target's permissions (else 0666 - umask, like any new file), rename over the target. `abort`
    (or a failed commit) removes ``tmp``. A symlink target is followed: the file it points to
    is replaced. The temp name is cut to fit the folder's name limit.
    """

    def __init__(
        self, target: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]] = ()
    ) -> None:
        local_only(target, "--output")
        self.given = Path(target)
        self.inputs = [Path(p) for p in inputs]
        self.target = _real(self.given)
        with _signals_held():  # no signal between creating the file and knowing its name
            fd, name = tempfile.mkstemp(
                dir=self.target.parent, prefix=_temp_prefix(self.target.name), suffix=".tmp"
            )
        os.close(fd)
        self.tmp = Path(name)

    def commit(self) -> None:
        """Put the file in place, unless the target became an input meanwhile (e.g. a
        symlink to one made while the run was going): then `OptionError`, and nothing moves."""
        try:
            with open(self.tmp, "rb+") as f:
                os.fsync(f.fileno())
            if hasattr(os, "chmod"):
                self.tmp.chmod(_mode_for(self.target))
            if _real(self.given) != self.target or any(
                _same_file(self.target, p) for p in self.inputs
            ):
                raise OptionError(
                    "became one of the inputs (or a link to one) during the run; not written",
                    path=self.given,
                )
            self.tmp.replace(self.target)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.tmp.unlink()


@contextlib.contextmanager
def atomic(
    target: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]] = ()
) -> Iterator[Path]:
    """``with atomic(path) as tmp:`` write ``tmp``; it becomes ``path`` when the block ends
    without an error (`Atomic`), unless it became one of ``inputs`` meanwhile."""
    file = Atomic(target, inputs)
    try:
        yield file.tmp
    except BaseException:
        file.abort()
        raise
    file.commit()


def _temp_prefix(name: str, limit: int = 255) -> str:
    """``.NAME.``, NAME cut so that the temp name (prefix, 8 random characters, ``.tmp``) fits
    a file-name limit of ``limit`` bytes."""
    room = limit - len(".") - len(".") - 8 - len(".tmp")
    raw = name.encode()
    if len(raw) > room:
        name = raw[:room].decode(errors="ignore")
    return f".{name}."


def _real(path: Path) -> Path:
    """``path``, or where it points if it is a symlink (a new file there if it dangles)."""
    return path.resolve() if path.is_symlink() else path


def _special(path: Path) -> bool:
    """An existing path that is neither a regular file nor a folder: a device, FIFO, socket."""
    return path.exists() and not path.is_file() and not path.is_dir()


def _mode_for(target: Path) -> int:
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Defer SIGINT and SIGTERM for the duration (POSIX; elsewhere a no-op)."""
    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
