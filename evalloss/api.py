"""The library API: `compare` wires checkpoints, data, losses and the engine into a `Report`.

The data is read once: every block is split into batches, and every model evaluates each
batch before the next is read, so K models cost one pass over the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from evalloss import gate
from evalloss.cache import reuse
from evalloss.errors import DataError, EvallossError, OptionError
from evalloss.models import trainerrun, warn_if_unused
from evalloss.models.user import source_file
from evalloss.options import Options, PathLike
from evalloss.render import plot as plotting
from evalloss.report import ItemSample, Report
from evalloss.run import distributed, onepass, readahead
from evalloss.run.observers import TOKENS, Pairing, Plot, Taps
from evalloss.run.plan import Mode, Plan, resolve
from evalloss.run.prepared import Prepared, prepare
from evalloss.run.ranking import TextCounts, build_report, unique_names
from evalloss.slices import gating
from evalloss.slices.sums import SliceSums
from evalloss.sources.slicing import check_bins

if TYPE_CHECKING:
    from typing import Unpack

    from evalloss.options import RunKeywords


def compare(  # noqa: PLR0913 - the public API: keyword-only, mirrors the CLI
    checkpoints: Sequence[PathLike],
    *,
    batch_size: int | None = None,
    threads: int | None = None,
    baseline: PathLike | None = None,
    min_improvement: float | str | gate.Threshold | None = None,
    max_loss: float | str | gate.Threshold | None = None,
    require_significant: bool = False,
    slice: Sequence[str] = (),
    slice_bins: int | None = None,
    max_slice_regression: float | str | gate.Threshold | None = None,
    min_slice_items: int = 30,
    per_item: PathLike | None = None,
    plot: PathLike | None = None,
    sample: bool = False,
    progress: Callable[[int], None] | None = None,
    no_hash: bool = False,
    one_at_a_time: bool = False,
    cache: PathLike | None = None,
    cache_max_size: int | str | None = None,
    **options: Unpack[RunKeywords],
) -> Report:
    """Evaluate every checkpoint over the whole data set and rank them by exact loss per item.

    ``options``: the data and how to read it, build, run and score the models (`RunKeywords`:
    ``data`` (required), ``model``, ``model_kwargs``, ``loss``, ``target``, ``feature``,
    ``no_header``, ``device``, ``precision``). ``baseline`` (added to the run if not listed)
    gives every other model paired statistics against it; ``min_improvement`` (``0.01`` or
    ``"2%"``), ``max_loss`` and ``require_significant`` make a promotion gate (`evalloss.gate`),
    returned as ``report.gate``: a failed gate is data, not an exception.

    ``per_item``: also write every item's loss for every model to this .parquet/.csv file.
    ``plot``: also draw the per-item loss distributions to this .png (needs matplotlib).
    ``sample``: keep a sample of the items' losses (up to 200,000, the same items for every
    model) in ``report.sample``, for the HTML report's distributions (one process only: under
    torchrun it stays None).
    ``progress``: called with the number of rows after every batch (for a progress bar).
    ``no_hash``: leave the files' sha256 out of ``report.provenance``.
    ``threads``: torch's intra-op threads (default: the cores this process may use, divided
    by the processes on the node under torchrun). ``batch_size``: rows per forward pass.
    ``cache``: a folder of per-model results keyed by everything a figure depends on
    (docs/cache.md): cached models are read, not evaluated (``ModelResult.cached``);
    ``cache_max_size`` (bytes, or ``"500M"``, ``"2G"``) evicts the least recently used
    entries past it. One process only.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) each process evaluates its share of the rows and
    every process returns the same report, reduced exactly, with ``world_size`` set.
    """
    _check_positive(batch_size, "--batch-size")
    columns = (slice,) if isinstance(slice, str) else tuple(slice)
    sample = sample and distributed.env_world()[1] == 1
    # ordered: sequence data in file order where the rows are item ids (export, plot, sample)
    settings = replace(Options.of(checksum=not no_hash, **options), slice=columns,
                       slice_bins=check_bins(slice_bins, columns),
                       ordered=per_item is not None or plot is not None or sample)  # fmt: skip
    if max_slice_regression is not None and not columns:
        raise OptionError("needs --slice (the columns to judge)", key="--max-slice-regression")
    rules = gate.rules(
        baseline=baseline is not None,
        min_improvement=min_improvement,
        max_loss=max_loss,
        require_significant=require_significant,
        max_slice_regression=max_slice_regression,
        min_slice_items=min_slice_items,
    )
    if baseline is not None:
        baseline = trainerrun.one_checkpoint(baseline, "--baseline")
    paths, base = _with_baseline(trainerrun.expand(checkpoints), baseline)
    asked = _Asked(per_item=per_item, plot=plot, sample=sample, progress=progress,
                   batch_size=batch_size, one_at_a_time=one_at_a_time,
                   cache=reuse.settings(cache, cache_max_size))  # fmt: skip
    if rules is not None and len(paths) == 1 and base == 0:
        raise OptionError("the baseline is the only checkpoint: nothing to gate", key="--baseline")
    for option, value in (("--per-item", per_item), ("--plot", plot)):
        if value is not None:  # before any process group: the same refusal on every rank
            distributed.single_process_only(option)
    world = distributed.World.from_env()
    with world, readahead.threads(threads, world.local_size):
        ready = _prepare(paths, settings, asked, world)
        report = _report(ready, base, rules, world)
    if ready.taps.sample is not None and sample:
        kept = ItemSample(tuple(ready.taps.names), ready.taps.sample.values(),
                          ready.taps.sample.seen)  # fmt: skip
        report = replace(report, sample=kept)
    return report


@dataclass(frozen=True)
class _Asked:
    """What `compare` is asked beside the options: its outputs (checked by `Taps`), the
    batch size, the run's mode and the cache."""

    per_item: PathLike | None
    plot: PathLike | None
    sample: bool  # keep a sample of the items' losses (one process only)
    progress: Callable[[int], None] | None
    batch_size: int | None  # None: the default (`run.plan.fitted_batch_size`)
    one_at_a_time: bool
    cache: tuple[PathLike, int | None] | None  # its folder and most bytes (`reuse.settings`)


