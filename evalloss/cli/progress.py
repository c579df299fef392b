"""The progress bar: rows per second on stderr, only when stderr is a terminal."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

from evalloss.run import distributed


def _stderr_is_tty() -> bool:
    return sys.stderr.isatty()


@contextlib.contextmanager
def progress_bar(disabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A rows-per-second bar on stderr, only when stderr is a terminal; gone when done.

    One bar per pass over the data (every model sees each batch), fed the rows of each batch.
    Coloured unless NO_COLOR is set (https://no-color.org).
    """
    if disabled or not _stderr_is_tty() or not distributed.is_main():
        yield None  # under torchrun only rank 0 draws (its own shard's rows)
        return
    from tqdm import tqdm

    colour = None if os.environ.get("NO_COLOR") else "green"
    bar = tqdm(
        desc="evalloss", unit=" rows", unit_scale=True, file=sys.stderr, leave=False,
        dynamic_ncols=True, colour=colour,
    )  # fmt: skip

    def update(rows: int) -> None:
        bar.update(rows)

    try:
        yield update
    finally:
        bar.close()
