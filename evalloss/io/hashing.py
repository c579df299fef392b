"""Every sha256 evalloss takes: of each file (or object) once per process while it stays put,
started ahead on a thread of its own where a run will need it, or fed on a thread while a reader
streams the same bytes (`Digest`). The report's provenance and the cache's keys rest on them."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from pathlib import Path

from evalloss.io import remote
from evalloss.io.files import stamp

# a hashing thread's reads: 1.9 GB hashed in 2.0 s beside a busy main thread, 2.9 s in 16 MiB
HASH_BYTES = 64 << 20
REMOTE_BYTES = 16 << 20  # an object's ranged reads


class Digest:
    """A sha256 fed on a thread of its own: ``update`` hands the bytes over (they must not
    change after) and returns at once, so the hashing overlaps with the parse of the same
    bytes (hashlib releases the GIL); ``hexdigest`` waits for the rest. It starts with the
    file's first ``head`` bytes (the header line, which the parse does not read as a range)."""

    def __init__(self, path: str, head: int) -> None:
        import queue

        self._sha = hashlib.sha256()
        with remote.open_binary(path) as f:
            self._sha.update(f.read(head))
        self._todo: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
        self._thread = threading.Thread(target=self._run, name="evalloss-sha256", daemon=True)
        self._thread.start()

    def update(self, data: bytes) -> None:
        self._todo.put(data)

    def hexdigest(self) -> str:
        self.close()
        self._thread.join()
        return self._sha.hexdigest()

    def close(self) -> None:
        """Let the thread end once it has hashed what it has (again: nothing)."""
        if self._thread.is_alive():
            self._todo.put(None)

    def _run(self) -> None:
        while (data := self._todo.get()) is not None:
            self._sha.update(data)


# (path, *stamp) -> hex sha256: files hashed once per process, objects as they streamed by
_HASHED: dict[tuple[str, int, int], str] = {}
_AHEAD: dict[tuple[str, int, int], Future[str]] = {}
_LOCK = threading.Lock()


def sha256_of(path: str) -> str:
    """The hex sha256 of the file (or object), read in ranges; once per process while its
    size and modification time (an object's ETag) stay (a cache key and the provenance ask for
    the same checkpoint).
    A file `hash_ahead` is hashing is waited for, not read again."""
    known = _known(path)
    with _LOCK:
        done, pending = _HASHED.get(known), _AHEAD.get(known)
    if done is not None:
        return done
    if pending is not None and pending.exception() is None:
        return pending.result()
    digest = _hash(path)  # also where the thread failed: this raises its error here
    with _LOCK:
        _HASHED[known] = digest
    return digest


def hashed_ahead(path: str) -> bool:
    """Whether this local file's hash is known or on its way (`hash_ahead`): a reader then
    need not hash the bytes it reads."""
    if remote.is_uri(path) or not Path(path).is_file():
        return False
    known = _known(path)
    with _LOCK:
        return known in _HASHED or known in _AHEAD


def hash_ahead(paths: Iterable[str]) -> None:
    """Start hashing these files (those that are regular files) on a thread of their own, so
    that the hashes a run needs are ready, or nearly, when it asks: hashlib releases the GIL
    on large buffers, so the hashing overlaps with imports and model loading."""
    todo: list[tuple[str, Future[str]]] = []
    with _LOCK:
        for path in paths:
            if not Path(path).is_file():
                continue
            known = _known(path)
            if known not in _HASHED and known not in _AHEAD:
                future: Future[str] = Future()
                _AHEAD[known] = future
                todo.append((path, future))
    if todo:
        threading.Thread(target=_hash_all, args=(todo,), name="evalloss-hash", daemon=True).start()


def _hash_all(todo: list[tuple[str, Future[str]]]) -> None:
    for path, future in todo:
        try:
            future.set_result(_hash(path))
        except BaseException as exc:  # handed to whoever asks for the hash
            future.set_exception(exc)


def _known(path: str) -> tuple[str, int, int]:
    return (path if remote.is_uri(path) else os.path.realpath(path), *stamp(path))


def _hash(path: str) -> str:
    """The file's hex sha256. A local file is read into one reused buffer of `HASH_BYTES`:
    hashlib releases the GIL while it hashes, and each read and each update then wait to take
    it back from a busy main thread (up to its 5 ms switch interval), so few, large reads."""
    digest = hashlib.sha256()
    if remote.is_uri(path):
        with remote.open_binary(path, buffered=False) as f:
            while piece := f.read(REMOTE_BYTES):
                digest.update(piece)
        return digest.hexdigest()
    with open(path, "rb", buffering=0) as f:
        buffer = bytearray(max(1, min(HASH_BYTES, os.fstat(f.fileno()).st_size)))
        view = memoryview(buffer)
        while got := f.readinto(buffer):
            digest.update(view[:got])
    return digest.hexdigest()


def remember(path: str, opened: tuple[int, int], digest: hashlib._Hash) -> None:
    """Keep the sha256 a reader computed while the bytes streamed by (an object in storage,
    read once), for `sha256_of` while the object's stamp stays ``opened``."""
    with _LOCK:
        _HASHED[(path, *opened)] = digest.hexdigest()
