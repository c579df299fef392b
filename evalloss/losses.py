"""The loss registry: name -> per-item loss, accuracy, and what targets it takes.

Per-item loss, as the contract defines it: the criterion with ``reduction='none'``, then the
mean over the item's non-batch elements, so ``loss_i`` equals the criterion's default
``'mean'`` on a batch of that one item. The mean is taken in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import LossError

if TYPE_CHECKING:
    import torch

NAMES = ("cross-entropy", "nll", "bce-logits", "bce", "mse", "l1", "smooth-l1", "huber")
CLASSIFICATION = ("cross-entropy", "nll")


@dataclass(frozen=True)
class Loss:
    """A named criterion. ``classes`` losses take integer class targets in [0, C)."""

    name: str
    classes: bool  # targets are class indices (cross-entropy, nll)
    binary: bool  # targets are probabilities in [0, 1] (bce, bce-logits)
    has_accuracy: bool

    def functional(self) -> Callable[..., torch.Tensor]:
        import torch.nn.functional as F

        table: dict[str, Callable[..., torch.Tensor]] = {
            "cross-entropy": F.cross_entropy,
            "nll": F.nll_loss,
            "bce-logits": F.binary_cross_entropy_with_logits,
            "bce": F.binary_cross_entropy,
            "mse": F.mse_loss,
            "l1": F.l1_loss,
            "smooth-l1": F.smooth_l1_loss,
            "huber": F.huber_loss,
        }
        return table[self.name]

    def per_item(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Each item's (sum, weight): the float64 sum of its elements' losses (N,) and how
        many elements were scored (N,) int64. ``targets`` is (N, T) as read from the data."""
        import torch

        outputs, targets = self.align(outputs, targets)
        elements = self.functional()(outputs, targets, reduction="none")  # (N, ...)
        flat = elements.reshape(elements.shape[0], -1)  # (N, E)
        weights = torch.full((len(flat),), flat.shape[1], dtype=torch.int64)
        return flat.double().sum(dim=1), weights  # (N,), (N,)

    def item_values(self, sums: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """What each item adds to ``loss_sum`` (N,) float64: its mean, sum / weight (the
        criterion's ``'mean'`` on a batch of that one item, bit for bit)."""
        return sums / weights

    def correct(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[int, int]:
        """(correct, counted) target elements, for ``accuracy``; (0, 0) when not defined."""
        if not self.has_accuracy:
            return 0, 0
        outputs, targets = self.align(outputs, targets)
        if self.classes:
            predicted = outputs.argmax(dim=1)  # (N, C, *T) -> (N, *T)
        elif self.name == "bce-logits":
            predicted = (outputs > 0).to(targets.dtype)
        else:
            predicted = (outputs > 0.5).to(targets.dtype)
        return int((predicted == targets).sum()), targets.numel()

    def invalid_target(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[int, int, str] | None:
        """The first (row, column, reason) whose target this loss cannot take, else None.

        Class targets must be integers in [0, C), C read off the output; binary targets
        must lie in [0, 1].
        """
        import torch

        if self.classes:
            classes = outputs.shape[1] if outputs.dim() > 1 else 0
            bad = (targets != targets.floor()) | (targets < 0) | (targets >= classes)
            why = f"class label must be an integer in [0, {classes})"
        elif self.binary:
            bad = (targets < 0) | (targets > 1)
            why = f"{self.name} target must lie in [0, 1]"
        else:
            return None
        if not bool(bad.any()):
            return None
        row, col = (int(i) for i in torch.nonzero(bad)[0])
        return row, col, why

    def align(
        self, outputs: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Check shapes (never broadcast) and bring targets to the form the criterion takes.

        targets arrive as (N, T). Class losses want (N,) when T == 1, else (N, T) against
        outputs (N, C, T). Elementwise losses want outputs of the targets' shape; the one
        documented exception is a single target, where (N,) and (N, 1) outputs both match.
        """
        n, t = targets.shape
        if outputs.dim() == 0 or outputs.shape[0] != n:
            raise LossError(
                f"model output has shape {tuple(outputs.shape)}, expected {n} items first"
            )
        if not outputs.is_floating_point():
            raise LossError(f"model output has dtype {outputs.dtype}, expected floating point")
        if self.classes:
            want = (n, outputs.shape[1] if outputs.dim() > 1 else -1) + ((t,) if t > 1 else ())
            if outputs.dim() != len(want) or (t > 1 and outputs.shape[2] != t):
                shape = "(N, C)" if t == 1 else f"(N, C, {t})"
                raise LossError(
                    f"{self.name} needs model output {shape} for {t} target column(s), "
                    f"got {tuple(outputs.shape)}"
                )
            return outputs, targets.long().reshape(n) if t == 1 else targets.long()
        if t == 1 and outputs.dim() == 1:
            outputs = outputs.unsqueeze(1)  # the documented single-target case
        if tuple(outputs.shape) != (n, t):
            raise LossError(
                f"{self.name} needs model output of shape ({n}, {t}) for {t} target column(s), "
                f"got {tuple(outputs.shape)}"
            )
        return outputs, targets.to(outputs.dtype)


def get(name: str) -> Loss:
    """The registered loss called ``name``."""
    if name not in NAMES:
        raise LossError(f"unknown loss {name!r}; choose one of {', '.join(NAMES)}", key="--loss")
    return Loss(
        name=name,
        classes=name in CLASSIFICATION,
        binary=name in ("bce", "bce-logits"),
        has_accuracy=name in (*CLASSIFICATION, "bce", "bce-logits"),
    )
