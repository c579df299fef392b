"""A pass's reduced states -> the ranked `Report`: models in rank order, paired statistics,
provenance. Ranking: ascending ``loss_per_item``, ties in command-line order, non-finite last.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
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


@dataclass(frozen=True)
class TextCounts:
    """Text data's counts over every process: UTF-8 bytes, and lm-evaluation-harness's words
    (None where the source does not count them)."""

    bytes: int
    words: int | None = None


def build_report(
    plan: Plan,
    accumulators: Sequence[Accumulator],
    pairing: Pairing | None = None,
    world: distributed.World | None = None,
    text: TextCounts | None = None,
    *,
    by_bytes: bool = False,
    slices: SliceFigures | None = None,
) -> Report:
    """The report of a finished (and reduced) pass; ``text``: the UTF-8 bytes (bits per byte)
    and words (word perplexity) of text data; ``by_bytes``: the models' tokenizers differ, so
    bits per byte ranks and the paired statistics are per byte (the pairing saw bytes as
    weights);
    ``slices``: the run's slice columns and each model's figures on them (``--slice``)."""
    text_bytes, text_words = (None, None) if text is None else (text.bytes, text.words)
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
            **(_token_figures(results[i], text_bytes, text_words) if token else {}),
            per_byte=by_bytes,
            **(_element_figures(results[i]) if by_element else {}),
            slices=() if slices is None else slices.models[i],
            cached=accumulators[i].cached,
            **_logged(plan, i),
        )
        for rank, i in enumerate(order, start=1)
    )
    return Report(
        evalloss_version=__version__,
        data=data_info(plan, results[0].items, text_bytes, text_words),
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


def _logged(plan: Plan, index: int) -> dict[str, Any]:
    """A Trainer checkpoint's step and the eval_loss its run logged there."""
    logged = plan.steps[index] if plan.steps else None
    if logged is None:
        return {}
    return {"step": logged.step, "logged_eval_loss": logged.eval_loss}


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


def _token_figures(result: Result, text_bytes: int | None, text_words: int | None = None
                   ) -> dict[str, Any]:  # fmt: skip
    """tokens, loss_per_token, perplexity = exp(loss_per_token) (None past float64), and for
    text bits_per_byte = loss_sum / (bytes x ln 2), byte_perplexity = exp(loss_sum / bytes)
    and word_perplexity = exp(loss_sum / words): lm-evaluation-harness's three."""
    per_token, total = result.loss_per_token, result.loss_sum
    bits = per_byte = per_word = None
    if total is not None and text_bytes:
        bits, per_byte = total / (text_bytes * math.log(2)), total / text_bytes
    if total is not None and text_words:
        per_word = total / text_words
    return {"tokens": result.weight, "loss_per_token": per_token, "perplexity": _exp(per_token),
            "bits_per_byte": bits, "byte_perplexity": _exp(per_byte),
            "word_perplexity": _exp(per_word)}  # fmt: skip


_MAX_EXP = math.log(sys.float_info.max)


def _exp(x: float | None) -> float | None:
    """exp(x); None for None or past float64's range."""
    return math.exp(x) if x is not None and x < _MAX_EXP else None


def _element_figures(result: Result) -> dict[str, Any]:
    """Where items differ in weight: counted elements, and the loss per counted element."""
    return {"weight": result.weight, "loss_per_element": result.loss_per_element}


def data_info(plan: Plan, items: int, text_bytes: int | None = None,
              text_words: int | None = None) -> DataInfo:  # fmt: skip
    source = plan.source
    return DataInfo(path=source.path, items=items, targets=source.targets,
                    features=len(source.features), bytes=text_bytes, words=text_words,
                    prefix_token=plan.options.prefix_token)  # fmt: skip


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
