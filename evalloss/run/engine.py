"""The engine: run a model over batches and fold exact per-item losses into float64 sums.

``model.eval()`` under ``torch.inference_mode()``: no gradients, no weight changes. The loss
gives each item's (sum, weight) with ``reduction='none'``, in float64; what each item adds to
``loss_sum`` (its mean, for the losses of v1) is summed with `ExactSum`, so the figure does
not depend on batch size, order, chunking or the number of processes. An `Accumulator` is a
reducible state (`stats.state.Reducible`): ``state()`` is plain data, ``merge_states`` folds
every process's exactly.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from evalloss.errors import LossError, ModelError
from evalloss.losses import Loss
from evalloss.losses import get as get_loss
from evalloss.losses.accuracy import correct_items
from evalloss.report import Result
from evalloss.stats.exact import ExactSum
from evalloss.stats.state import EXACT, MAX, SUM, Fold, Reducible, fields

if TYPE_CHECKING:
    import torch
    from torch import nn


def _at_least_float32(outputs: torch.Tensor) -> torch.Tensor:
    """A 16-bit run's outputs in float32: the loss is never computed in 16 bits."""
    short = outputs.is_floating_point() and outputs.dtype.itemsize < 4
    return outputs.float() if short else outputs


class BadTarget(Exception):  # noqa: N818 - internal signal, turned into a DataError by the caller
    """A target the loss cannot take, at (row, column) of the batch being evaluated."""

    def __init__(self, row: int, column: int, why: str) -> None:
        super().__init__(why)
        self.row, self.column, self.why = row, column, why


def _weight_range(states: list[Sequence[int]]) -> tuple[int, int]:
    """The lightest and heaviest weight of the processes that saw an item."""
    seen = [w for w in states if w[0] >= 0]
    return min((w[0] for w in seen), default=-1), max((w[1] for w in seen), default=-1)


