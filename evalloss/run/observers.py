"""What watches a pass besides the models' sums: paired statistics against the baseline, the
``--per-item`` export, the sample behind ``--plot``, the progress bar (`run.batch.Observer`).

`Pairing` feeds every model's item losses, paired with the baseline's, into `stats.PairedSum`
(a reducible state, merged across processes). `Sample` keeps a bounded, deterministic sample of
items for the plot: every row gets a fixed pseudo-random key (a hash of its row number) and
the `SAMPLE_ITEMS` rows with the smallest keys are kept, for all models at once, so paired
differences stay paired; it does not depend on batch size, block size or block order. `Taps`
holds the export, the sample and the progress callback.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from evalloss.errors import OptionError
from evalloss.io.files import atomic, check_output
from evalloss.run.distributed import single_process_only
from evalloss.run.export import Export, check_path
from evalloss.stats.paired import PairedSum
from evalloss.stats.ratio import PairedRatio
from evalloss.stats.state import NESTED, Reducible, each, fields

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch

    from evalloss.report import Comparison, Report, Result
    from evalloss.run.batch import Batch
    from evalloss.sources.slicing import Slicing

PLOT_FORMATS = ("png", "svg", "pdf")  # --plot's suffixes (what `render.plot.draw` draws)
SAMPLE_ITEMS = 200_000  # items kept for the plot
TOKENS = ("tokens",)  # the per-item export's target column for token losses


class Pairing(Reducible):
    """Every model against the baseline (model ``base``), item by item: one `PairedSum` each,
    or for token losses (``tokens``) document by document: one `ratio.PairedRatio` each, the
    documents' scored tokens counted from their labels."""

    FIELDS = fields(sums=each(NESTED))

    def __init__(self, models: int, base: int, *, tokens: bool = False) -> None:
        self.base, self.tokens = base, tokens
        kind = PairedRatio if tokens else PairedSum
        self.sums: dict[int, PairedSum | PairedRatio] = {
            i: kind() for i in range(models) if i != base
        }

    def batch(self, batch: Batch) -> None:
        losses = batch.losses
        baseline = losses[self.base].numpy()
        for i, pair in self.sums.items():
            if isinstance(pair, PairedRatio):
                pair.add(losses[i].numpy(), baseline, batch.weights.numpy())
            else:
                pair.add(losses[i].numpy(), baseline)

    def comparisons(self, results: Sequence[Result]) -> dict[int, Comparison]:
        """Model index -> its paired statistics (the baseline has none)."""
        base = results[self.base]
        base_loss = base.loss_per_token if self.tokens else base.loss_per_item
        return {i: pair.comparison(base_loss) for i, pair in self.sums.items()}


class Sample:
    """A bounded, deterministic sample of items: their per-item loss under every model.

    Incoming batches wait in a list until they hold ``size`` items, then merge with the kept
    sample and are cut back to ``size``: each item is copied O(1) times on average, whatever
    the batch size, and memory stays under about three times ``size`` items.
    """

    def __init__(self, models: int, size: int = SAMPLE_ITEMS) -> None:
        import numpy as np

        self.size = size
        self.seen = 0
        self.keys = np.empty(0, dtype=np.uint64)
        self.losses = np.empty((0, models), dtype=np.float64)  # (kept, models)
        self._pending: list[tuple[npt.NDArray[np.uint64], npt.NDArray[np.float64]]] = []
        self._waiting = 0

    def add(self, row: int, losses: Sequence[torch.Tensor]) -> None:
        import numpy as np

        n = len(losses[0])
        self.seen += n
        keys = _hash(np.arange(row, row + n, dtype=np.uint64))
        self._pending.append((keys, np.stack([loss.numpy() for loss in losses], axis=1)))
        self._waiting += n
        if self._waiting >= self.size:
            self._merge()

    def _merge(self) -> None:
        import numpy as np

        if self._pending:
            self.keys = np.concatenate([self.keys, *(k for k, _ in self._pending)])
            self.losses = np.concatenate([self.losses, *(v for _, v in self._pending)])
            self._pending, self._waiting = [], 0
        if len(self.keys) > self.size:
            keep = np.argpartition(self.keys, self.size)[: self.size]
            self.keys, self.losses = self.keys[keep], self.losses[keep]

    def values(self) -> npt.NDArray[np.float64]:
        """The kept items' losses, (kept, models), at most ``size`` rows."""
        self._merge()
        return self.losses


