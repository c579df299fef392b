"""The exact loss while training: the seed's recipe as a running meter (`RunningLoss`), and the
device-side sums the framework callbacks share (`DeviceSums`).

The rule that keeps it exact without a device sync per batch: an update only keeps a
reference to the batch's detached per-item losses (or its mean), on their device. Nothing is
computed or copied then. When a figure is read, or once `FOLD_ITEMS` items or `FOLD_BATCHES`
batches are waiting, the waiting tensors are copied to the CPU in one go, converted to float64
(exact: every float32, bfloat16 or float16 is a float64) and added with `ExactSum`. So the sum
is the correctly rounded sum of the very values the loss gave, whatever the batch size, order or
number of processes; one sync every few thousand batches instead of one per batch.

``update(mean, items)`` (the seed's ``loss * actual_batch_size``) adds ``mean x items`` exactly
(as a Fraction, split into two floats): exact given the mean, but the mean itself was rounded
once by the framework (float32: about 6e-8 relative), so only per-item losses are exact to the
last bit.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from evalloss.errors import LossError
from evalloss.stats.exact import ExactSum
from evalloss.stats.state import EXACT, SUM, Reducible, fields

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    import numpy as np
    import numpy.typing as npt
    import torch

    from evalloss.losses import Loss

T = TypeVar("T")

FOLD_ITEMS = 1 << 20  # waiting items (4-8 MiB on the device) before they are folded
FOLD_BATCHES = 4096  # waiting batches before they are folded


def _host(tensors: list[torch.Tensor]) -> npt.NDArray[np.float64]:
    """Waiting tensors, flattened and concatenated, as float64 on the CPU (one copy per device)."""
    import torch

    if not tensors:
        return torch.zeros(0, dtype=torch.float64).numpy()
    flat = [t.reshape(-1) for t in tensors]
    if len({t.device for t in flat}) == 1:
        return torch.cat(flat).to("cpu", torch.float64).numpy()
    return torch.cat([t.to("cpu", torch.float64) for t in flat]).numpy()


def _exact_product(mean: float, items: int) -> list[float]:
    """``mean * items`` as floats whose sum is exactly the product (hi, then the remainder)."""
    product = Fraction(mean) * items
    high = float(product)
    return [high, float(product - Fraction(high))]


class DeviceSums:
    """Items' float64 values and integer weights, waiting on their device until read, then
    summed exactly (the module's rule). ``add`` never syncs."""

    def __init__(self) -> None:
        self.total = ExactSum()
        self.weight = self.items = self.nonfinite = 0
        self._values: list[torch.Tensor] = []
        self._weights: list[torch.Tensor] = []
        self._waiting = 0

    def add(self, values: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """Items' values (n,) and weights (n,) (None: each weighs 1), on any device."""
        n = values.numel()
        self._values.append(values.detach())
        if weights is None:
            self.weight += n
        else:
            self._weights.append(weights.detach())
        self.items += n
        self._waiting += n
        if self._waiting >= FOLD_ITEMS or len(self._values) >= FOLD_BATCHES:
            self.fold()

    def fold(self) -> None:
        """Copy the waiting values to the CPU and add them exactly (one sync)."""
        if not self._values:
            return
        import numpy as np

        values = _host(self._values)
        finite = np.isfinite(values)
        self.nonfinite += int(values.size - finite.sum())
        self.total.add(values if finite.all() else values[finite])
        if self._weights:
            self.weight += int(_host(self._weights).sum())
        self._values, self._weights, self._waiting = [], [], 0


class _Folded(Generic[T]):
    """A `RunningLoss` field: read, it folds what is waiting first; a merge sets it as is."""

    def __init__(self, doc: str) -> None:
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = "_" + name

    def __get__(self, meter: RunningLoss | None, owner: type | None = None) -> T:
        if meter is None:  # the class's attribute (help, inspect): the descriptor
            return self  # type: ignore[return-value]
        meter._fold()
        return getattr(meter, self.slot)  # type: ignore[no-any-return]

    def __set__(self, meter: RunningLoss, merged: T) -> None:
        setattr(meter, self.slot, merged)


class RunningLoss(Reducible):
    """The seed's recipe for a training loop's summary, batch by batch: the exact loss per
    item beside the sum of batch means that ``epoch_loss += loss.item()`` shows.

    Per batch, ``update(losses)`` (per-item losses, ``reduction='none'``) or ``update(mean,
    items)`` (the batch's mean loss and its actual batch size). No update syncs the device:
    see the module's rule. ``state()`` and ``merge(states)`` combine processes;
    ``all_reduce()`` does it under ``torch.distributed`` (uneven shards are fine).
    ``items`` counts every per-item loss and each ``update(mean, items)``'s items.
    """

    FIELDS = fields(loss_sum=EXACT, means_sum=EXACT, items=SUM, batches=SUM, nonfinite=SUM,
                    nonfinite_batches=SUM)  # fmt: skip

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every batch (a new epoch)."""
        self._loss_sum, self._means_sum = ExactSum(), ExactSum()
        self.items = self.batches = self._nonfinite = self._nonfinite_batches = 0
        self._waiting: list[tuple[Any, int | None]] = []  # (losses, None) or (mean, items)
        self._waiting_items = 0

    def update(self, losses: torch.Tensor | float, items: int | None = None) -> None:
        """Add one batch: its per-item losses (n,), or its mean loss and ``items``."""
        if items is None:
            if len(getattr(losses, "shape", ())) == 0:
                raise LossError(
                    "RunningLoss.update got one number, the batch's mean: give its batch size "
                    "too, update(mean, items), or the per-item losses (reduction='none')"
                )
            n = losses.numel()  # type: ignore[union-attr]
            if not n:
                return  # an empty batch has no mean: it is not a batch
            self._waiting.append((losses.detach(), None))  # type: ignore[union-attr]
        else:
            if isinstance(items, bool) or not isinstance(items, int) or items < 1:
                raise LossError(f"RunningLoss.update: items must be a count >= 1, got {items!r}")
            if getattr(losses, "numel", lambda: 1)() != 1:
                raise LossError("RunningLoss.update(mean, items): the mean must be one number")
            mean = losses.detach() if hasattr(losses, "detach") else float(losses)
            self._waiting.append((mean, items))
            n = items
        self.items += n
        self.batches += 1
        self._waiting_items += n
        if self._waiting_items >= FOLD_ITEMS or len(self._waiting) >= FOLD_BATCHES:
            self._fold()

    def _fold(self) -> None:
        """Every waiting batch to the CPU at once, then into the exact sums."""
        import numpy as np
        import torch

        if not self._waiting:
            return
        per_item = _host([t for t, n in self._waiting if n is None])
        tensors = [t for t, n in self._waiting if n is not None and isinstance(t, torch.Tensor)]
        means = iter(_host(tensors).tolist())
        finite = np.isfinite(per_item)
        self._loss_sum.add(per_item if finite.all() else per_item[finite])
        self._nonfinite += int(per_item.size - finite.sum())
        start = 0
        for losses, items in self._waiting:
            if items is None:
                n = losses.numel()
                batch = per_item[start : start + n]
                start += n
                self._add_mean(math.fsum(batch.tolist()) / n if finite[start - n : start].all()
                               else math.nan)  # fmt: skip
            else:
                mean = next(means) if isinstance(losses, torch.Tensor) else losses
                self._add_mean(mean, items)
        self._waiting, self._waiting_items = [], 0

    def _add_mean(self, mean: float, items: int = 0) -> None:
        """A batch's mean; with ``items`` (an ``update(mean, items)``), also its mean x items."""
        if not math.isfinite(mean):
            self._nonfinite_batches += 1
            self._nonfinite += items
            return
        self._means_sum.add([mean])
        if items:
            self._loss_sum.add(_exact_product(mean, items))

    # -- the reducible fields (each read folds what is waiting first) --

    loss_sum = _Folded[ExactSum](
        "The exact sum of every item's loss (for ``update(mean, items)``: mean x items)."
    )
    means_sum = _Folded[ExactSum]("The exact sum of the finite batches' means.")
    nonfinite = _Folded[int]("Items whose loss was NaN or infinite: `loss_per_item` is then NaN.")
    nonfinite_batches = _Folded[int](
        "Batches with a non-finite loss: `sum_of_batch_means` is then NaN."
    )

    # -- the figures --

    @property
    def loss_per_item(self) -> float:
        """The exact loss per item: the correctly rounded sum of every item's loss / items
        (NaN before any item, or when an item's loss is not finite)."""
        total = self.loss_sum
        if not self.items or self.nonfinite or total.overflowed:
            return math.nan
        return total.value / self.items

    @property
    def sum_of_batch_means(self) -> float:
        """What ``epoch_loss += loss.item()`` shows: the batches' means added up (it moves
        with the batch size: the seed's 12.00 at batch size 2 against 6.00 at 4)."""
        total = self.means_sum
        return math.nan if total.overflowed or self.nonfinite_batches else total.value

    @property
    def average_of_batch_means(self) -> float:
        """The sum of batch means / batches: per item only when every batch is the same size."""
        return self.sum_of_batch_means / self.batches if self.batches else math.nan

    def merge(self, other: Reducible | Iterable[Mapping[str, Any]]) -> None:
        """Fold in another meter, or other meters' ``state()``s (other processes'), as if
        their batches came here."""
        found = [other] if isinstance(other, Reducible) else list(other)
        states = [s.state() if isinstance(s, Reducible) else s for s in found]
        self.merge_states([self.state(), *states])

    def all_reduce(self) -> RunningLoss:
        """Under ``torch.distributed`` (initialised, several processes): every process's
        batches merged, in rank order, the same figures on every rank. Returns self."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, self.state())
            self.merge_states(gathered)
        return self

    def __repr__(self) -> str:
        figures = f"loss_per_item={self.loss_per_item!r}, items={self.items}, "
        return f"RunningLoss({figures}batches={self.batches}, sum={self.sum_of_batch_means!r})"


def item_terms(
    loss: Loss, outputs: torch.Tensor, targets: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """What each item adds to an exact figure, on the device, no sync: (values, weights).

    A token loss: each item's summed loss and its scored tokens (the token is the unit).
    Another: each item's own loss (the mean over its counted elements) weighing 1, or 0 (and
    value 0) for an item with no counted element (every target ignored).
    """
    import torch

    if loss.per_token:  # its per_item takes the shapes as given: checked here (no sync)
        outputs, targets = loss.align(outputs, targets)
        return loss.per_item(outputs, targets)
    sums, weights = loss.per_item(outputs, targets)
    counted = weights > 0
    return torch.where(counted, sums / weights.clamp(min=1), 0.0), counted.long()


def merged_sums(states: Sequence[Mapping[str, Any]]) -> tuple[ExactSum, int, int, int]:
    """(exact sum, weight, items, non-finite) of every `DeviceSums` `dump`, in rank order."""
    total = ExactSum.merged(s["total"] for s in states)
    return (total, sum(s["weight"] for s in states), sum(s["items"] for s in states),
            sum(s["nonfinite"] for s in states))  # fmt: skip


def dump(sums: DeviceSums) -> dict[str, Any]:
    """A `DeviceSums` as plain, picklable data (folded first)."""
    sums.fold()
    return {"total": sums.total.state(), "weight": sums.weight, "items": sums.items,
            "nonfinite": sums.nonfinite}  # fmt: skip
