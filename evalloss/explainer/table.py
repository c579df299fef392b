"""`explain`: the seed article's table for the user's own model and data.

One pass over the data computes every item's loss; for each batch size to show, the same item
losses are grouped into consecutive batches (`grouping.BatchGrouping`) and the training-log
recipes are replayed on them: the sum of batch averages, that sum times the batch size, and
that sum over the number of batches, each against the exact loss sum and loss per item. The
forward batch size is only a throughput knob: the rows do not depend on it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from evalloss._version import __version__
from evalloss.cache import reuse
from evalloss.errors import EvallossWarning, OptionError, shown
from evalloss.explainer.grouping import BatchGrouping
from evalloss.explainer.tokengroups import TokenRegrouping
from evalloss.models import trainerrun, warn_if_unused
from evalloss.models.hf import trainer_counts_first_tokens
from evalloss.options import Options, PathLike
from evalloss.report import ExplainReport, ExplainRow
from evalloss.run import distributed
from evalloss.run.plan import resolve
from evalloss.run.prepared import prepare
from evalloss.run.ranking import data_info
from evalloss.sources.documents import Documents
from evalloss.stats.paired import relative_error

if TYPE_CHECKING:
    from typing import Unpack

    from evalloss.options import RunKeywords
    from evalloss.run.batch import Batch
    from evalloss.run.plan import Plan

DEFAULT_BATCH_SIZES = (1, 10, 32, 64, 256)
MAX_BATCH_SIZE = 2**62  # a batch count, not memory: any size that fits an int64


def explain(
    checkpoint: PathLike,
    *,
    batch_sizes: Sequence[int] | int = (),
    progress: Callable[[int], None] | None = None,
    cache: PathLike | None = None,
    cache_max_size: int | str | None = None,
    **options: Unpack[RunKeywords],
) -> ExplainReport:
    """What a training log would print at each batch size, against the exact loss.

    ``batch_sizes``: the batch sizes to show (one int or several; default 1, 10, 32, 64, 256),
    in the order given, duplicates dropped. The model is evaluated once over the whole data set.
    ``options``: as for `evalloss.compare` (`RunKeywords`: ``data``, ``model``, ``loss``, ...).
    ``progress``: called with the number of rows after every batch (for a progress bar).
    ``cache``, ``cache_max_size``: as for `evalloss.compare` (docs/cache.md): a model found
    there is read, not evaluated; one evaluated is stored (explain's entries are those of
    ``compare`` over sequence data read in file order).
    """
    # every process would evaluate everything and print its own table
    distributed.single_process_only("explain", "it runs in one process; run it without torchrun")
    sizes = _check_batch_sizes(batch_sizes)
    cached = reuse.settings(cache, cache_max_size)
    settings = replace(Options.of(**options), ordered=True)  # batches of consecutive items
    plan = resolve([trainerrun.one_checkpoint(checkpoint, "CHECKPOINT")], settings)
    warn_if_unused(settings.model, plan.checkpoints)
    (ckpt,) = plan.checkpoints
    token = plan.loss.per_token
    regroup: _Regrouping | TokenRegrouping = (
        TokenRegrouping(sizes, progress, first_tokens=_first_tokens(plan))
        if token
        else _Regrouping([BatchGrouping(b) for b in sizes], progress)
    )
    hits = None if cached is None else reuse.lookup(plan, *cached, ordered=True)
    ready = prepare(plan) if hits is None else reuse.prepare(plan, hits)
    (acc,) = ready.evaluate([regroup], distributed.World()).accumulators
    result = acc.result()
    if isinstance(regroup, TokenRegrouping):
        rows, extra = regroup.rows(result), regroup.figures(result)
        _warn_zero_token_documents(regroup)
    else:
        rows = tuple(_row(g, result.loss_sum, result.loss_per_item, result.items)
                     for g in regroup.groupings)  # fmt: skip
        extra = {}
    return ExplainReport(
        evalloss_version=__version__,
        checkpoint=ckpt.path,
        data=data_info(plan, result.items),
        loss=plan.loss.name,
        device=str(plan.device),
        precision=plan.precision,
        per_item=result.loss_per_item,
        loss_sum=result.loss_sum,
        items=result.items,
        nonfinite_items=result.nonfinite_items,
        rows=rows,
        **extra,
    )


class _Regrouping:
    """Feeds the one model's item losses to every grouping (a `run.batch.Observer`), until an item
    that is not finite makes every figure undefined."""

    def __init__(
        self, groupings: list[BatchGrouping], progress: Callable[[int], None] | None
    ) -> None:
        self.groupings, self.progress, self.nonfinite = groupings, progress, False

    def batch(self, batch: Batch) -> None:
        if self.progress is not None:
            self.progress(len(batch.weights))
        values = batch.losses[0].tolist()  # (n,) float64
        self.nonfinite = self.nonfinite or not all(map(math.isfinite, values))
        if self.nonfinite:
            return  # keep counting
        for grouping in self.groupings:
            grouping.add(values)


def _first_tokens(plan: Plan) -> bool:
    """The Trainer row divides by the unshifted labels: a Hugging Face folder whose installed
    transformers' Trainer counts them (`models.hf.trainer_counts_first_tokens`), on data whose
    every token but the first is scored (text, token documents without a labels mask), so
    each document's labels are its scored tokens plus its first one."""
    (checkpoint,) = plan.checkpoints
    unmasked = isinstance(plan.source, Documents) and plan.source.labels is None
    return checkpoint.config is not None and unmasked and trainer_counts_first_tokens(checkpoint)


def _warn_zero_token_documents(regroup: TokenRegrouping) -> None:
    if regroup.first_tokens and regroup.zero_token_documents:
        warnings.warn(f"{regroup.zero_token_documents} documents score no token: where one is a "
                      "single token, Trainer counts it in its divisor and the Trainer row does "
                      "not", EvallossWarning, stacklevel=3)  # fmt: skip


def _check_batch_sizes(batch_sizes: Sequence[int] | int) -> tuple[int, ...]:
    if isinstance(batch_sizes, int):
        batch_sizes = (batch_sizes,)
    for b in batch_sizes:
        if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= MAX_BATCH_SIZE:
            raise OptionError(
                f"must be integers from 1 to {MAX_BATCH_SIZE}, got {shown(b)}", key="--batch-size"
            )
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