@dataclass(frozen=True)
class _Ready:
    """A run prepared on every process: the models ready to evaluate (`Prepared`, or
    `reuse.Cached` with ``--cache``) and what taps the pass (`Taps`)."""

    run: Prepared
    taps: Taps


def _prepare(
    paths: Sequence[PathLike], options: Options, asked: _Asked, world: distributed.World
) -> _Ready:
    """Resolve the plan, look the models up in the cache, build every model left (where they
    run in one pass) and check the outputs, the same on every process: they agree on the
    first error before any data is read."""
    error, ready = None, None
    try:
        plan = resolve(paths, options, batch_size=asked.batch_size,
                       one_at_a_time=asked.one_at_a_time)  # fmt: skip
        if world.rank == 0:  # one warning line under torchrun
            warn_if_unused(options.model, plan.checkpoints)
        found = None
        if asked.cache is not None:  # group by group, sequence data is read in file order
            ordered = plan.options.ordered or plan.mode is Mode.BY_GROUP
            found = reuse.lookup(plan, *asked.cache, ordered=ordered)
        run = prepare(plan) if found is None else reuse.prepare(plan, found)
        ready = _Ready(run, _taps(plan, asked))
    except EvallossError as exc:
        error = exc
    world.agree(error)
    assert ready is not None
    return ready


def _taps(plan: Plan, asked: _Asked) -> Taps:
    """What watches the pass besides the models' sums, checked before any data is read."""
    token = plan.loss.per_token
    taps = Taps(names=unique_names([c.path for c in plan.checkpoints]),
                targets=TOKENS if token else plan.source.targets,
                integer_targets=plan.loss.classes or token,
                per_item=asked.per_item, progress=asked.progress,
                plot=None if asked.plot is None else Plot(asked.plot, plotting.draw),
                inputs=inputs_of(plan), slicing=plan.source.slicing)  # fmt: skip
    if asked.sample:
        taps.keep_sample()
    return taps


