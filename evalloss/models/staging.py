"""A checkpoint in object storage: its header checked first, its bytes staged only then.

safetensors reads a local file, so an object is handled in two steps. At open, only the
header is fetched (ranged reads): it is parsed and validated by the safetensors library
itself against a sparse local stand-in (the header, then a hole as long as the tensor data),
so a hostile header is refused before a byte of tensor data is downloaded. At load, the object
is streamed into a private temp file (a folder only this user can read, removed after the
load), hashed as the bytes arrive (the provenance and the result cache reuse that sha256),
and refused if its header is not the one validated or its ETag changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from evalloss.errors import CheckpointError
from evalloss.io import hashing, remote

PIECE = 16 << 20  # bytes per ranged read while staging
_HEADERS: dict[tuple[str, tuple[int, int]], bytes] = {}  # the header validated at open


@contextlib.contextmanager
def stand_in(uri: str, opened: tuple[int, int], head: bytes) -> Iterator[str]:
    """A sparse local file as long as the object, holding only its header ``head`` (length
    prefix and JSON): what the safetensors library validates without the tensor data."""
    folder = tempfile.mkdtemp(prefix="evalloss-header-")
    try:
        local = Path(folder) / "header.safetensors"
        with open(local, "wb") as f:
            f.write(head)
            f.truncate(opened[0])
        _HEADERS[(uri, opened)] = head
        yield str(local)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def staged(uri: str, opened: tuple[int, int]) -> Iterator[str]:
    """The object's bytes in a private temp file, hashed on the way (`hashing.remember`)."""
    folder = tempfile.mkdtemp(prefix="evalloss-checkpoint-")  # mode 0700
    try:
        local = Path(folder) / "model.safetensors"
        _download(uri, opened, local)
        yield str(local)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _download(uri: str, opened: tuple[int, int], local: Path) -> None:
    head = _HEADERS.get((uri, opened))
    digest = hashlib.sha256()
    try:
        with remote.open_binary(uri, CheckpointError, buffered=False) as source, \
                open(local, "wb") as out:  # fmt: skip
            while piece := source.read(PIECE):
                digest.update(piece)
                out.write(piece)
            written = out.tell()
        with open(local, "rb") as f:
            same = head is not None and f.read(len(head)) == head
    except OSError as exc:  # the local disk: full, or an unwritable TMPDIR
        raise CheckpointError(f"cannot stage it in {tempfile.gettempdir()} "
                              f"({exc.strerror or exc})", path=uri) from exc  # fmt: skip
    if not same or written != opened[0]:  # not the header validated, or not the object
        raise remote.changed(uri, CheckpointError)
    hashing.remember(uri, opened, digest)
