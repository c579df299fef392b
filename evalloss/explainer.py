"""`explain`: the seed article's table for the user's own model and data.

One pass over the data computes every item's loss; for each batch size to show, the same item
losses are grouped into consecutive batches (`stats.BatchGrouping`) and the training-log
recipes are replayed on them: the sum of batch averages, that sum times the batch size, and
that sum over the number of batches, each against the exact loss sum and loss per item. The
forward batch size is only a throughput knob: the rows do not depend on it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from . import distributed, evaluation
from ._version import __version__
from .engine import Accumulator
from .errors import OptionError
from .models import build, parse_kwargs, prepare, warn_if_unused
from .plan import PathLike, default_batch_size, resolve
from .report import DataInfo, ExplainReport, ExplainRow
from .stats import BatchGrouping, relative_error

if TYPE_CHECKING:
    import torch

DEFAULT_BATCH_SIZES = (1, 10, 32, 64, 256)


def explain(
    checkpoint: PathLike,
    *,
    data: PathLike,
    batch_sizes: Sequence[int] | int = (),
    model: str | None = None,
    model_kwargs: str | dict[str, Any] | None = None,
    loss: str | None = None,
    target: Sequence[str] = (),
    feature: Sequence[str] = (),
    no_header: bool = False,
    device: str = "auto",
    precision: str = "float32",
    progress: Callable[[int], None] | None = None,
) -> ExplainReport:
    """What a training log would print at each batch size, against the exact loss.

    ``batch_sizes``: the batch sizes to show (one int or several; default 1, 10, 32, 64, 256),
    in the order given, duplicates dropped. The model is evaluated once over the whole data set.
    ``progress``: called with the number of rows after every batch (for a progress bar).
    """
    # every process would evaluate everything and print its own table
    distributed.single_process_only("explain", "it runs in one process; run it without torchrun")
    sizes = _check_batch_sizes(batch_sizes)
    plan = resolve([checkpoint], data, loss, target, feature, no_header, device, precision)
    warn_if_unused(model, plan.checkpoints)
    kwargs = parse_kwargs(model_kwargs) if isinstance(model_kwargs, str) else model_kwargs
    (ckpt,) = plan.checkpoints
    module = prepare(build(ckpt, model, kwargs or {}), plan.device, plan.dtype)
    acc = Accumulator(module, plan.loss, plan.device, ckpt.path)
    groupings = [BatchGrouping(b) for b in sizes]

    def regroup(row: int, targets: torch.Tensor, losses: list[torch.Tensor]) -> None:
        if progress is not None:
            progress(len(targets))
        if acc.nonfinite:
            return  # a non-finite item makes every figure undefined; keep counting
        values = losses[0].tolist()  # (n,) float64
        for grouping in groupings:
            grouping.add(values)

    evaluation.run(
        plan.dataset,
        plan.dtype,
        plan.device,
        [acc],
        {},
        None,
        default_batch_size(plan.device),
        distributed.World(),
        on_batch=regroup,
    )
    result = acc.result()
    return ExplainReport(
        evalloss_version=__version__,
        checkpoint=ckpt.path,
        data=DataInfo(
            path=plan.dataset.path,
            items=result.items,
            targets=plan.dataset.targets,
            features=len(plan.dataset.features),
        ),
        loss=plan.loss.name,
        device=str(plan.device),
        precision="float64" if str(plan.dtype) == "torch.float64" else "float32",
        per_item=result.loss_per_item,
        loss_sum=result.loss_sum,
        items=result.items,
        nonfinite_items=result.nonfinite_items,
        rows=tuple(_row(g, result.loss_sum, result.loss_per_item, result.items) for g in groupings),
    )


def _check_batch_sizes(batch_sizes: Sequence[int] | int) -> tuple[int, ...]:
    if isinstance(batch_sizes, int):
        batch_sizes = (batch_sizes,)
    for b in batch_sizes:
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise OptionError(f"must be positive integers, got {b!r}", key="--batch-size")
    return tuple(dict.fromkeys(batch_sizes)) or DEFAULT_BATCH_SIZES


def _row(
    grouping: BatchGrouping, loss_sum: float | None, per_item: float | None, items: int
) -> ExplainRow:
    batches = -(-items // grouping.size)  # also when non-finite items stopped the grouping
    last = items - (batches - 1) * grouping.size if batches else 0
    if loss_sum is None:
        return ExplainRow(grouping.size, batches, last, None, None, None, None, None)
    normalized, average = grouping.normalized_sum, grouping.average_of_averages
    return ExplainRow(
        batch_size=grouping.size,
        batches=grouping.batches,
        last_batch=grouping.last_batch,
        sum_of_averages=grouping.sum_of_averages,
        normalized_sum=normalized,
        average_of_averages=average,
        normalized_sum_error=relative_error(normalized, loss_sum),
        average_of_averages_error=relative_error(average, per_item),
    )