def _report(
    ready: _Ready, base: int | None, rules: gate.Rules | None, world: distributed.World
) -> Report:
    """Every model over the data, the states reduced across processes, the report ranked and
    gated; then the taps finished (the export put in place, the plot drawn)."""
    plan, taps = ready.run.plan, ready.taps
    models = len(plan.checkpoints)
    token = plan.loss.per_token
    pairing = Pairing(models, base, tokens=token) if base is not None else None
    sliced = _slice_sums(plan, models, base)
    with taps:
        passes = ready.run.evaluate([o for o in (pairing, sliced, taps) if o is not None], world)
        accumulators = passes.accumulators
        onepass.reduce(world, [*accumulators, *(o for o in (pairing, sliced) if o)])
        if accumulators[0].items == 0:
            world.agree(DataError("no data rows", path=plan.source.path))
        if sliced is not None:
            world.agree(_one_slice(sliced, plan.source.path))
        counted = None
        if passes.text_bytes is not None:
            words = None if passes.text_words is None else sum(world.gather(passes.text_words))
            counted = TextCounts(sum(world.gather(passes.text_bytes)), words)
        error, built = None, None
        try:  # rank 0 alone hashes the data now: its error is every process's
            built = build_report(plan, accumulators, pairing, world, counted,
                                 by_bytes=passes.by_bytes,
                                 slices=None if sliced is None else sliced.report())  # fmt: skip
        except EvallossError as exc:
            error = exc
        world.agree(error)
        assert built is not None
        report = built
        if rules is not None:
            verdict = gate.evaluate(rules, report.models)
            report = replace(report, gate=gating.extend(verdict, rules, report.models))
        taps.finish(report)
    return report


def _slice_sums(plan: Plan, models: int, base: int | None) -> SliceSums | None:
    """The per-slice sums of a ``--slice`` run (None without it)."""
    if not plan.options.slice:
        return None
    slicing = plan.source.slicing
    if slicing is None:
        raise OptionError("this data has no columns to slice by: use CSV, Parquet, or "
                          "documents or text in JSON Lines, Parquet or CSV", key="--slice")
    if plan.source.bytes_read() is not None and len(set(plan.tokenizers)) > 1:
        raise OptionError("the models' tokenizers differ, so there is no per-token figure "
                          "to slice; slice models of one tokenizer at a time", key="--slice")
    return SliceSums(slicing, models, base, tokens=plan.loss.per_token,
                     accuracy=plan.loss.has_accuracy)  # fmt: skip


def _one_slice(sliced: SliceSums, path: str) -> DataError | None:
    """A slice column whose every row falls in one slice: nothing to compare."""
    sliced.flush()
    for name, cells in sliced.cells.items():
        if len(cells) == 1:
            column = next(c for c in sliced.slicing.columns if c.name == name)
            value = column.values[next(iter(cells))]
            return DataError(f"all rows in one slice ({gating.shown_value(value)}): "
                             "nothing to compare", path=path, key=name)  # fmt: skip
    return None


def inputs_of(plan: Plan) -> list[str]:
    """Every file the run reads, however it was named: checkpoints, data, the user's model
    and Dataset sources (a ``pkg.mod:Name`` spec's too, once imported). No output may
    overwrite one."""
    code = [f for f in (source_file(plan.options.model), source_file(plan.options.data)) if f]
    files = [f for c in plan.checkpoints for f in (c.path, *c.files)]
    return [*files, plan.source.path, *code]


def _with_baseline(
    paths: Sequence[PathLike], baseline: PathLike | None
) -> tuple[list[PathLike], int | None]:
    """The checkpoints to run and the baseline's index: a listed file (same resolved path)
    or the baseline added last."""
    if baseline is None:
        return list(paths), None
    for i, p in enumerate(paths):
        if _same_path(p, baseline):
            return list(paths), i
    return [*paths, baseline], len(paths)


def _same_path(a: PathLike, b: PathLike) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError):  # a symlink loop: opening it says so, with its name
        return os.fspath(a) == os.fspath(b)


def _check_positive(value: int | None, option: str) -> None:
    if value is not None and value < 1:
        raise OptionError(f"must be a positive integer, got {value}", key=option)
