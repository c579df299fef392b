"""A loss: one row of the table (`Row`: its name, criterion, target kind, default ignore
index and accuracy rule), and the `Loss` built from it: each item's (sum, weight) under the
criterion, its accuracy, and the targets it takes.

Per-item loss, as the contract defines it: the criterion with ``reduction='none'``, then the
mean over the item's non-batch elements, so ``loss_i`` equals the criterion's default
``'mean'`` on a batch of that one item. The mean is taken in float64.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalloss.errors import LossError
from evalloss.losses.accuracy import Accuracy, correct_items

if TYPE_CHECKING:
    import torch


class Target(enum.Enum):
    """What a loss's targets are."""

    CLASSES = "classes"  # class ids (N, d1, ...) against outputs (N, C, d1, ...)
    BINARY = "binary"  # probabilities in [0, 1], the outputs' shape
    VALUES = "values"  # any numbers, the outputs' shape
    TOKENS = "tokens"  # next-token labels (N, L) against logits (N, L, V): the token is the unit


@dataclass(frozen=True)
class Loss:
    """A named criterion (its `Row`). Class losses score outputs (N, C, d1, ...) against
    integer targets (N, d1, ...) in [0, C) (a tabular row's (N, T): (N, C, T), or (N, C) for
    T = 1); the others outputs of the targets' own shape. An item's weight: its counted
    elements (all, less the ``ignore_index`` ones of a class loss, e.g. a mask's 255)."""

    row: Row
    ignore_index: int | None = None  # a target value that is never scored

    @property
    def name(self) -> str:
        return self.row.name

    @property
    def classes(self) -> bool:
        """Targets are class indices (cross-entropy, nll)."""
        return self.row.target is Target.CLASSES

    @property
    def binary(self) -> bool:
        """Targets are probabilities in [0, 1] (bce, bce-logits)."""
        return self.row.target is Target.BINARY

    @property
    def has_accuracy(self) -> bool:
        return self.row.accuracy is not Accuracy.NONE

    @property
    def per_token(self) -> bool:
        """The token is the unit (`causal`): loss per token ranks, not loss per item."""
        return self.row.per_token

    @property
    def unit(self) -> str:
        """What ranks: loss per ``"item"`` or per ``"token"``."""
        return "token" if self.per_token else "item"

    def logits(self, outputs: Any) -> torch.Tensor | None:
        """The tensor the loss scores: the model's output itself (None if not a tensor)."""
        import torch

        return outputs if isinstance(outputs, torch.Tensor) else None

    def functional(self) -> Callable[..., torch.Tensor]:
        """The row's criterion (cross-entropy: torch's, faster for few classes,
        `cross_entropy`)."""
        criterion = self.row.criterion
        if isinstance(criterion, str):
            import torch.nn.functional as F

            return getattr(F, criterion)  # type: ignore[no-any-return]
        return criterion

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
        labels), for ``accuracy``: the totals of `correct_items`; (0, 0) when not defined."""
        hits = correct_items(self, outputs, targets)
        return (0, 0) if hits is None else (int(hits[0].sum()), int(hits[1].sum()))

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


@dataclass(frozen=True)
class Row:
    """A loss, declared once: what the CLI's choices, `get`, the report's ``loss`` (and the
    schema's enum), a checkpoint's ``evalloss.loss`` and the docs read."""

    name: str  # the CLI's, the report's, the schema's and the metadata's name
    criterion: Callable[..., torch.Tensor] | str  # or its name in torch.nn.functional
    target: Target
    accuracy: Accuracy = Accuracy.NONE
    ignore_index: int | None = None  # the target value never scored when none is given
    kind: type[Loss] = Loss  # the class that applies it (`CausalLM` for its own rules)

    @property
    def per_token(self) -> bool:
        """The token is the unit: an item adds its summed tokens to ``loss_sum``."""
        return self.target is Target.TOKENS


def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor, **options: Any) -> torch.Tensor:
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
    if whole == len(outputs):
        return across
    return torch.cat((across, F.cross_entropy(outputs[whole:], targets[whole:], **options)))


@functools.cache
def _avx512() -> bool:
    import torch

    return bool(torch.backends.cpu.get_cpu_capability() == "AVX512")
