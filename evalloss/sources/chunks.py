"""Byte ranges of a text file cut at line starts: the unit of fast, parallel CSV parsing.

A CSV file is cut into ranges of about `RANGE_BYTES`, each ending just after a newline, so
each range holds whole lines and can be parsed on its own by pyarrow's multi-threaded reader
(header given separately). One range is in memory at a time, so memory does not grow with the
file. A cut at a newline is only a cut between records if no quoted field spans it: callers
check each range for a quote character and fall back to an exact streaming parse if they see
one. `shard_bounds` cuts the data region into K contiguous shards at line starts, one per
process, so each process reads about 1/K of the file.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from evalloss.io import remote

RANGE_BYTES = 16 << 20  # measured: 16 MiB ranges parse faster than 4, 8, 32 or 64 MiB here
# a hashing thread's reads: 1.9 GB hashed in 2.0 s beside a busy main thread, 2.9 s in 16 MiB
HASH_BYTES = 64 << 20
QUOTE = b'"'
BLOCK_LINES = 2048  # lines in one of pyarrow's parse blocks (`parse_block`)


@dataclass(frozen=True)
class Range:
    """``data`` is the file's bytes from ``offset``, whole lines (the file's last may lack \\n)."""

    offset: int
    data: bytes | bytearray


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


def header_end(path: str) -> int | None:
    """The byte offset just after the header line, or None if the header has a quoted newline."""
    with remote.open_binary(path) as f:
        line = f.readline()
    return None if line.count(QUOTE) % 2 else len(line)


def shard_bounds(path: str, start: int, world: int) -> list[int]:
    """``world + 1`` offsets: shard r is ``[b[r], b[r+1])``, each bound at a line start."""
    size = remote.size(path) if remote.is_uri(path) else Path(path).stat().st_size
    bounds = [start]
    with remote.open_binary(path) as f:
        for r in range(1, world):
            nominal = start + (size - start) * r // world
            if nominal <= bounds[-1]:
                bounds.append(bounds[-1])
                continue
            bounds.append(max(bounds[-1], _next_line_start(f, nominal, size)))
    bounds.append(size)
    return bounds


def _next_line_start(f: BinaryIO, nominal: int, size: int) -> int:
    """The first line start at or after ``nominal`` (a line starts after each \\n)."""
    pos = nominal - 1
    f.seek(pos)
    while pos < size:
        piece = f.read(1 << 16)
        found = piece.find(b"\n")
        if found >= 0:
            return pos + found + 1
        pos += len(piece)
        if not piece:
            break
    return size


def ranges(path: str, start: int, end: int, digest: Digest | None = None) -> Iterator[Range]:
    """The bytes ``[start, end)`` as ranges of whole lines (``start``, ``end`` at line starts).

    Each range is read straight into its own buffer, after the partial line the last one left
    over, and cut at its last newline in place: no copy of the bulk of the bytes.
    ``digest``, when given, is updated with every byte read, in file order: with ``start == 0``
    and ``end`` the file size, it ends as the hash of the whole file.
    """
    with remote.open_binary(path, buffered=False) as f:
        f.seek(start)
        pos, tail = start, b""  # pos: the file offset after the bytes read so far
        while pos < end:
            buf = bytearray(len(tail) + min(RANGE_BYTES, end - pos))
            buf[: len(tail)] = tail
            got = f.readinto(memoryview(buf)[len(tail) :])
            if not got:
                break
            del buf[len(tail) + got :]  # a short read: the file ended early
            if digest is not None:
                digest.update(bytes(memoryview(buf)[len(tail) :]))  # a copy: buf is cut below
            pos += got
            offset = pos - len(buf)
            cut = len(buf) if pos >= end else buf.rfind(b"\n") + 1
            if cut == 0:  # one line longer than a range: keep reading
                tail = bytes(buf)
                continue
            tail = bytes(buf[cut:])
            del buf[cut:]
            yield Range(offset, buf)
        if tail:
            yield Range(pos - len(tail), tail)


def parse_block(data: bytes | bytearray) -> int:
    """pyarrow's parse block for a range like ``data``: about `BLOCK_LINES` of its lines
    (their length read off its first 64 KiB), from 1 to 4 MiB. Measured, parsing 192 MB in
    memory: lines of 256 numbers (1.9 KB) 12% faster in 2-4 MiB blocks than in 1 MiB; of 32
    (240 bytes) 3-5% slower in 2-4 MiB than in 1 MiB; of 8, the same."""
    lines = data.count(b"\n", 0, 1 << 16)
    line = min(len(data), 1 << 16) / lines if lines else 1 << 16
    return int(min(4 << 20, max(1 << 20, line * BLOCK_LINES)))


def line_of(path: str, offset: int) -> int:
    """The 1-based line number at byte ``offset`` (a line start): 1 + newlines before it."""
    count, pos = 0, 0
    with remote.open_binary(path) as f:
        while pos < offset:
            piece = f.read(min(RANGE_BYTES, offset - pos))
            if not piece:
                break
            count += piece.count(b"\n")
            pos += len(piece)
    return count + 1


def has_quote(path: str, start: int, end: int) -> bool:
    """Whether bytes ``[start, end)`` hold a quote character."""
    with remote.open_binary(path, buffered=False) as f:
        f.seek(start)
        pos = start
        while pos < end:
            piece = f.read(min(RANGE_BYTES, end - pos))
            if not piece:
                return False
            if QUOTE in piece:
                return True
            pos += len(piece)
    return False


_HASHED = remote.SHA256  # objects hashed as they streamed by are in it too
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
    from evalloss.io.files import stamp

    return (path if remote.is_uri(path) else os.path.realpath(path), *stamp(path))


def _hash(path: str) -> str:
    """The file's hex sha256. A local file is read into one reused buffer of `HASH_BYTES`:
    hashlib releases the GIL while it hashes, and each read and each update then wait to take
    it back from a busy main thread (up to its 5 ms switch interval), so few, large reads."""
    digest = hashlib.sha256()
    if remote.is_uri(path):
        with remote.open_binary(path, buffered=False) as f:
            while piece := f.read(RANGE_BYTES):
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
