"""A pass's reduced states -> the ranked `Report`: models in rank order, paired statistics,
provenance. Ranking: ascending ``loss_per_item``, ties in command-line order, non-finite last.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalloss._version import __version__
from evalloss.report import (
    Comparison,
    DataInfo,
    ModelResult,
    Report,
    Result,
    SliceFigures,
)
from evalloss.run.provenance import collect as collect_provenance

if TYPE_CHECKING:
    from evalloss.run import distributed
    from evalloss.run.engine import Accumulator
    from evalloss.run.observers import Pairing
    from evalloss.run.plan import Plan


def build_report(
    plan: Plan,
    accumulators: Sequence[Accumulator],
    pairing: Pairing | None = None,
    world: distributed.World | None = None,
    text_bytes: int | None = None,
    *,
    by_bytes: bool = False,
    slices: SliceFigures | None = None,
) -> Report:
    """The report of a finished (and reduced) pass; ``text_bytes``: the UTF-8 bytes of text
    data (bits per byte); ``by_bytes``: the models' tokenizers differ, so bits per byte
    ranks and the paired statistics are per byte (the pairing saw bytes as weights);
    ``slices``: the run's slice columns and each model's figures on them (``--slice``)."""
    results = [a.result() for a in accumulators]
    vs = _comparisons(pairing, results, text_bytes if by_bytes else None)
    token = plan.loss.per_token
    figures = [r.loss_per_token if token else r.loss_per_item for r in results]
    if by_bytes and text_bytes:
        figures = [None if r.loss_sum is None else r.loss_sum / text_bytes for r in results]
    order = sorted(range(len(results)), key=lambda i: (figures[i] is None, figures[i] or 0.0, i))
    names = unique_names([c.path for c in plan.checkpoints])
    base = None if pairing is None else pairing.base
    by_element = not token and any(r.weights_differ for r in results)
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
            **(_token_figures(results[i], text_bytes) if token else {}),
            per_byte=by_bytes,
            **(_element_figures(results[i]) if by_element else {}),
            slices=() if slices is None else slices.models[i],
            cached=accumulators[i].cached,
        )
        for rank, i in enumerate(order, start=1)
    )
    return Report(
        evalloss_version=__version__,
        data=data_info(plan, results[0].items, text_bytes),
        loss=plan.loss.name,
        device=str(plan.device),
        precision=plan.precision,
        batch_size=plan.batch_size,
        world_size=1 if world is None else world.size,
        models=models,
        has_baseline=base is not None,
        unit="byte" if by_bytes else plan.loss.unit,
        by_element=by_element,
        slicing=() if slices is None else slices.columns,
        provenance=collect_provenance(
            checkpoints=[f for c in plan.checkpoints for f in c.paths],
            folders={k: v for c in plan.checkpoints for k, v in c.folders.items()},
            source=plan.source,
            device=plan.device,
            hashed=plan.source.checksum and (world is None or world.rank == 0),
        ),
    )


def _comparisons(
    pairing: Pairing | None, results: list[Result], text_bytes: int | None
) -> dict[int, Comparison]:
    """The paired statistics; per byte (``text_bytes`` given): in bits, against the
    baseline's bits per byte."""
    if pairing is None:
        return {}
    if text_bytes is None:
        return pairing.comparisons(results)
    bits = math.log(2)
    compared = pairing.comparisons([replace(r, weight=text_bytes) for r in results])
    return {
        i: replace(c, delta=None if c.delta is None else c.delta / bits,
                   ci95=None if c.ci95 is None else (c.ci95[0] / bits, c.ci95[1] / bits))
        for i, c in compared.items()
    }  # fmt: skip


def _token_figures(result: Result, text_bytes: int | None) -> dict[str, Any]:
    """tokens, loss_per_token, perplexity = exp(loss_per_token) (None past float64), and for
    text bits_per_byte = loss_sum / (bytes x ln 2)."""
    per_token = result.loss_per_token
    perplexity = None
    if per_token is not None and per_token < _MAX_EXP:
        perplexity = math.exp(per_token)
    bits = None
    if text_bytes and result.loss_sum is not None:
        bits = result.loss_sum / (text_bytes * math.log(2))
    return {"tokens": result.weight, "loss_per_token": per_token, "perplexity": perplexity,
            "bits_per_byte": bits}  # fmt: skip


_MAX_EXP = math.log(sys.float_info.max)


def _element_figures(result: Result) -> dict[str, Any]:
    """Where items differ in weight: counted elements, and the loss per counted element."""
    return {"weight": result.weight, "loss_per_element": result.loss_per_element}


def data_info(plan: Plan, items: int, text_bytes: int | None = None) -> DataInfo:
    source = plan.source
    return DataInfo(path=source.path, items=items, targets=source.targets,
                    features=len(source.features), bytes=text_bytes)  # fmt: skip


def unique_names(paths: Sequence[str]) -> list[str]:
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
