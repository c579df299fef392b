"""A plan made ready to run: the models left to evaluate, by group (those a cache holds left
out), and in a one-pass run those models built before any row is read, so that every process
agrees on a model that fails to build before the data is opened. `Prepared.evaluate` runs
them: in one pass (`onepass`) or group by group (`sequential`), as the plan's `Mode` says; a
run with ``--cache`` is a `cache.reuse.Cached`, which evaluates the same way and replays.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from evalloss.run import onepass, sequential
from evalloss.run.engine import Accumulator
from evalloss.run.plan import Mode, Plan

if TYPE_CHECKING:
    from evalloss.run import distributed
    from evalloss.run.batch import Observer


@dataclass(frozen=True)
class Prepared:
    """The plan, the models to evaluate and, in one pass, those models built."""

    plan: Plan
    groups: list[list[int]]  # the plan's groups, less the models a cache holds (none empty)
    built: list[Accumulator]  # `Mode.ONE_PASS`: the models of ``groups[0]``, built; else []

    def evaluate(
        self, observers: Sequence[Observer], world: distributed.World
    ) -> sequential.Passes:
        """Every model over the data: in one pass (the models `built`) or group by group
        (`sequential`), every batch to the ``observers``."""
        plan = self.plan
        if plan.mode is Mode.BY_GROUP:
            return sequential.evaluate(self, observers, world)
        onepass.one_pass(plan.source, plan.dtype, plan.device, self.built, observers,
                         plan.batch_size, world)  # fmt: skip
        return sequential.Passes(self.built, plan.source.bytes_read(), by_bytes=False,
                                 text_words=plan.source.words_read())  # fmt: skip


def prepare(plan: Plan, cached: Container[int] = ()) -> Prepared:
    """The plan's models but the ``cached`` ones, by group; in one pass, built now."""
    groups = [g for g in ([i for i in group if i not in cached] for group in plan.groups) if g]
    built = []
    if plan.mode is Mode.ONE_PASS and groups:
        built = [accumulator(plan, i) for i in groups[0]]
    return Prepared(plan, groups, built)


def accumulator(plan: Plan, index: int) -> Accumulator:
    """Model ``index`` built (weights loaded, on the device), its sums empty."""
    checkpoint = plan.checkpoints[index]
    return Accumulator(plan.build(checkpoint), plan.loss, plan.device, checkpoint.path)
