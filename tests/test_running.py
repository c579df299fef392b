"""`evalloss.RunningLoss` against the seed's hand-worked table and float64 `math.fsum` oracles:
exact whatever the batch size, order or sharding; no device work per update."""

from __future__ import annotations

import json
import math
import random
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import evalloss
from evalloss.losses import get as get_loss
from evalloss.run import running
from evalloss.run.running import RunningLoss, item_terms

SEED_ITEMS = [4.0, 5.0, 2.0, 4.0, 3.0, 2.0, 3.0, 1.0]  # the article's 8 items


def _meter(values: list[float], sizes: list[int]) -> RunningLoss:
    meter, start = RunningLoss(), 0
    for n in sizes:
        meter.update(torch.tensor(values[start : start + n], dtype=torch.float32))
        start += n
    return meter


@pytest.mark.parametrize(("size", "shown"), [(2, 12.0), (4, 6.0)])
def test_the_seed_table(size: int, shown: float) -> None:
    """Batch size 2 shows 12.00, batch size 4 shows 6.00; the loss per item is 3.0 for both
    (the article writes its total as 23.0; its items add to 24)."""
    meter = _meter(SEED_ITEMS, [size] * (8 // size))
    assert meter.sum_of_batch_means == shown
    assert meter.average_of_batch_means == 24.0 / 8
    assert meter.loss_per_item == 3.0
    assert (meter.items, meter.batches) == (8, 8 // size)
    means = RunningLoss()  # the seed's un_avg_loss_sum = loss * actual_batch_size
    for start in range(0, 8, size):
        means.update(torch.tensor(SEED_ITEMS[start : start + size]).mean(), size)
    assert (means.loss_per_item, means.sum_of_batch_means) == (3.0, shown)


def test_evalloss_exports_it() -> None:
    assert evalloss.RunningLoss is RunningLoss
    assert "RunningLoss" in evalloss.__all__


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(2.0**-20, 1e4, width=32), min_size=1, max_size=300), st.integers(0, 99))
def test_exact_and_order_free_whatever_the_batches(values: list[float], seed: int) -> None:
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(values)), min(len(values) - 1, rng.randint(0, 12))))
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, len(values)], strict=True)]
    oracle = math.fsum(values) / len(values)  # float64, one item at a time
    assert _meter(values, sizes).loss_per_item == oracle
    shuffled = values[:]
    rng.shuffle(shuffled)
    assert _meter(shuffled, [1] * len(values)).loss_per_item == oracle
    means = [math.fsum(values[a : a + n]) / n for a, n in zip([0, *cuts], sizes, strict=True)]
    assert _meter(values, sizes).sum_of_batch_means == pytest.approx(math.fsum(means), rel=1e-12)


def test_mean_times_items_is_added_exactly() -> None:
    """update(mean, items): the exact sum of mean x items, against Fractions."""
    rng = random.Random(3)
    batches = [(rng.uniform(0.1, 9.0), rng.randint(1, 10**6)) for _ in range(50)]
    meter = RunningLoss()
    for mean, n in batches:
        meter.update(torch.tensor(mean, dtype=torch.float64), n)
    exact = sum(Fraction(m) * n for m, n in batches)
    items = sum(n for _, n in batches)
    assert meter.loss_sum.value == float(exact)
    assert meter.loss_per_item == float(exact) / items
    assert meter.items == items


def test_shards_merge_to_one_meter() -> None:
    """Three uneven shards (a rank's each), merged through their plain states: the one-meter
    figures, bit for bit."""
    torch.manual_seed(0)
    values = torch.rand(101).tolist()
    whole = _meter(values, [7] * 14 + [3])
    shards = [_meter(values[:40], [7] * 5 + [5]), _meter(values[40:41], [1]),
              _meter(values[41:], [7] * 8 + [4])]  # fmt: skip
    states = json.loads(json.dumps([s.state() for s in shards[1:]]))  # plain data
    merged = shards[0]
    merged.merge(states)
    assert merged.loss_per_item == whole.loss_per_item
    assert merged.items == 101 and merged.batches == 6 + 1 + 9
    other = _meter(values[:50], [50])
    other.merge(_meter(values[50:], [51]))
    assert other.loss_per_item == whole.loss_per_item


def test_updates_do_no_device_work() -> None:
    """Meta tensors have no data: any copy, sync or kernel that needs values would fail. An
    update and the item terms of a batch only keep and shape tensors; reading then fails."""
    meter = RunningLoss()
    for _ in range(3):
        meter.update(torch.empty(16, device="meta"))
        meter.update(torch.empty((), device="meta"), 16)
    assert meter.items == 96 and meter.batches == 6
    sums = running.DeviceSums()
    logits, labels = torch.empty(4, 9, 50, device="meta"), torch.zeros(4, 9, dtype=torch.long, device="meta")
    sums.add(*item_terms(get_loss("causal-lm"), logits, labels))
    sums.add(*item_terms(get_loss("cross-entropy"), torch.empty(4, 3, device="meta"),
                         torch.zeros(4, dtype=torch.long, device="meta")))  # fmt: skip
    assert sums.items == 8
    with pytest.raises((NotImplementedError, RuntimeError)):
        _ = meter.loss_per_item


def test_folding_early_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    values = torch.rand(500).tolist()
    wanted = _meter(values, [10] * 50)
    monkeypatch.setattr(running, "FOLD_BATCHES", 3)
    monkeypatch.setattr(running, "FOLD_ITEMS", 25)
    early = _meter(values, [10] * 50)
    assert early._waiting_items < 25  # it folded as it went
    assert (early.loss_per_item, early.sum_of_batch_means) == (wanted.loss_per_item,
                                                              wanted.sum_of_batch_means)  # fmt: skip


def test_non_finite_losses_make_the_figures_nan() -> None:
    meter = _meter([1.0, math.nan, 2.0, 3.0], [2, 2])
    assert math.isnan(meter.loss_per_item) and math.isnan(meter.sum_of_batch_means)
    assert meter.nonfinite == 1 and meter.nonfinite_batches == 1
    meter.reset()
    assert math.isnan(meter.loss_per_item) and meter.items == 0  # nothing yet
    meter.update(torch.tensor([2.0]))
    assert meter.loss_per_item == 2.0


def test_bad_updates_say_what_to_give() -> None:
    meter = RunningLoss()
    with pytest.raises(evalloss.LossError, match=r"give its batch size too, update\(mean, items\)"):
        meter.update(torch.tensor(2.0))
    with pytest.raises(evalloss.LossError, match="items must be a count >= 1, got 0"):
        meter.update(torch.tensor(2.0), 0)
    with pytest.raises(evalloss.LossError, match="the mean must be one number"):
        meter.update(torch.ones(3), 3)
    meter.update(torch.zeros(0))  # an empty batch is no batch
    assert meter.batches == 0


def test_all_reduce_alone_is_a_no_op() -> None:
    meter = _meter([1.0, 2.0], [2])
    assert meter.all_reduce() is meter and meter.loss_per_item == 1.5
