"""The exact validation loss inside Lightning: `ExactValidation`.

It reads what Lightning's own validation pass hands every callback: each batch and what
``validation_step`` returned (the model's outputs: a tensor, or a dict holding ``logits``).
Each item's float64 (sum, weight) is computed on the device, no sync
(`run.running.item_terms`: per token for ``causal-lm``, per item otherwise), and kept until the
epoch ends. Under several devices Lightning's ``DistributedSampler`` pads the data with
duplicates so every process gets as many items: process r's item j is item ``r + j * W`` of
the padded order, a duplicate when that is past the data set's length, so each process counts
only its first ``len(range(r, N, W))`` items. At the end of the epoch every process's sums are
gathered (one ``all_gather_object``) and merged in rank order, and every process logs the same
``val_exact_loss`` (``pl_module.log``, float64): ``trainer.callback_metrics``, the loggers,
``ModelCheckpoint(monitor=...)`` and ``EarlyStopping`` see it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lightning.pytorch.callbacks import Callback

from evalloss.errors import EvallossWarning, OptionError
from evalloss.integrations import _shards
from evalloss.losses import Loss
from evalloss.losses import get as get_loss
from evalloss.run.running import DeviceSums, item_terms

if TYPE_CHECKING:
    import lightning.pytorch as pl
    import torch

Select = Callable[[Any, Any], tuple["torch.Tensor", "torch.Tensor"]]
_OUTPUT_KEYS = ("logits", "outputs", "preds", "predictions")
_TARGET_KEYS = ("labels", "targets", "target", "y")


def _first(found: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((found[k] for k in keys if k in found), None)


def default_select(outputs: Any, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(model outputs, targets) of one validation batch: ``validation_step``'s tensor, or its
    dict's ``logits`` (``outputs``, ``preds``); the targets from that dict's ``labels``
    (``targets``), else the batch's (a dict's ``labels``, or a tuple's last element)."""
    import torch

    preds = _first(outputs, _OUTPUT_KEYS) if isinstance(outputs, dict) else outputs
    targets = _first(outputs, _TARGET_KEYS) if isinstance(outputs, dict) else None
    if targets is None:
        if isinstance(batch, dict):
            targets = _first(batch, _TARGET_KEYS)
        elif isinstance(batch, tuple | list) and len(batch) > 1:
            targets = batch[-1]
    if not isinstance(preds, torch.Tensor) or preds.dim() == 0:
        raise OptionError(
            f"validation_step returned {_what(preds)}; return the model's outputs, e.g. "
            "{'loss': loss, 'logits': logits} (or give select=)",
            key="ExactValidation",
        )
    if not isinstance(targets, torch.Tensor):
        raise OptionError(
            "no targets: return them as 'labels' beside 'logits', use (inputs, targets) "
            "batches or a batch dict with 'labels' (or give select=)",
            key="ExactValidation",
        )
    return preds, targets


def _what(found: Any) -> str:
    if found is None:
        return "nothing"
    shape = getattr(found, "shape", None)
    if shape is not None and len(shape) == 0:
        return "one number (a mean?)"
    return type(found).__name__


def _owned(loader: Any) -> int | None:
    """This process's items that are not a distributed sampler's padding (None: all)."""
    from torch.utils.data.distributed import DistributedSampler

    sampler = getattr(loader, "sampler", None)
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last:
        return None
    return _share(sampler)


def _share(sampler: Any) -> int:
    """A distributed sampler's process's items of the data set, its padding or cut aside."""
    return len(range(sampler.rank, len(sampler.dataset), sampler.num_replicas))


def _dropped(loader: Any) -> int:
    """This process's share of the data set its loader never yields (``drop_last=True``: a
    distributed sampler's tail, the last incomplete batch); 0 where that cannot be told."""
    from torch.utils.data.distributed import DistributedSampler

    sampler = getattr(loader, "sampler", None)
    try:
        distributed = isinstance(sampler, DistributedSampler)
        share = _share(sampler) if distributed else len(loader.dataset)
        yielded = len(sampler)  # type: ignore[arg-type]
    except TypeError:  # an iterable data set or sampler: no length
        return 0
    batch = getattr(loader, "batch_size", None)
    if getattr(loader, "drop_last", False) and batch:
        yielded -= yielded % batch
    return max(0, share - yielded)


class ExactValidation(Callback):
    """Give it to ``lightning.Trainer(callbacks=[ExactValidation(loss="cross-entropy")])``:
    after every validation epoch, ``val_exact_loss`` is the exact loss per item (per token for
    ``causal-lm``) over the validation data, whatever the batch size and number of devices.

    ``loss``: an evalloss loss name (docs/api.md) or `Loss`; ``name``: the logged key (with
    ``/dataloader_idx_k`` for several validation loaders); ``select(outputs, batch) ->
    (outputs, targets)`` when `default_select`'s rules do not fit; ``prog_bar`` as ``self.log``'s.
    """

    def __init__(self, loss: str | Loss = "cross-entropy", *, name: str = "val_exact_loss",
                 select: Select | None = None, ignore_index: int | None = None,
                 prog_bar: bool = False) -> None:  # fmt: skip
        self.loss = loss if isinstance(loss, Loss) else get_loss(loss, ignore_index)
        self.name, self.prog_bar = name, prog_bar
        self._select: Select = select or default_select
        self._sums: dict[int, DeviceSums] = {}
        self._seen: dict[int, int] = {}

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._sums, self._seen = {}, {}

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                outputs: Any, batch: Any, batch_idx: int,
                                dataloader_idx: int = 0) -> None:  # fmt: skip
        preds, targets = self._select(outputs, batch)
        start = self._seen.get(dataloader_idx, 0)
        n = len(targets)
        self._seen[dataloader_idx] = start + n
        owned = _owned(_loader(trainer, dataloader_idx))
        if owned is not None and start + n > owned:  # the sampler's padding: not counted
            keep = max(0, owned - start)
            preds, targets = preds[:keep], targets[:keep]
        sums = self._sums.setdefault(dataloader_idx, DeviceSums())
        if len(targets):
            sums.add(*item_terms(self.loss, preds, targets.to(preds.device)))

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import torch

        loaders = sorted(self._sums)
        mine = {k: (_shards.dump(self._sums[k]), _dropped(_loader(trainer, k))) for k in loaders}
        gathered = _shards.gather(mine)
        if trainer.sanity_checking:  # a few batches only: not a figure
            return
        several = len(_loaders(trainer)) > 1
        for k in sorted({k for g in gathered for k in g}):
            loss, _ = _shards.figures([g[k][0] for g in gathered if k in g])
            key = f"{self.name}/dataloader_idx_{k}" if several else self.name
            dropped = sum(g[k][1] for g in gathered if k in g)
            if dropped and _shards.world()[0] == 0:
                warnings.warn(f"ExactValidation: {key} leaves out {dropped} validation item(s) "
                              "the loader drops (drop_last=True): set drop_last=False to "
                              "score them all", EvallossWarning, stacklevel=2)  # fmt: skip
            pl_module.log(key, torch.tensor(loss, dtype=torch.float64), on_step=False,
                          on_epoch=True, batch_size=1, sync_dist=False, prog_bar=self.prog_bar,
                          add_dataloader_idx=False)  # fmt: skip


def _loaders(trainer: pl.Trainer) -> list[Any]:
    found = trainer.val_dataloaders
    if found is None:
        return []
    return list(found.values()) if isinstance(found, dict) else (
        list(found) if isinstance(found, list | tuple) else [found])


def _loader(trainer: pl.Trainer, index: int) -> Any:
    found = _loaders(trainer)
    return found[index] if index < len(found) else None