class Accumulator(Reducible):
    """One model's running state over a pass: exact loss sum, counts, time (a reducible
    state: sums merged exactly, counts added, ``seconds`` the slowest process's)."""

    FIELDS = fields(loss_sum=EXACT, element_sum=EXACT, weights=Fold(_weight_range), seconds=MAX,
                    items=SUM, weight=SUM, nonfinite=SUM, correct=SUM, counted=SUM)  # fmt: skip

    def __init__(self, module: nn.Module, loss: Loss, device: torch.device, label: str) -> None:
        self.module, self.loss, self.device, self.label = module, loss, device, label
        self.loss_sum = ExactSum()
        self._element_sum: ExactSum | None = None  # None: `loss_sum` (see `element_sum`)
        self.items = self.weight = self.nonfinite = self.correct = self.counted = 0
        self.lightest = self.heaviest = -1  # the smallest and largest item weight seen
        self.vocabulary = _vocabulary(module) if loss.per_token else None
        self.input_dtype = _float_dtype(module)  # uint8 inputs become it on the device
        self.last_weights: torch.Tensor | None = None
        self.last_correct: tuple[torch.Tensor, torch.Tensor] | None = None
        self.seconds = 0.0
        self.cached = False  # its state read from the result cache (`reuse`), not a pass

    def feed(
        self, inputs: torch.Tensor | dict[str, torch.Tensor], targets: torch.Tensor, row: int = 0
    ) -> torch.Tensor:
        """Evaluate one batch: inputs (n, ...) or a dict of them (passed as keywords), targets
        (n, T). Returns what each item adds to ``loss_sum``: (n,) float64 on the CPU.

        ``row`` is the batch's first row in the data set, used to name rows in errors.
        """
        import torch

        start = time.perf_counter()
        n = len(targets)
        rows = f"row {row + 1}" if n == 1 else f"rows {row + 1}-{row + n}"
        self._check_ids(inputs)
        try:
            y = targets.to(self.device, non_blocking=True)
            with torch.inference_mode():
                try:
                    outputs = self._forward(inputs)  # (n, ...)
                except (Exception, SystemExit) as exc:  # sys.exit() in a forward, too
                    if out_of_memory(exc):
                        raise
                    raise ModelError(
                        f"forward failed on {rows} with input of shape {_shape(inputs)}: "
                        f"{type(exc).__name__}: {first_line(exc)}",
                        path=self.label,
                    ) from exc
                scored = self.loss.logits(outputs)
                if scored is None:
                    raise ModelError(
                        f"forward returned {type(outputs).__name__} on {rows}, expected one "
                        "tensor with the batch first (return the logits/predictions only)",
                        path=self.label,
                    )
                outputs = _at_least_float32(scored)
                try:
                    self.loss.align(outputs, y)  # the model's shape first, then the data
                    bad = self.loss.invalid_target(outputs, y)
                    if bad is not None:
                        raise BadTarget(*bad)
                    sums, weights = self.loss.per_item(outputs, y)  # (n,) float64, (n,) int64
                    losses = self.loss.item_values(sums, weights).cpu()  # (n,) float64
                except LossError as exc:
                    exc.path = exc.path or self.label
                    raise
                except RuntimeError as exc:
                    if out_of_memory(exc):
                        raise
                    raise ModelError(
                        f"{self.loss.name} failed on {rows}: {first_line(exc)}", path=self.label
                    ) from exc
                hits = correct_items(self.loss, outputs, y)
        except Exception as exc:
            if not out_of_memory(exc):
                raise
            hint = (
                f"use a smaller --batch-size, e.g. {max(1, n // 4)}"
                if n > 1
                else "one item at a time does not fit: use a device with more memory"
            )
            raise ModelError(
                f"out of memory on {self.device} evaluating {rows} ({n} rows per batch): {hint}",
                path=self.label,
            ) from exc
        self._add(losses, sums, weights)
        self._count(hits)
        self.seconds += time.perf_counter() - start
        return losses

    def _count(self, hits: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """Keep each item's correct and counted elements (slices), and add them up."""
        self.last_correct = hits
        if hits is not None:
            self.correct += int(hits[0].sum())
            self.counted += int(hits[1].sum())

    def _add(self, losses: torch.Tensor, sums: torch.Tensor, weights: torch.Tensor) -> None:
        """Fold one batch in: item values (n,) float64, element sums (n,), weights (n,)."""
        import torch

        finite = torch.isfinite(losses)
        n_finite = int(finite.sum())
        self._weighed(weights)
        if self._element_sum is None and self.heaviest > 1 and not self.loss.per_token:
            self._element_sum = ExactSum.from_state(self.loss_sum.state())  # the same so far
        self.loss_sum.add(losses.numpy() if n_finite == len(losses) else losses[finite].numpy())
        if self._element_sum is not None and not self.loss.per_token:  # token: loss_sum
            sums = sums.cpu()
            self._element_sum.add(sums[finite].numpy() if n_finite < len(sums) else sums.numpy())
        self.nonfinite += len(losses) - n_finite
        self.items += len(losses)
        self.weight += int(weights.sum())
        self.last_weights = weights.cpu()  # (n,) int64: the observers' item weights

    def _weighed(self, weights: torch.Tensor) -> None:
        if len(weights):
            low, high = int(weights.min()), int(weights.max())
            self.lightest = low if self.lightest < 0 else min(self.lightest, low)
            self.heaviest = max(self.heaviest, high)

    @property
    def element_sum(self) -> ExactSum:
        """Every counted element's loss, summed: `loss_sum` while each item weighs 1 (its
        value, a mean of one, is its element bit for bit), so the values are not summed twice."""
        return self.loss_sum if self._element_sum is None else self._element_sum

    @element_sum.setter
    def element_sum(self, merged: ExactSum) -> None:
        self._element_sum = merged

    @property
    def weights(self) -> tuple[int, int]:
        """The lightest and heaviest item weight seen, ``(-1, -1)`` before any item."""
        return self.lightest, self.heaviest

    @weights.setter
    def weights(self, merged: tuple[int, int]) -> None:
        self.lightest, self.heaviest = merged

    def result(self) -> Result:
        token = self.loss.per_token
        elements = self.loss_sum if token else self.element_sum
        return Result(
            # a sum past float64's range is no figure either: null, like a non-finite item
            loss_sum=None if self.nonfinite or self.loss_sum.overflowed else self.loss_sum.value,
            element_sum=None if self.nonfinite or elements.overflowed else elements.value,
            weights_differ=self.lightest != self.heaviest,
            items=self.items,
            weight=self.weight,
            accuracy=self.correct / self.counted if self.counted else None,
            nonfinite_items=self.nonfinite,
            seconds=self.seconds,
        )

    def _check_ids(self, inputs: torch.Tensor | dict[str, torch.Tensor]) -> None:
        """Token ids the model's embedding cannot look up, found before the forward pass
        (which would fail with "index out of range"): said of the token, by the source."""
        import torch

        if self.vocabulary is None or isinstance(inputs, dict) or inputs.is_floating_point():
            return
        bad = (inputs < 0) | (inputs >= self.vocabulary)
        if bool(bad.any()):
            row, position = (int(i) for i in torch.nonzero(bad)[0])
            token = int(inputs[row, position])
            # label position - 1 names this input token (labels are the next tokens)
            raise BadTarget(
                row, position - 1,
                f"token id {token} is outside the model's vocabulary [0, {self.vocabulary})",
            )  # fmt: skip

    def _forward(self, inputs: torch.Tensor | dict[str, torch.Tensor]) -> Any:
        if isinstance(inputs, dict):
            moved = {k: self._moved(v) for k, v in inputs.items()}
            return self.module(**moved)
        return self.module(self._moved(inputs))

    def _moved(self, x: torch.Tensor) -> torch.Tensor:
        """On the device; uint8 (images) converted there to the model's float dtype (values
        kept: 0..255, not scaled), so a batch crosses to a GPU at a quarter of the bytes."""
        import torch

        x = x.to(self.device, non_blocking=True)
        return x.to(self.input_dtype) if x.dtype == torch.uint8 else x


def _float_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of the model's first floating-point parameter or buffer (float32 if none)."""
    import torch

    tensors = [*module.parameters(), *module.buffers()]
    return next((t.dtype for t in tensors if t.is_floating_point()), torch.float32)


def _vocabulary(module: nn.Module) -> int | None:
    """The size of the model's first embedding table (its vocabulary), if it has one."""
    from torch import nn

    embedding = next((m for m in module.modules() if isinstance(m, nn.Embedding)), None)
    return None if embedding is None else int(embedding.num_embeddings)


def _shape(inputs: torch.Tensor | dict[str, torch.Tensor]) -> object:
    if isinstance(inputs, dict):
        return {k: tuple(v.shape) for k, v in inputs.items()}
    return tuple(inputs.shape)


def evaluate(
    module: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss: str | Loss,
    *,
    device: str | torch.device | None = None,
    ignore_index: int | None = None,
) -> Result:
    """The exact per-item loss of ``module`` over every ``(inputs, targets)`` batch.

    ``batches`` is any iterable of pairs, e.g. a ``DataLoader``. Any shapes the loss takes:
    class ids (N,) or (N, d1, ...) against outputs (N, C) or (N, C, d1, ...) (``ignore_index``:
    a class id never scored, e.g. 255 in masks), other targets of the outputs' shape. uint8
    inputs are converted to the model's dtype on its device. The module is put in eval mode
    and left there; its weights are not touched.
    """
    import torch

    if isinstance(loss, str) or ignore_index is not None:
        loss = get_loss(loss if isinstance(loss, str) else loss.name, ignore_index)
    if device is None:
        device = next((p.device for p in module.parameters()), torch.device("cpu"))
    module.eval()
    acc = Accumulator(module, loss, torch.device(device), type(module).__name__)
    for number, (inputs, targets) in enumerate(batches):
        if targets.dim() == 0:
            raise LossError(f"batch {number + 1}: targets are one number, expected (N, ...)",
                            key="targets")  # fmt: skip
        try:
            acc.feed(inputs, targets, row=acc.items)
        except BadTarget as bad:
            raise LossError(
                f"batch {number + 1}, item {bad.row + 1}: {bad.why}", key="targets"
            ) from None
    return acc.result()


def out_of_memory(exc: BaseException) -> bool:
    """An allocation failure: torch.OutOfMemoryError (CUDA), MPS/CPU allocator errors."""
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    text = str(exc).lower() if isinstance(exc, RuntimeError) else ""
    return isinstance(exc, oom | MemoryError) or any(
        phrase in text for phrase in ("out of memory", "can't allocate memory")
    )


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, for a one-line error."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else "(no message)"
