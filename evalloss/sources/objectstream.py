"""A ``.bin`` token stream in object storage: this process's windows by ranged reads.

Where a local stream is memory-mapped, an object is read in spans of about `SPAN_BYTES`
(one ranged GET each), from the first token this process's windows need to the last, and each
block's windows are cut from the span that holds them. A single process that reads the whole
stream front to back hashes the bytes as they arrive (`io.hashing.remember`), so the provenance
costs no second download.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from evalloss.io import hashing, remote
from evalloss.sources import chunks, windows
from evalloss.sources.base import Block

if TYPE_CHECKING:
    from evalloss.sources.tokenstream import TokenStream

SPAN_BYTES = chunks.RANGE_BYTES


def blocks(stream: TokenStream, rank: int, world: int) -> Iterator[Block]:
    """Windows ``[W r / K, W (r+1) / K)`` of the object, ``stream.rows`` per block."""
    import numpy as np

    itemsize = np.dtype(stream.dtype).itemsize
    n = stream.opened[0] // itemsize
    total = windows.count(n, stream.stride)
    first, last = total * rank // world, total * (rank + 1) // world
    digest = hashlib.sha256() if world == 1 and stream.checksum else None
    end = min(n, windows.window(n, last - 1, stream.context, stream.stride).end + 1) if last \
        else 0  # fmt: skip
    file = remote.open_binary(stream.path, buffered=False)  # each span exactly one GET
    span = _Span(file, stream.path, stream.dtype, end, digest)
    with span.file:
        for w0 in range(first, last, stream.rows):
            wins = [windows.window(n, w, stream.context, stream.stride)
                    for w in range(w0, min(w0 + stream.rows, last))]  # fmt: skip
            lo, hi = wins[0].start, min(n, max(w.end for w in wins) + 1)  # labels: one more
            tokens = span.tokens(lo, hi)
            rows = [
                windows.row(tokens, windows.Window(w.start - lo, w.end - lo, w.first - lo))
                for w in wins
            ]
            ids, labels = windows.padded(rows)
            yield Block(w0, ids, labels, locator=w0)
    if digest is not None and span.hashed == n * itemsize == stream.opened[0]:
        hashing.remember(stream.path, stream.opened, digest)


class _Span:
    """The tokens read so far: ``[start, start + len(held))``, refilled by ranged reads up
    to token ``n`` (the end of this process's share)."""

    def __init__(self, file: Any, uri: str, dtype: str, n: int, digest: Any) -> None:
        import numpy as np

        self.file, self.uri, self.dtype, self.n, self.digest = file, uri, np.dtype(dtype), n, digest
        self.start, self.held = 0, np.zeros(0, dtype=self.dtype)
        self.hashed = 0  # bytes hashed, from the start of the object

    def tokens(self, lo: int, hi: int) -> Any:
        """Tokens ``[lo, hi)``, as a view of the span that holds them."""
        import numpy as np

        if lo < self.start or hi > self.start + len(self.held):
            want = max(hi - lo, SPAN_BYTES // self.dtype.itemsize)
            end = min(self.n, lo + want)
            self.file.seek(lo * self.dtype.itemsize)
            raw = self.file.read((end - lo) * self.dtype.itemsize)
            if len(raw) != (end - lo) * self.dtype.itemsize:
                raise remote.changed(self.uri)  # shorter than when opened
            self._hash(lo * self.dtype.itemsize, raw)
            self.start, self.held = lo, np.frombuffer(raw, dtype=self.dtype)
        return self.held[lo - self.start : hi - self.start]

    def _hash(self, offset: int, raw: bytes) -> None:
        """Add the bytes not yet hashed, where they follow the ones hashed (in file order)."""
        if self.digest is not None and offset <= self.hashed < offset + len(raw):
            self.digest.update(memoryview(raw)[self.hashed - offset :])
            self.hashed = offset + len(raw)
