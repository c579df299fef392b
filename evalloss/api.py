"""The library API: `compare` wires checkpoints, data, losses and the engine into a `Report`.

The data is read once: every block is split into batches, and every model evaluates each
batch before the next is read, so K models cost one pass over the file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import distributed, evaluation, gate
from ._version import __version__
from .distributed import single_process_only
from .engine import Accumulator
from .errors import DataError, EvallossError, OptionError
from .models import build, parse_kwargs, prepare, warn_if_unused
from .peritem import Taps
from .plan import PathLike, Plan, default_batch_size, resolve
from .provenance import collect as collect_provenance
from .report import DataInfo, ModelResult, Report
from .stats import PairedSum


def compare(
    checkpoints: Sequence[PathLike],
    *,
    data: PathLike,
    model: str | None = None,
    model_kwargs: str | dict[str, Any] | None = None,
    loss: str | None = None,
    target: Sequence[str] = (),
    feature: Sequence[str] = (),
    no_header: bool = False,
    batch_size: int | None = None,
    device: str = "auto",
    precision: str = "float32",
    baseline: PathLike | None = None,
    min_improvement: float | str | gate.Threshold | None = None,
    max_loss: float | str | gate.Threshold | None = None,
    require_significant: bool = False,
    per_item: PathLike | None = None,
    plot: PathLike | None = None,
    progress: Callable[[int], None] | None = None,
    no_hash: bool = False,
    threads: int | None = None,
) -> Report:
    """Evaluate every checkpoint over the whole data set and rank them by exact loss per item.

    ``baseline`` (added to the run if not listed) gives every other model paired statistics
    against it; ``min_improvement`` (``0.01`` or ``"2%"``), ``max_loss`` and
    ``require_significant`` make a promotion gate (`evalloss.gate`), returned as
    ``report.gate``: a failed gate is data, not an exception.

    ``per_item``: also write every item's loss for every model to this .parquet/.csv file.
    ``plot``: also draw the per-item loss distributions to this .png (needs matplotlib).
    ``progress``: called with the number of rows after every batch (for a progress bar).
    ``no_hash``: leave the files' sha256 out of ``report.provenance``.
    ``threads``: torch's intra-op threads (default: the cores this process may use, divided
    by the processes on the node under torchrun).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) each process evaluates its share of the rows and
    every process returns the same report, reduced exactly, with ``world_size`` set.
    """
    _check_batch_size(batch_size)
    rules = gate.rules(
        baseline=baseline is not None,
        min_improvement=min_improvement,
        max_loss=max_loss,
        require_significant=require_significant,
    )
    paths, base = _with_baseline(checkpoints, baseline)
    if rules is not None and len(paths) == 1 and base == 0:
        raise OptionError("the baseline is the only checkpoint: nothing to gate", key="--baseline")
    for option, value in (("--per-item", per_item), ("--plot", plot)):
        if value is not None:  # before any process group: the same refusal on every rank
            single_process_only(option)
    world = distributed.World.from_env()
    with world, evaluation.threads(threads, world.local_size):
        error, taps = None, None
        try:  # every process resolves the same plan; they agree before reading
            plan = resolve(paths, data, loss, target, feature, no_header, device, precision)
            if no_hash:
                plan = replace(plan, dataset=replace(plan.dataset, checksum=False))
            taps = Taps(
                names=_unique_names([c.path for c in plan.checkpoints]),
                targets=plan.dataset.targets,
                integer_targets=plan.loss.classes,
                per_item=per_item,
                plot=plot,
                progress=progress,
                inputs=[
                    *(c.path for c in plan.checkpoints),
                    plan.dataset.path,
                    *_model_file(model),
                ],
            )
            if world.rank == 0:  # one warning line under torchrun
                warn_if_unused(model, plan.checkpoints)
            kwargs = parse_kwargs(model_kwargs) if isinstance(model_kwargs, str) else model_kwargs
            accumulators = [
                Accumulator(
                    prepare(build(c, model, kwargs or {}), plan.device, plan.dtype),
                    plan.loss,
                    plan.device,
                    c.path,
                )
                for c in plan.checkpoints
            ]
        except EvallossError as exc:
            error = exc
        world.agree(error)
        assert taps is not None
        batch_size = batch_size or default_batch_size(plan.device)
        # model index -> its paired statistics against the baseline, fed batch by batch
        paired = {i: PairedSum() for i in range(len(paths)) if base is not None and i != base}
        with taps:
            items = evaluation.run(
                plan.dataset,
                plan.dtype,
                plan.device,
                accumulators,
                paired,
                base,
                batch_size,
                world,
                taps.batch,
            )
            items = evaluation.reduce(world, accumulators, paired, items)
            if items == 0:
                world.agree(DataError("no data rows", path=plan.dataset.path))
            report = _report(plan, accumulators, items, batch_size, base, paired, world)
            if rules is not None:
                report = replace(report, gate=gate.evaluate(rules, report.models))
            taps.finish(report)
    return report


def _model_file(spec: str | None) -> list[str]:
    """The file a ``path/to/file.py:Name`` spec reads, if any."""
    file = (spec or "").rpartition(":")[0]
    return [file] if file and Path(file).is_file() else []


def _with_baseline(
    paths: Sequence[PathLike], baseline: PathLike | None
) -> tuple[list[PathLike], int | None]:
    """The checkpoints to run and the baseline's index: a listed file (same resolved path)
    or the baseline added last."""
    if baseline is None:
        return list(paths), None
    wanted = Path(baseline).resolve()
    for i, p in enumerate(paths):
        if Path(p).resolve() == wanted:
            return list(paths), i
    return [*paths, baseline], len(paths)


def _check_batch_size(batch_size: int | None) -> None:
    if batch_size is not None and batch_size < 1:
        raise OptionError(f"must be a positive integer, got {batch_size}", key="--batch-size")


def _report(
    plan: Plan,
    accumulators: Sequence[Accumulator],
    items: int,
    batch_size: int,
    base: int | None = None,
    paired: dict[int, PairedSum] | None = None,
    world: distributed.World | None = None,
) -> Report:
    results = [a.result() for a in accumulators]
    base_loss = None if base is None else results[base].loss_per_item
    vs = {i: pair.comparison(base_loss) for i, pair in (paired or {}).items()}
    order = sorted(
        range(len(results)),
        key=lambda i: (results[i].loss_per_item is None, results[i].loss_per_item or 0.0, i),
    )
    names = _unique_names([c.path for c in plan.checkpoints])
    models = tuple(
        ModelResult(
            rank=rank,
            name=names[i],
            path=plan.checkpoints[i].path,
            loss_per_item=results[i].loss_per_item,
            loss_sum=results[i].loss_sum,
            items=results[i].items,
            accuracy=results[i].accuracy,
            nonfinite_items=results[i].nonfinite_items,
            is_baseline=i == base,
            seconds=round(results[i].seconds, 6),
            vs_baseline=vs.get(i),
        )
        for rank, i in enumerate(order, start=1)
    )
    return Report(
        evalloss_version=__version__,
        data=DataInfo(
            path=plan.dataset.path,
            items=items,
            targets=plan.dataset.targets,
            features=len(plan.dataset.features),
        ),
        loss=plan.loss.name,
        device=str(plan.device),
        precision="float64" if str(plan.dtype) == "torch.float64" else "float32",
        batch_size=batch_size,
        world_size=1 if world is None else world.size,
        models=models,
        has_baseline=base is not None,
        provenance=collect_provenance(
            checkpoints=[c.path for c in plan.checkpoints],
            dataset=plan.dataset,
            device=plan.device,
            hashed=plan.dataset.checksum and (world is None or world.rank == 0),
        ),
    )


def _unique_names(paths: Sequence[str]) -> list[str]:
    """File stems, made unique by adding parent folders where stems clash."""
    names = [Path(p).stem for p in paths]
    depth = 1
    while len(set(names)) < len(names) and depth < 8:
        depth += 1
        names = [
            "/".join(Path(p).with_suffix("").parts[-depth:]) if names.count(n) > 1 else n
            for p, n in zip(paths, names, strict=True)
        ]
    seen: dict[str, int] = {}
    unique = []
    for n in names:  # the same file given twice
        seen[n] = seen.get(n, 0) + 1
        unique.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return unique