def _hash(rows: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """splitmix64 of each row number: a fixed, well-mixed key per row (wraps mod 2**64)."""
    import numpy as np

    z = rows + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


Draw = Callable[["Report", Sequence[str], "npt.NDArray[np.float64]", int, str], bytes]


@dataclass(frozen=True)
class Plot:
    """``--plot``: the file, and the function that draws a report and its sample as the
    bytes of such a file (`render.plot.draw`: the pass knows no renderer)."""

    path: str | os.PathLike[str]
    draw: Draw

    def check(self, inputs: Sequence[str]) -> None:
        """Fail before the pass, not after it: a known suffix, a folder, not one of the
        ``inputs``, matplotlib installed, one process."""
        if self.format not in PLOT_FORMATS:
            raise OptionError(f"must end in {', '.join('.' + f for f in PLOT_FORMATS)}",
                              path=Path(self.path), key="--plot")  # fmt: skip
        check_output(self.path, inputs, option="--plot")
        if importlib.util.find_spec("matplotlib") is None:
            raise OptionError("needs matplotlib, which is not installed: "
                              "pip install 'evalloss[plot]'", key="--plot")  # fmt: skip
        single_process_only("--plot")

    @property
    def format(self) -> str:
        return Path(self.path).suffix.lower().lstrip(".")

    def write(self, report: Report, names: Sequence[str], sample: Sample,
              inputs: Sequence[str]) -> None:  # fmt: skip
        """Draw the report and its sample, and write the file atomically (never over one of
        ``inputs``)."""
        data = self.draw(report, names, sample.values(), sample.seen, self.format)
        try:
            with atomic(self.path, inputs) as tmp:
                tmp.write_bytes(data)
        except OSError as exc:
            raise OptionError(f"cannot write ({exc})", path=Path(self.path),
                              key="--plot") from exc  # fmt: skip


class Taps:
    """What watches the pass besides the models' sums: export, plot sample, progress.

    Checked when made (before any model is built); ``with taps:`` opens the export and drops
    it if the pass fails; `finish` puts the export in place and draws the plot.
    """

    def __init__(  # noqa: PLR0913 - keyword-only: what the run taps
        self,
        *,
        names: Sequence[str],
        targets: Sequence[str],
        integer_targets: bool,
        per_item: str | os.PathLike[str] | None = None,
        plot: Plot | None = None,
        progress: Callable[[int], None] | None = None,
        inputs: Sequence[str] = (),
        slicing: Slicing | None = None,
    ) -> None:
        self.names, self.targets, self.integer_targets = names, targets, integer_targets
        self.slicing = slicing
        self.inputs = list(inputs)
        self.per_item, self.plot, self.progress = per_item, plot, progress
        if per_item is not None:
            check_path(per_item, inputs)
        if plot is not None:
            plot.check(inputs)
        self.export: Export | None = None
        self.sample = Sample(len(names)) if plot is not None else None

    def keep_sample(self) -> None:
        """Keep the sample without a plot too (the HTML report's distributions)."""
        if self.sample is None:
            self.sample = Sample(len(self.names))

    def __enter__(self) -> Taps:
        if self.per_item is not None:
            self.export = Export(
                self.per_item, self.names, self.targets,
                integer_targets=self.integer_targets, inputs=self.inputs, slicing=self.slicing,
            )  # fmt: skip
        return self

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        if kind is not None and self.export is not None:
            self.export.abort()

    def batch(self, batch: Batch) -> None:
        """One batch seen by every model. For token losses (targets named ``tokens``) the
        export gets each item's scored tokens, its weight."""
        row, losses, weights, keys = batch.row, batch.losses, batch.weights, batch.keys
        if self.export is not None:
            self.export.add(row, self._shown(batch.targets, weights), losses,
                            None if keys is None else keys.groups)  # fmt: skip
        if self.sample is not None:
            if self.targets == TOKENS:  # a document's loss per token; none where nothing scored
                import torch

                scale = weights.double().clamp(min=1)
                losses = [torch.where(weights > 0, loss / scale, torch.nan) for loss in losses]
            self.sample.add(row, losses)
        if self.progress is not None:
            self.progress(len(weights))

    def _shown(self, targets: torch.Tensor | None, weights: torch.Tensor) -> torch.Tensor:
        """What the export's target columns get: the targets (n, T); one element per item
        as (n, 1); else (tokens, masks: more than one element per item) the weight (n, 1)."""
        if self.targets == TOKENS or targets is None:
            return weights[:, None]
        if targets.dim() == 2 and targets.shape[1] == len(self.targets):
            return targets
        if targets[0].numel() == 1 and len(self.targets) == 1:
            return targets.reshape(len(targets), 1)
        return weights[:, None]

    def finish(self, report: Report) -> None:
        """Draw the plot, then put the export in place (last: a failed plot drops it)."""
        if self.plot is not None and self.sample is not None:
            self.plot.write(report, self.names, self.sample, self.inputs)
        if self.export is not None:
            self.export.commit()
