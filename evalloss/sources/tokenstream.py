"""A token stream: nanoGPT's ``.bin`` (a flat array of token ids), memory-mapped, in windows.

The stream is one sequence; an item is one window of it (`windows`), ``--context`` tokens long
with ``--stride`` new targets each. Windows are read straight from the memory map, a block at a
time (``--batch-tokens`` / context windows: one forward pass), so memory does not grow with the
file. Under torchrun each process takes a contiguous range of windows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from evalloss.errors import DataError, OptionError
from evalloss.io import remote
from evalloss.sources import objectstream, windows
from evalloss.sources.base import Block, Gather, OneFile

if TYPE_CHECKING:
    import torch

    from evalloss.options import Options

SUFFIXES = (".bin",)


def accepts(path: str, options: Options) -> bool:
    return path.lower().endswith(SUFFIXES)


def open_source(path: str, options: Options) -> TokenStream:
    """Check the file holds whole tokens and that a context is given."""
    import numpy as np

    itemsize = np.dtype(options.token_dtype).itemsize
    size = remote.size(path) if remote.is_uri(path) else Path(path).stat().st_size
    if size % itemsize:
        raise DataError(
            f"{size} bytes is not a whole number of {options.token_dtype} tokens "
            f"(a stray byte at offset {size - size % itemsize}?); see --token-dtype",
            path=path,
        )
    if size < 2 * itemsize:
        raise DataError("fewer than two tokens: nothing to score", path=path)
    if options.context is None:
        raise OptionError(
            "a token stream is scored in windows: give --context (the model's input length)",
            key="--context",
        )
    rows = max(1, options.batch_tokens // options.context)
    stride = options.stride or options.context
    return TokenStream(path, options.token_dtype, options.context, stride, rows, options.checksum)


@dataclass(frozen=True)
class TokenStream(OneFile):
    """A ``.bin`` stream opened: its dtype and windows, nothing read yet."""

    path: str
    dtype: str
    context: int
    stride: int
    rows: int  # windows per block (one forward pass)
    checksum: bool = True
    targets: tuple[str, ...] = ("next token",)
    features: tuple[str, ...] = ("token ids",)

    def blocks(
        self, dtype: torch.dtype, *, rank: int = 0, world: int = 1, gather: Gather | None = None
    ) -> Iterator[Block]:
        """Windows ``[W r / K, W (r+1) / K)`` for process r of K, ``rows`` per block."""
        import numpy as np

        if remote.is_uri(self.path):
            yield from objectstream.blocks(self, rank, world)
            return
        tokens = np.memmap(self.path, dtype=self.dtype, mode="r")
        n = len(tokens)
        total = windows.count(n, self.stride)
        first, last = total * rank // world, total * (rank + 1) // world
        for w0 in range(first, last, self.rows):
            rows = [
                windows.row(tokens, windows.window(n, w, self.context, self.stride))
                for w in range(w0, min(w0 + self.rows, last))
            ]
            ids, labels = windows.padded(rows)
            yield Block(w0, ids, labels, locator=w0)

    def at(self, block: Block, index: int, column: str, why: str | None = None) -> DataError:
        return DataError(why or "bad token", path=self.path, key=f"window {block.row + index + 1}")

    def bad_target(self, block: Block, index: int, position: int, why: str) -> DataError:
        """Label ``position`` of window ``block.row + index``: the token it names, by offset."""
        import numpy as np

        size = self.opened[0] if remote.is_uri(self.path) else Path(self.path).stat().st_size
        n = size // np.dtype(self.dtype).itemsize
        win = windows.window(n, block.row + index, self.context, self.stride)
        token = win.start + position + 1
        offset = token * np.dtype(self.dtype).itemsize
        return DataError(why, path=self.path, key=f"token {token} (byte offset {offset})")
