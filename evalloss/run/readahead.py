"""The CPU side of a pass: torch's threads, and a reader thread where it pays.

`threads` sets torch's intra-op threads for a run (restored after); `read_ahead` decides
whether a reader thread parses the next block while the models evaluate this one (`prefetch`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from evalloss.errors import OptionError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")
MAX_THREADS = 4096  # beyond any machine; torch would try to start them all


def prefetch(
    blocks: Iterator[T], depth: int = 1, prepare: Callable[[T], T] | None = None
) -> Generator[T, None, None]:
    """``blocks``, read ahead by a thread: the next block is parsed (pyarrow and torch release
    the GIL) while the current one is evaluated. At most ``depth`` blocks wait in between.
    ``prepare``: applied to each block there (e.g. pinning its memory for non-blocking GPU
    copies). Errors in the reader are raised here, in the consumer; closing this generator
    stops it."""
    import threading

    reader = _Reader(blocks, depth, prepare)
    thread = threading.Thread(target=reader.run, name="evalloss-reader", daemon=True)
    thread.start()
    try:
        while True:
            kind, item = reader.handoff.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        reader.stop.set()
        thread.join()


class _Reader:
    """The reader thread's side of `prefetch`: reads, prepares and hands over blocks."""

    def __init__(
        self, blocks: Iterator[Any], depth: int, prepare: Callable[[Any], Any] | None
    ) -> None:
        import queue
        import threading

        self.blocks, self.prepare = blocks, prepare
        self.handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            for block in self.blocks:
                if not self._put(("block", block if self.prepare is None else self.prepare(block))):
                    break
            else:
                self._put(("end", None))
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(("error", exc))
        finally:
            close = getattr(self.blocks, "close", None)
            if close is not None:
                close()

    def _put(self, item: tuple[str, Any]) -> bool:
        import queue

        while not self.stop.is_set():
            try:
                self.handoff.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False


def read_ahead(device: torch.device, local_processes: int) -> bool:
    """Whether a reader thread parses the next block while the models evaluate this one: when
    the models leave cores free to parse (a GPU, or torch on fewer threads than this process's
    cores). With torch on every core the two phases take turns instead, each on all cores:
    measured on 2 cores (docs/performance.md), a reader thread then made a CSV pass 13% slower
    (parser and models fight for the cores), while with torch on one thread it made it 13%
    faster. ``EVALLOSS_READ_AHEAD=1`` or ``0`` forces it either way (a benchmark knob)."""
    import torch

    forced = os.environ.get("EVALLOSS_READ_AHEAD")
    if forced in ("0", "1"):
        return forced == "1"
    return device.type != "cpu" or torch.get_num_threads() < cores(local_processes)


def cores(local_processes: int = 1) -> int:
    """This process's share of the CPU cores it may run on, at least 1."""
    if hasattr(os, "sched_getaffinity"):
        total = len(os.sched_getaffinity(0))
    else:
        total = os.cpu_count() or 1
    return max(1, total // local_processes)


@contextlib.contextmanager
def threads(wanted: int | None, local_processes: int) -> Iterator[None]:
    """torch's intra-op threads for the run (restored after): ``threads``, or the cores this
    process may use (the machine's, divided by the processes on this node). pyarrow parses on
    its own pool; the reader thread mostly waits on it."""
    import torch

    if wanted is not None and not 1 <= wanted <= MAX_THREADS:
        raise OptionError(f"must be from 1 to {MAX_THREADS}, got {wanted}", key="--threads")
    share = cores(local_processes)
    previous = torch.get_num_threads()
    torch.set_num_threads(wanted or share)
    arrow_previous = None
    if local_processes > 1:
        import pyarrow as pa

        arrow_previous = pa.cpu_count()
        pa.set_cpu_count(share)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
        if arrow_previous is not None:
            import pyarrow as pa

            pa.set_cpu_count(arrow_previous)
