"""A loss: a named criterion, each item's (sum, weight) under it, its accuracy, and the
targets it takes.

Per-item loss, as the contract defines it: the criterion with ``reduction='none'``, then the
mean over the item's non-batch elements, so ``loss_i`` equals the criterion's default
``'mean'`` on a batch of that one item. The mean is taken in float64.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalloss.errors import LossError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Loss:
    """A named criterion. Class losses score outputs (N, C, d1, ...) against integer targets
    (N, d1, ...) in [0, C) (a tabular row's (N, T): (N, C, T), or (N, C) for T = 1); the others
    outputs of the targets' own shape. An item's weight: its counted elements (all, less the
    ``ignore_index`` ones of a class loss, e.g. a mask's 255)."""

    name: str
    classes: bool  # targets are class indices (cross-entropy, nll)
    binary: bool  # targets are probabilities in [0, 1] (bce, bce-logits)
    has_accuracy: bool
    unit: str = "item"  # what ranks: loss per item ("item") or per token ("token", `causal`)
    ignore_index: int | None = None  # class losses: a target value that is never scored

    def logits(self, outputs: Any) -> torch.Tensor | None:
        """The tensor the loss scores: the model's output itself (None if not a tensor)."""
        import torch

        return outputs if isinstance(outputs, torch.Tensor) else None

    def functional(self) -> Callable[..., torch.Tensor]:
        """The criterion (cross-entropy: torch's, faster for few classes, `_cross_entropy`)."""
        import torch.nn.functional as F

        table: dict[str, Callable[..., torch.Tensor]] = {
            "cross-entropy": _cross_entropy, "nll": F.nll_loss,
            "bce-logits": F.binary_cross_entropy_with_logits, "bce": F.binary_cross_entropy,
            "mse": F.mse_loss, "l1": F.l1_loss, "smooth-l1": F.smooth_l1_loss,
            "huber": F.huber_loss,
        }  # fmt: skip
        return table[self.name]

    def per_item(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each item's float64 sum of its counted elements' losses (N,) and their count (N,)."""
        import torch

        outputs, targets = self.align(outputs, targets)
        n = len(outputs)
        criterion = self.functional()
        if self.ignore_index is not None:  # a class loss: ignored elements give 0
            elements = criterion(
                outputs, targets, reduction="none", ignore_index=self.ignore_index
            )  # (N, d1, ...)
            weights = (targets != self.ignore_index).reshape(n, -1).sum(dim=1)
        else:
            elements = criterion(outputs, targets, reduction="none")  # (N, ...)
            each = elements.numel() // n if n else 0
            weights = torch.full((n,), each, dtype=torch.int64, device=elements.device)
        return elements.reshape(n, -1).double().sum(dim=1), weights  # (N,), (N,)

    def item_values(self, sums: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """What each item adds to ``loss_sum`` (N,) float64: its mean, sum / weight (the
        criterion's ``'mean'`` on a batch of that one item, bit for bit)."""
        return sums / weights

    def correct(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
        """(correct, counted) target elements (a mask's counted pixels, a multi-label item's
        labels), for ``accuracy``; (0, 0) when not defined."""
        if not self.has_accuracy:
            return 0, 0
        outputs, targets = self.align(outputs, targets)
        if self.classes:
            predicted = outputs.argmax(dim=1)  # (N, C, d1, ...) -> (N, d1, ...)
            if self.ignore_index is not None:
                counted = targets != self.ignore_index
                return int(((predicted == targets) & counted).sum()), int(counted.sum())
        elif self.name == "bce-logits":
            predicted = (outputs > 0).to(targets.dtype)
        else:
            predicted = (outputs > 0.5).to(targets.dtype)
        return int((predicted == targets).sum()), targets.numel()

    def invalid_target(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[int, int, str] | None:
        """The first (item, element of its flattened targets, reason) this loss cannot take,
        else None. Class targets: integers in [0, C) (C read off the output) or the
        ``ignore_index``, at least one counted per item; binary ones: in [0, 1]."""
        import torch

        flat = targets.reshape(len(targets), -1)  # (N, E)
        if self.classes:
            classes = outputs.shape[1] if outputs.dim() > 1 else 0
            bad = (flat < 0) | (flat >= classes)
            if flat.is_floating_point():
                bad |= flat != flat.floor()
            why = f"class label must be an integer in [0, {classes})"
            if self.ignore_index is not None:
                bad &= flat != self.ignore_index
                why += f" or the --ignore-index {self.ignore_index}"
        elif self.binary:
            bad = (flat < 0) | (flat > 1)
            why = f"{self.name} target must lie in [0, 1]"
        else:
            return None
        if bool(bad.any()):
            row, element = (int(i) for i in torch.nonzero(bad)[0])
            return row, element, why
        if self.ignore_index is not None and flat.shape[1]:
            empty = (flat == self.ignore_index).all(dim=1)
            if bool(empty.any()):
                row = int(torch.nonzero(empty)[0][0])
                return row, 0, (
                    f"every target element is the --ignore-index {self.ignore_index}: the "
                    "item has no loss (leave it out of the data)"
                )
        return None

    def align(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Check shapes (never broadcast) and bring targets to the form the criterion takes:
        class ids as int64, other targets in the outputs' dtype."""
        if targets.dim() == 0:
            raise LossError("targets have no item dimension: expected (N, ...)")
        n = targets.shape[0]
        if outputs.dim() == 0 or outputs.shape[0] != n:
            raise LossError(
                f"model output has shape {tuple(outputs.shape)}, expected {n} items first"
            )
        if not outputs.is_floating_point():
            raise LossError(f"model output has dtype {outputs.dtype}, expected floating point")
        if self.classes:
            return outputs, self._class_targets(outputs, targets)
        if outputs.shape != targets.shape and outputs.numel() == targets.numel() == n:
            outputs = outputs.reshape(targets.shape)  # one element per item: (N,) or (N, 1)
        if outputs.shape != targets.shape:
            what = (f"{targets.shape[1]} target column(s)" if targets.dim() == 2
                    else f"targets of shape {tuple(targets.shape)}")  # fmt: skip
            raise LossError(
                f"{self.name} needs model output of shape {tuple(targets.shape)} for {what}, "
                f"got {tuple(outputs.shape)}"
            )
        return outputs, targets.to(outputs.dtype)

    def _class_targets(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Targets (N, d1, ...) as int64 for outputs (N, C, d1, ...); (N, 1) as (N,)."""
        n = targets.shape[0]
        if targets.dim() == 2 and targets.shape[1] == 1 and outputs.dim() == 2:
            targets = targets.reshape(n)
        if outputs.dim() != targets.dim() + 1 or outputs.shape[2:] != targets.shape[1:]:
            if targets.dim() == 2:
                t = targets.shape[1]
                shape = "(N, C)" if t == 1 else f"(N, C, {t})"
                what = f"{t} target column(s)"
            else:
                shape = "(N, C" + "".join(f", {d}" for d in targets.shape[1:]) + ")"
                what = f"targets of shape {tuple(targets.shape)}"
            raise LossError(
                f"{self.name} needs model output {shape} for {what}, got {tuple(outputs.shape)}"
            )
        return targets.long()


def _cross_entropy(outputs: torch.Tensor, targets: torch.Tensor, **options: Any) -> torch.Tensor:
    """``F.cross_entropy``, faster for few classes of float32 on a CPU with AVX-512, to the
    same bits.

    Over a last dimension shorter than its 16-float vector, torch's log-softmax runs element
    by element: 160 ns an item for (N, 10). The items' outputs as (1, C, N) (each item a
    position of one sample: the same criterion) run across 16 items at a time, 1.6-4x faster,
    in the same order of operations, so to the same bits; a last partial vector of items
    would not (another exp), so those stay (N, C). Checked bit for bit against the criterion
    on (N, C) and on one item (tests/test_losses.py). Elsewhere: the criterion as it is."""
    import torch
    import torch.nn.functional as F

    whole = len(outputs) - len(outputs) % 16
    if (outputs.dim() != 2 or outputs.shape[1] >= 16 or whole == 0 or not _avx512()
            or outputs.dtype != torch.float32 or outputs.device.type != "cpu"):  # fmt: skip
        return F.cross_entropy(outputs, targets, **options)
    across = F.cross_entropy(outputs[:whole].T.contiguous()[None], targets[None, :whole],
                             **options)[0]  # fmt: skip
    return torch.cat((across, F.cross_entropy(outputs[whole:], targets[whole:], **options)))


@functools.cache
def _avx512() -> bool:
    import torch

    return bool(torch.backends.cpu.get_cpu_capability() == "AVX512")
