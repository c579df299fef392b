"""The accuracy rule: each item's correct and counted target elements, computed once.

A loss's row names its rule (`Accuracy`): the class with the highest output, a logit above 0,
a probability above 0.5, or none. `correct_items` counts item by item (what per-slice
``accuracy`` adds up, `slices`); `Loss.correct` is their totals (a run's ``accuracy``), so the
two can never disagree. A counted element is every target element, less ``ignore_index`` ones.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from evalloss.losses.loss import Loss


class Accuracy(enum.Enum):
    """How a loss's outputs become predicted targets, for ``accuracy``."""

    NONE = "none"  # no accuracy (regression, tokens)
    ARGMAX = "argmax"  # class outputs (N, C, d1, ...): the highest class
    LOGIT = "logit > 0"  # logits: 1 above 0
    PROBABILITY = "probability > 0.5"  # probabilities: 1 above 0.5


def correct_items(
    loss: Loss, outputs: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Each item's correct and counted target elements, (N,) int64 each on the CPU; None
    where the loss has no accuracy."""
    import torch

    rule = loss.row.accuracy
    if rule is Accuracy.NONE:
        return None
    outputs, targets = loss.align(outputs, targets)
    if rule is Accuracy.ARGMAX:
        predicted = outputs.argmax(dim=1)  # (N, C, d1, ...) -> (N, d1, ...)
    else:
        predicted = (outputs > (0 if rule is Accuracy.LOGIT else 0.5)).to(targets.dtype)
    hits = (predicted == targets).reshape(len(targets), -1)  # (N, E)
    if loss.ignore_index is None:
        counted = torch.ones_like(hits)
    else:
        counted = (targets != loss.ignore_index).reshape(len(targets), -1)
    return (hits & counted).sum(dim=1).cpu(), counted.sum(dim=1).cpu()
