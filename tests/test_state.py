"""Reducible state declared once (`stats.state`): the generic merge against an independent
computation over all the data at once, rank order, and the declarations of the real states."""

from __future__ import annotations

import itertools
import json
import math
import pickle
import random
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
import torch

from evalloss.losses import get as get_loss
from evalloss.run.engine import Accumulator
from evalloss.run.observers import Pairing
from evalloss.slices.cells import Cell
from evalloss.stats.exact import ExactSum
from evalloss.stats.paired import PairedSum
from evalloss.stats.ratio import PairedRatio
from evalloss.stats.state import (
    CONCAT,
    EXACT,
    MAX,
    MIN,
    NESTED,
    SUM,
    Reducible,
    each,
    fields,
    keyed,
)


class Tally(Reducible):
    """One field of every plain kind."""

    FIELDS = fields(items=SUM, loss=EXACT, largest=MAX, smallest=MIN, rows=CONCAT)

    def __init__(self) -> None:
        self.items = 0
        self.loss = ExactSum()
        self.largest, self.smallest = -math.inf, math.inf
        self.rows: list[int] = []

    def add(self, rows: list[int], values: list[float]) -> None:
        self.items += len(values)
        self.loss.add(values)
        self.largest = max([self.largest, *values])
        self.smallest = min([self.smallest, *values])
        self.rows += rows


class Nest(Reducible):
    """A tally per model (the same keys everywhere) and per group (keys differ by rank)."""

    FIELDS = fields(models=each(NESTED), totals=each(EXACT),
                    groups=keyed(NESTED, new=lambda _: Tally()))  # fmt: skip

    def __init__(self) -> None:
        self.models = {0: Tally(), 2: Tally()}
        self.totals = [ExactSum(), ExactSum()]
        self.groups: dict[str, Tally] = {}


def _gathered(states: list[Any]) -> list[Any]:
    """What `World.gather` hands back: every state pickled and unpickled."""
    return [pickle.loads(pickle.dumps(s)) for s in states]


def _data() -> tuple[list[int], list[float]]:
    rnd = random.Random(3)
    values = [rnd.choice([1e16, -1e16, 1.0, 0.1, 3e-8]) * rnd.uniform(0.5, 2) for _ in range(300)]
    values += [1e16, 1.0, -1e16] * 7  # naive summation loses every 1.0
    return list(range(len(values))), values


CUTS = [0, 7, 7, 250, 321]  # four ranks, one empty, uneven


def _shards() -> list[Tally]:
    rows, values = _data()
    shards = []
    for lo, hi in itertools.pairwise(CUTS):
        tally = Tally()
        for s in range(lo, hi, 40):  # fed in chunks, as batches come
            e = min(s + 40, hi)
            tally.add(rows[s:e], values[s:e])
        shards.append(tally)
    return shards


def test_merge_equals_one_computation_over_all_the_data() -> None:
    rows, values = _data()
    merged = Tally()
    merged.merge_states(_gathered([s.state() for s in _shards()]))
    assert merged.items == len(values) and type(merged.items) is int
    assert merged.loss.value == math.fsum(values)
    assert math.fsum(values) != sum(values)  # the data tells an exact sum from a naive one
    assert (merged.largest, merged.smallest) == (max(values), min(values))
    assert merged.rows == rows


def test_concat_is_in_rank_order() -> None:
    shards = _shards()
    merged = Tally()
    merged.merge_states(_gathered([s.state() for s in reversed(shards)]))
    want = [r for s in reversed(shards) for r in s.rows]
    assert merged.rows == want != sorted(want)


def test_merge_folds_another_shard_in_place() -> None:
    rows, values = _data()
    first, *others = _shards()
    for other in others:
        first.merge(other)
    assert (first.items, first.loss.value, first.rows) == (len(values), math.fsum(values), rows)


