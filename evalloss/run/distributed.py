"""Several processes at the edge: rank and world from torchrun's environment, exact reduction,
and agreement on failure. Everything here is a no-op at world size 1.

Under ``torchrun`` every process sees ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; each reads a
disjoint share of the rows (`DataSource.blocks(rank=, world=)`), and the per-model states
(exact partial sums, counts) are gathered and merged in rank order, so the report equals the
one-process report. Only small Python objects cross processes, so the collectives run on a
gloo group (CPU) whatever the device; CUDA ranks each take ``cuda:LOCAL_RANK``.

Failure: every process checks in after each block (`step`), so an error on one rank stops all
of them within a block; `agree` then gathers the errors and rank 0 raises the first rank's
error (the others raise it quietly, so the user sees one line). A collective that waits longer
than ``EVALLOSS_TIMEOUT`` seconds (default 1800) fails instead of hanging.
"""

from __future__ import annotations

import atexit
import contextlib
import contextvars
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from evalloss import errors
from evalloss.errors import EvallossError

DEFAULT_TIMEOUT_S = 1800.0
MAX_TIMEOUT_S = 1e9  # about 30 years; larger ones overflow a timedelta

# Who prints an agreed error on rank 0 before any process leaves (`reporting`: the CLI's
# one-line printer, for the calls inside its ``with``); unset, the error is only raised.
_REPORTER: contextvars.ContextVar[Callable[[EvallossError], None] | None] = (
    contextvars.ContextVar("evalloss_reporter", default=None))


@contextlib.contextmanager
def reporting(reporter: Callable[[EvallossError], None]) -> Iterator[None]:
    """``with reporting(print_line):`` rank 0 hands every error the processes agree on to
    ``reporter`` before any of them exits (torchrun stops the others as soon as one exits,
    which could cut rank 0's own report short); the error is raised quietly after."""
    token = _REPORTER.set(reporter)
    try:
        yield
    finally:
        _REPORTER.reset(token)


def env_world() -> tuple[int, int, int]:
    """(rank, world size, processes on this node) from torchrun's variables; (0, 1, 1) alone."""

    def number(name: str, default: int) -> int:
        try:
            return int(os.environ.get(name, default))
        except ValueError:
            return default

    world = max(1, number("WORLD_SIZE", 1))
    rank = number("RANK", 0) if world > 1 else 0  # a leftover RANK alone: one process, rank 0
    return rank, world, max(1, number("LOCAL_WORLD_SIZE", world))


PER_ITEM_WHY = (
    "every process sees only its shard of the items; run in one process to export or plot "
    "per-item losses"
)


def timeout_s() -> float:
    """``EVALLOSS_TIMEOUT``: seconds a collective may wait (default 1800), checked."""
    text = os.environ.get("EVALLOSS_TIMEOUT", str(DEFAULT_TIMEOUT_S))
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT_S):
        raise errors.OptionError(
            f"must be a number of seconds in (0, {MAX_TIMEOUT_S:g}], got {errors.shown(text)}",
            key="EVALLOSS_TIMEOUT",
        )
    return value


def single_process_only(key: str, why: str = PER_ITEM_WHY) -> None:
    """Refuse under torchrun with one line, from rank 0 (the other ranks exit quietly)."""
    rank, world, _ = env_world()
    if world > 1:
        error = errors.OptionError(
            f"not supported under torchrun (WORLD_SIZE={world}): {why}", key=key
        )
        error.quiet = rank != 0  # type: ignore[attr-defined]
        raise error


def is_main() -> bool:
    """Whether this process writes the report: rank 0, or the only process."""
    return env_world()[0] == 0


