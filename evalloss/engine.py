"""The engine: run a model over batches and fold exact per-item losses into float64 sums.

``model.eval()`` under ``torch.inference_mode()``: no gradients, no weight changes. Per-item
losses are computed with ``reduction='none'``, averaged per item in float64, and summed with
`ExactSum`, so the figure does not depend on batch size, order or chunking.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import LossError, ModelError
from .losses import Loss
from .losses import get as get_loss
from .report import Result
from .stats import ExactSum

if TYPE_CHECKING:
    import torch
    from torch import nn

T = TypeVar("T")


class BadTarget(Exception):  # noqa: N818 - internal signal, turned into a DataError by the caller
    """A target the loss cannot take, at (row, column) of the batch being evaluated."""

    def __init__(self, row: int, column: int, why: str) -> None:
        super().__init__(why)
        self.row, self.column, self.why = row, column, why


class Accumulator:
    """One model's running state over a pass: exact loss sum, counts, time."""

    def __init__(self, module: nn.Module, loss: Loss, device: torch.device, label: str) -> None:
        self.module, self.loss, self.device, self.label = module, loss, device, label
        self.loss_sum = ExactSum()
        self.items = self.nonfinite = self.correct = self.counted = 0
        self.seconds = 0.0

    def feed(self, features: torch.Tensor, targets: torch.Tensor, row: int = 0) -> torch.Tensor:
        """Evaluate one batch: features (n, F), targets (n, T). Returns losses (n,) float64 on CPU.

        ``row`` is the batch's first row in the data set, used to name rows in errors.
        """
        import torch

        start = time.perf_counter()
        n = len(features)
        rows = f"row {row + 1}" if n == 1 else f"rows {row + 1}-{row + n}"
        try:
            x = features.to(self.device, non_blocking=True)
            y = targets.to(self.device, non_blocking=True)
            with torch.inference_mode():
                try:
                    outputs = self.module(x)  # (n, ...)
                except (Exception, SystemExit) as exc:  # sys.exit() in a forward, too
                    if _out_of_memory(exc):
                        raise
                    raise ModelError(
                        f"forward failed on {rows} with input of shape {tuple(x.shape)}: "
                        f"{type(exc).__name__}: {_first_line(exc)}",
                        path=self.label,
                    ) from exc
                if not isinstance(outputs, torch.Tensor):
                    raise ModelError(
                        f"forward returned {type(outputs).__name__} on {rows}, expected one "
                        "tensor with the batch first (return the logits/predictions only)",
                        path=self.label,
                    )
                bad = self.loss.invalid_target(outputs, y)
                if bad is not None:
                    raise BadTarget(*bad)
                try:
                    losses = self.loss.per_item(outputs, y).cpu()  # (n,) float64
                except LossError as exc:
                    exc.path = exc.path or self.label
                    raise
                except RuntimeError as exc:
                    if _out_of_memory(exc):
                        raise
                    raise ModelError(
                        f"{self.loss.name} failed on {rows}: {_first_line(exc)}", path=self.label
                    ) from exc
                correct, counted = self.loss.correct(outputs, y)
        except Exception as exc:
            if not _out_of_memory(exc):
                raise
            raise ModelError(
                f"out of memory on {self.device} evaluating {rows} ({n} rows per batch): "
                f"use a smaller --batch-size, e.g. {max(1, n // 4)}",
                path=self.label,
            ) from exc
        finite = torch.isfinite(losses)
        n_finite = int(finite.sum())
        self.loss_sum.add(losses.numpy() if n_finite == len(losses) else losses[finite].numpy())
        self.nonfinite += len(losses) - n_finite
        self.items += len(losses)
        self.correct += correct
        self.counted += counted
        self.seconds += time.perf_counter() - start
        return losses

    def state(self) -> tuple[list[float], bool, int, int, int, int, float]:
        """Plain data for reduction across processes (see `merge_states`)."""
        return (
            list(self.loss_sum.partials),
            self.loss_sum.overflowed,
            self.items,
            self.nonfinite,
            self.correct,
            self.counted,
            self.seconds,
        )

    def merge_states(
        self, states: Sequence[tuple[list[float], bool, int, int, int, int, float]]
    ) -> None:
        """Become the exact merge of every process's `state` (this one's included): sums are
        merged exactly, counts added, ``seconds`` the slowest process's."""
        total = ExactSum()
        self.items = self.nonfinite = self.correct = self.counted = 0
        self.seconds = 0.0
        for partials, overflowed, items, nonfinite, correct, counted, seconds in states:
            part = ExactSum(partials)
            part.overflowed |= overflowed
            total.merge(part)
            self.items += items
            self.nonfinite += nonfinite
            self.correct += correct
            self.counted += counted
            self.seconds = max(self.seconds, seconds)
        self.loss_sum = total

    def result(self) -> Result:
        return Result(
            loss_sum=None if self.nonfinite else self.loss_sum.value,
            items=self.items,
            accuracy=self.correct / self.counted if self.counted else None,
            nonfinite_items=self.nonfinite,
            seconds=self.seconds,
        )


def _out_of_memory(exc: BaseException) -> bool:
    """An allocation failure: torch.OutOfMemoryError (CUDA), MPS/CPU allocator errors."""
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    text = str(exc).lower() if isinstance(exc, RuntimeError) else ""
    return isinstance(exc, oom | MemoryError) or any(
        phrase in text for phrase in ("out of memory", "can't allocate memory")
    )


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else "(no message)"


def prefetch(blocks: Iterator[T], depth: int = 1, pin: bool = False) -> Generator[T, None, None]:
    """``blocks``, read ahead by a thread: the next block is parsed (pyarrow and torch release
    the GIL) while the current one is evaluated. At most ``depth`` blocks wait in between.
    ``pin``: copy each block's tensors to pinned memory there, for non-blocking GPU copies.
    Errors in the reader are raised here, in the consumer; closing this generator stops it."""
    import queue
    import threading
    from dataclasses import fields, replace

    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for block in blocks:
                if pin:
                    tensors = {
                        f.name: getattr(block, f.name).pin_memory()
                        for f in fields(block)  # type: ignore[arg-type]
                        if hasattr(getattr(block, f.name), "pin_memory")
                    }
                    block = replace(block, **tensors)  # type: ignore[type-var]
                if not put(("block", block)):
                    break
            else:
                put(("end", None))
        except BaseException as exc:  # handed to the consumer, raised there
            put(("error", exc))
        finally:
            close = getattr(blocks, "close", None)
            if close is not None:
                close()

    reader = threading.Thread(target=read, name="evalloss-reader", daemon=True)
    reader.start()
    try:
        while True:
            kind, item = handoff.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def evaluate(
    module: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss: str | Loss,
    *,
    device: str | torch.device | None = None,
) -> Result:
    """The exact per-item loss of ``module`` over every ``(inputs, targets)`` batch.

    ``batches`` is any iterable of pairs, e.g. a ``DataLoader``. Targets may be (N,) or
    (N, T). The module is put in eval mode and left there; its weights are not touched.
    """
    import torch

    loss = get_loss(loss) if isinstance(loss, str) else loss
    if device is None:
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
    module.eval()
    acc = Accumulator(module, loss, torch.device(device), type(module).__name__)
    for number, (inputs, targets) in enumerate(batches):
        targets_2d = targets.reshape(len(targets), -1) if targets.dim() != 2 else targets
        try:
            acc.feed(inputs, targets_2d.double(), row=acc.items)
        except BadTarget as bad:
            raise LossError(
                f"batch {number + 1}, item {bad.row + 1}: {bad.why}", key="targets"
            ) from None
    return acc.result()
