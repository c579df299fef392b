"""What a language model's evaluation loop prints when documents are batched: the rows of
``explain`` for token losses (the seed article's table, for tokens).

Documents are grouped into consecutive batches of ``size`` (file order, the last batch
smaller). For batch b with n_b documents, S_b summed loss and T_b scored tokens, the loop's
recipes are its token mean S_b / T_b, and then over the batches:

    sum_of_averages           = sum of S_b / T_b            (epoch_loss += loss.item())
    average_of_averages       = that / batches
    sequence_weighted_average = sum of n_b * S_b / D_b / sum of n_b
                                (transformers' Trainer.evaluate eval_loss; Lightning's
                                 self.log(on_epoch=True) with its default batch size)

where D_b is T_b, except where the installed transformers' Trainer divides by the batch's
unshifted label count (``first_tokens``: `models.hf.trainer_counts_first_tokens`, a GPT-2
folder in transformers 5.25): then D_b = T_b + the batch's documents that have a scored
token (each one's first token, counted though never scored). A document that scores no token
adds nothing to D_b (a one-token document's token, which Trainer counts there, cannot be told
from an empty document here: `zero_token_documents` counts them). A batch with D_b = 0 has no
mean (D_b = 0 exactly when T_b = 0) and is skipped, as Trainer drops a NaN batch loss
(``logging_nan_inf_filter``). The state is bounded: exact sums of the finished batches'
figures and the open batch's running sums.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from evalloss.report import ExplainRow
from evalloss.stats.exact import ExactSum
from evalloss.stats.paired import relative_error

if TYPE_CHECKING:
    from evalloss.report import Result
    from evalloss.run.batch import Batch


class TokenGrouping:
    """Feed every document's (loss sum, tokens) once, in file order (any chunking)."""

    def __init__(self, size: int, *, first_tokens: bool = False) -> None:
        self.size, self.first_tokens = size, first_tokens
        self.documents = self.batches = self.counted = 0
        self._means, self._weighted = ExactSum(), ExactSum()  # sum S/T, sum n S/D
        self._open_sum, self._open_tokens, self._open_docs = ExactSum(), 0, 0
        self._open_scored = 0  # the open batch's documents with a scored token
        self._counted_docs = 0  # documents in batches that have a mean

    def add(self, sums: Sequence[float], tokens: Sequence[int]) -> None:
        for s, t in zip(sums, tokens, strict=True):
            self._open_sum.add([s])
            self._open_tokens += int(t)
            self._open_docs += 1
            self._open_scored += int(t) > 0
            if self._open_docs == self.size:
                self._close()

    def _close(self) -> None:
        if self._open_docs:
            self.batches += 1
            self.documents += self._open_docs
            if self._open_tokens:
                self._means.add([self._open_sum.value / self._open_tokens])
                self.counted += 1
                self._counted_docs += self._open_docs
                divisor = self._open_tokens + (self._open_scored if self.first_tokens else 0)
                self._weighted.add([self._open_docs * self._open_sum.value / divisor])
        self._open_sum, self._open_tokens, self._open_docs = ExactSum(), 0, 0
        self._open_scored = 0

    def finish(self) -> TokenGrouping:
        """Close the last (smaller) batch; returns self."""
        self._close()
        return self

    @property
    def last_batch(self) -> int:
        if not self.batches:
            return 0
        return self.documents - (self.batches - 1) * self.size

    @property
    def sum_of_averages(self) -> float | None:
        return self._means.value if self.counted else None

    @property
    def average_of_averages(self) -> float | None:
        return self._means.value / self.counted if self.counted else None

    @property
    def sequence_weighted_average(self) -> float | None:
        return self._weighted.value / self._counted_docs if self._counted_docs else None


class TokenRegrouping:
    """`explain`'s observer for token losses: every grouping fed each document's (loss sum,
    tokens) in file order, and the mean of per-document means kept on the side."""

    def __init__(
        self,
        sizes: Sequence[int],
        progress: Callable[[int], None] | None,
        *,
        first_tokens: bool = False,
    ) -> None:
        self.groupings = [TokenGrouping(b, first_tokens=first_tokens) for b in sizes]
        self.progress = progress
        self.first_tokens = first_tokens
        self.zero_token_documents = 0
        self._item_means, self._items_counted = ExactSum(), 0

    def batch(self, batch: Batch) -> None:
        if self.progress is not None:
            self.progress(len(batch.weights))
        sums = batch.losses[0].tolist()  # (n,) float64: each document's summed loss
        tokens = batch.weights.tolist()  # (n,) its scored tokens
        for grouping in self.groupings:
            grouping.add(sums, tokens)
        means = [s / t for s, t in zip(sums, tokens, strict=True) if t]
        self._item_means.add(means)
        self._items_counted += len(means)
        self.zero_token_documents += len(tokens) - len(means)

    def rows(self, result: Result) -> tuple[ExplainRow, ...]:
        """One row per batch size: the loop's figures and their errors against the exact
        loss per token (None throughout when some token's loss is not finite)."""
        truth = result.loss_per_token if not result.nonfinite_items else None
        out = []
        for g in (grouping.finish() for grouping in self.groupings):
            average = g.average_of_averages if truth is not None else None
            weighted = g.sequence_weighted_average if truth is not None else None
            out.append(
                ExplainRow(
                    batch_size=g.size,
                    batches=g.batches,
                    last_batch=g.last_batch,
                    sum_of_averages=g.sum_of_averages if truth is not None else None,
                    normalized_sum=None,
                    average_of_averages=average,
                    normalized_sum_error=None,
                    average_of_averages_error=relative_error(average, truth),
                    sequence_weighted_average=weighted,
                    sequence_weighted_average_error=relative_error(weighted, truth),
                )
            )
        return tuple(out)

    def figures(self, result: Result) -> dict[str, Any]:
        """The exact figures per token, and the mean of per-document means."""
        counted = self._items_counted and not result.nonfinite_items
        return {
            "tokens": result.weight,
            "loss_per_token": result.loss_per_token,
            "average_of_item_averages": (
                self._item_means.value / self._items_counted if counted else None
            ),
            "trainer_divisor": "labels" if self.first_tokens else "tokens",
        }
