"""Each item's correct target elements: what per-slice ``accuracy`` adds up (`slices`).

`losses.Loss.correct` counts a whole batch; the slices need the counts item by item, the
same predictions (argmax over classes, logits above 0, probabilities above 0.5) and the same
counted elements (less ``--ignore-index`` ones).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from evalloss.losses import Loss


def correct_items(
    loss: Loss, outputs: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Each item's correct and counted target elements, (N,) int64 each on the CPU; None
    where the loss has no accuracy."""
    import torch

    if not loss.has_accuracy:
        return None
    outputs, targets = loss.align(outputs, targets)
    counted = None
    if loss.classes:
        predicted = outputs.argmax(dim=1)  # (N, C, d1, ...) -> (N, d1, ...)
        if loss.ignore_index is not None:
            counted = (targets != loss.ignore_index).reshape(len(targets), -1)
    elif loss.name == "bce-logits":
        predicted = (outputs > 0).to(targets.dtype)
    else:
        predicted = (outputs > 0.5).to(targets.dtype)
    hits = (predicted == targets).reshape(len(targets), -1)  # (N, E)
    counted = torch.ones_like(hits) if counted is None else counted
    return (hits & counted).sum(dim=1).cpu(), counted.sum(dim=1).cpu()