@dataclass
class World:
    """This process's place among ``size`` processes; a context that joins the process group
    (started on first use: torchrun's environment, gloo, a timeout)."""

    rank: int = 0
    size: int = 1
    local_size: int = 1
    _group: Any = None

    @classmethod
    def from_env(cls) -> World:
        rank, size, local = env_world()
        return cls(rank, size, local)

    def __enter__(self) -> World:
        if self.size == 1:
            return self
        import datetime

        import torch.distributed as dist

        timeout = datetime.timedelta(seconds=timeout_s())
        if not dist.is_available():
            raise errors.OptionError("this torch build has no torch.distributed", key="torchrun")
        if not dist.is_initialized():
            # Kept for the life of the process: a second init under torchrun's store hangs,
            # so a later compare() in the same process reuses this group.
            _before_init()
            try:
                dist.init_process_group(backend="gloo", timeout=timeout)
            except (ValueError, RuntimeError) as exc:
                raise errors.OptionError(
                    f"cannot join the torchrun process group ({str(exc).splitlines()[0]})",
                    key="WORLD_SIZE",
                ) from exc
            atexit.register(_destroy)
            self._group = dist.group.WORLD
        elif dist.get_backend() == "gloo":
            self._group = dist.group.WORLD
        else:  # the caller's own group (e.g. NCCL): a gloo group for our small CPU objects
            self._group = dist.new_group(backend="gloo", timeout=timeout)
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._group = None

    def gather(self, value: Any) -> list[Any]:
        """Every process's ``value`` (picklable), in rank order; ``[value]`` alone."""
        if self.size == 1:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        with self._collective():
            dist.all_gather_object(out, value, group=self._group)
        return out

    @contextlib.contextmanager
    def _collective(self) -> Iterator[None]:
        """A collective that fails because a peer died or stalled: one `PeerError` line."""
        try:
            yield
        except RuntimeError as exc:  # gloo's errors (DistBackendError is one)
            first = (str(exc).strip().splitlines() or ["no message"])[0]
            first = first.split("] ", 1)[-1]  # gloo's "[path/to/file.cc:78] " prefix
            raise errors.PeerError(
                f"another process of the run died or did not answer within {timeout_s():g} s "
                f"(EVALLOSS_TIMEOUT): {first}",
                key=f"rank {self.rank}",
            ) from exc

    def step(self, failed: bool, working: bool) -> tuple[bool, bool]:
        """Check in after a block: (has any process failed, is any still working)."""
        if self.size == 1:
            return failed, working
        import torch
        import torch.distributed as dist

        flags = torch.tensor([int(failed), int(working)], dtype=torch.int64)
        with self._collective():
            dist.all_reduce(flags, group=self._group)
        return bool(flags[0]), bool(flags[1])

    def agree(self, error: EvallossError | None) -> None:
        """Raise, on every process, the error of the lowest rank that has one (if any).

        Rank 0 raises it loud; the others quietly (``quiet = True``: the CLI prints nothing,
        but still exits with its code), so the user sees one line. Inside `reporting` (the
        CLI's), rank 0 reports it before any process leaves.
        """
        if self.size == 1:
            if error is not None:
                raise error
            return
        payload = None if error is None else _payload(error)
        first = next((p for p in self.gather(payload) if p is not None), None)
        if first is None:
            return
        agreed = error if error is not None and _payload(error) == first else _rebuild(first)
        reporter = _REPORTER.get()
        if self.rank != 0 or reporter is not None:
            if self.rank == 0 and reporter is not None:
                reporter(agreed)
            agreed.quiet = True  # type: ignore[attr-defined]
        import torch.distributed as dist

        with self._collective():
            dist.barrier(group=self._group)  # rank 0's line is out before any process exits
        if agreed is error:
            raise agreed
        raise agreed from error

    def merge(self, state: Any, combine: Callable[[list[Any]], Any]) -> Any:
        """``combine`` of every process's ``state``, in rank order (the same on every rank)."""
        return combine(self.gather(state))


def _before_init() -> None:
    """Import, before the group exists, the torch module that would otherwise keep it alive.

    ``torch.distributed.nn.functional`` declares ``group=group.WORLD`` as default arguments.
    Imported after ``init_process_group`` (torch._dynamo imports it, and transformers imports
    dynamo), its defaults hold the default group, so `_destroy` cannot free it. Its gloo worker
    threads then outlive the interpreter's shutdown, and one that drops a finished collective's
    tensor asks for the GIL while Python finalizes: pthread_exit inside C++, ``terminate called
    without an active exception``, SIGABRT at exit. Imported first, its defaults are None.
    """
    import torch.distributed.nn.functional  # noqa: F401


def _destroy() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def _payload(error: EvallossError) -> tuple[str, str, str | None, int | None, str | None]:
    return type(error).__name__, error.message, error.path, error.line, error.key


def _rebuild(payload: tuple[str, str, str | None, int | None, str | None]) -> EvallossError:
    name, message, path, line, key = payload
    kind = getattr(errors, name, EvallossError)
    if not (isinstance(kind, type) and issubclass(kind, EvallossError)):
        kind = EvallossError
    return kind(message, path=path, line=line, key=key)
