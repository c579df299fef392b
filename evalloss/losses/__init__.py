"""The loss registry: name -> a `Loss` (`loss.py`: per-item loss, accuracy, and what targets
it takes). Every loss gives each item's (sum, weight); ``causal-lm`` (`CausalLM`, in
`causal.py`) makes the token the unit.
"""

from __future__ import annotations

from evalloss.errors import LossError
from evalloss.losses.causal import CausalLM
from evalloss.losses.loss import Loss

__all__ = ["CLASSIFICATION", "NAMES", "CausalLM", "Loss", "get"]

NAMES = (
    "cross-entropy", "nll", "bce-logits", "bce", "mse", "l1", "smooth-l1", "huber", "causal-lm",
)  # fmt: skip
CLASSIFICATION = ("cross-entropy", "nll")


def get(name: str, ignore_index: int | None = None) -> Loss:
    """The registered loss ``name``; ``ignore_index``: a class target never scored (255)."""
    if name not in NAMES:
        raise LossError(f"unknown loss {name!r}; choose one of {', '.join(NAMES)}", key="--loss")
    if name == "causal-lm":
        _ignore_index(name, ignore_index)  # refused: causal-lm masks labels with -100
        return CausalLM(name=name, classes=False, binary=False, has_accuracy=False)
    return Loss(
        name=name,
        classes=name in CLASSIFICATION,
        binary=name in ("bce", "bce-logits"),
        has_accuracy=name in (*CLASSIFICATION, "bce", "bce-logits"),
        ignore_index=_ignore_index(name, ignore_index),
    )


def _ignore_index(name: str, value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise LossError(f"must be an integer, got {value!r}", key="--ignore-index")
    if value is not None and name not in CLASSIFICATION:
        raise LossError(f"applies to cross-entropy and nll, not {name}", key="--ignore-index")
    return value