def test_nested_each_and_keyed_fields_merge_key_by_key() -> None:
    ranks = [Nest(), Nest(), Nest()]
    groups = [["b", "a"], [], ["c", "a"]]  # "a" on ranks 0 and 2, "b" only on 0, "c" on 2
    for r, (nest, names) in enumerate(zip(ranks, groups, strict=True)):
        for m in nest.models:
            nest.models[m].add([r], [float(10 * r + m)])
        nest.totals[1].add([0.1 * (r + 1)])
        for name in names:
            nest.groups[name] = Tally()
            nest.groups[name].add([r], [float(r)])
    merged = Nest()
    merged.merge_states(_gathered([n.state() for n in ranks]))
    assert {m: t.rows for m, t in merged.models.items()} == {0: [0, 1, 2], 2: [0, 1, 2]}
    assert merged.models[2].loss.value == math.fsum([2.0, 12.0, 22.0])
    assert [t.value for t in merged.totals] == [0.0, math.fsum([0.1, 0.2, 0.30000000000000004])]
    assert list(merged.groups) == ["b", "a", "c"]  # first seen, in rank order
    assert {k: (t.items, t.rows) for k, t in merged.groups.items()} == {
        "b": (1, [0]), "a": (2, [0, 2]), "c": (1, [2])
    }  # fmt: skip


def _exactly(state: dict[str, Any]) -> dict[str, Any]:
    """A state's figures: counts, and each exact sum's value as a fraction (the partials of
    one exact sum may be written more than one way)."""
    return {k: (sum(map(Fraction, v[0]), Fraction(0)), v[1]) if isinstance(v, list) else v
            for k, v in state.items()}  # fmt: skip


def _accumulator() -> Accumulator:
    return Accumulator(torch.nn.Identity(), get_loss("mse"), torch.device("cpu"), "m")


def test_accumulator_state_keeps_the_cached_format() -> None:
    """A cache entry holds an `Accumulator.state` as JSON: its keys and their form stay."""
    acc = _accumulator()
    acc.feed(torch.tensor([[1.0], [2.0], [4.0]], dtype=torch.float64),
             torch.tensor([[0.5], [2.0], [1.0]], dtype=torch.float64))  # fmt: skip
    state = acc.state()
    assert set(state) == {"loss_sum", "element_sum", "weights", "seconds", "items", "weight",
                          "nonfinite", "correct", "counted"}  # fmt: skip
    assert state["weights"] == (1, 1) and state["loss_sum"] == [[9.25], False]
    restored = _accumulator()
    restored.merge_states([json.loads(json.dumps(state)), _accumulator().state()])
    assert restored.result() == acc.result()
    assert (restored.lightest, restored.heaviest) == (1, 1)
    assert type(restored.items) is int and restored.items == 3


@pytest.mark.parametrize("kind", [PairedSum, PairedRatio])
def test_paired_states_merge_to_the_one_pass_state(kind: type[PairedSum | PairedRatio]) -> None:
    rng = np.random.default_rng(5)
    losses, baseline = rng.normal(3, 1, 200), rng.normal(3, 1, 200)
    weights = rng.integers(0, 5, 200)

    def fed(lo: int, hi: int) -> PairedSum | PairedRatio:
        pair = kind()
        if isinstance(pair, PairedRatio):
            pair.add(losses[lo:hi], baseline[lo:hi], weights[lo:hi])
        else:
            pair.add(losses[lo:hi], baseline[lo:hi])
        return pair

    merged = kind()
    merged.merge_states(_gathered([fed(lo, hi).state() for lo, hi in [(0, 3), (3, 3), (3, 200)]]))
    assert _exactly(merged.state()) == _exactly(fed(0, 200).state())
    assert merged.comparison(3.0) == fed(0, 200).comparison(3.0)


def test_pairing_and_cells_declare_every_field_they_merge() -> None:
    pairing, cell = Pairing(3, base=1), Cell(3, base=1, tokens=True)
    cell.items, cell.nonfinite = 4, [1, 0, 2]
    cell.sums[2].add([0.5, 0.25])
    assert set(pairing.state()["sums"]) == {0, 2}
    merged = Cell(3, base=1, tokens=True)
    merged.merge_states(_gathered([cell.state(), cell.state()]))
    assert (merged.items, merged.nonfinite, merged.sums[2].value) == (8, [2, 0, 4], 1.5)
    assert set(merged.paired) == {0, 2} and isinstance(merged.paired[0], PairedRatio)
