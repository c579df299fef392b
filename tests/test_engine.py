"""The engine and `evaluate`: exact sums, batch-size independence, the seed's worked example."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import evalloss
from tests import nets, oracles
from tests.conftest import data_set

SEED_LOSSES = [4.0, 5.0, 2.0, 4.0, 3.0, 2.0, 3.0, 1.0]


def test_seed_worked_example() -> None:
    """Item losses 4,5,2,4,3,2,3,1 (a zero model under L1): sum 24 (not the article's 23), 3.0 per item."""
    x = torch.zeros(8, 1)
    y = torch.tensor(SEED_LOSSES).unsqueeze(1)
    for batch_size in (2, 4, 8, 3):
        result = evalloss.evaluate(
            nets.Zero(), DataLoader(TensorDataset(x, y), batch_size=batch_size), "l1"
        )
        assert result.loss_sum == 24.0
        assert result.items == 8
        assert result.loss_per_item == 3.0


@pytest.mark.parametrize("batch_size", [1, 7, 1000])
def test_figure_does_not_depend_on_batch_size(batch_size: int) -> None:
    x, y = data_set(103)  # 103 is a multiple of none of the batch sizes
    torch.manual_seed(0)
    model = nets.mlp()
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size)
    result = evalloss.evaluate(model, loader, "cross-entropy")
    with torch.no_grad():
        outputs = model.double()(x.double()).tolist()
    want = oracles.loss_sum("cross-entropy", outputs, [[v] for v in y.tolist()])
    assert result.items == 103
    assert result.loss_sum == pytest.approx(want, rel=1e-6)  # float32 model vs float64 oracle
    one_batch = evalloss.evaluate(model.float(), [(x, y)], "cross-entropy")
    assert result.loss_sum == pytest.approx(one_batch.loss_sum, rel=1e-6)
    with torch.no_grad():
        predicted = model.float()(x).argmax(1)
    assert result.accuracy == pytest.approx(float((predicted == y).double().mean()), abs=1e-12)


def test_evaluate_leaves_weights_alone_and_needs_no_grad() -> None:
    torch.manual_seed(0)
    model = nets.mlp()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = data_set(20)
    evalloss.evaluate(model, [(x, y)], "cross-entropy")
    assert not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])


def test_nonfinite_items_are_counted_and_the_figure_is_none() -> None:
    x = torch.tensor([[1.0], [float("inf")], [2.0]])
    result = evalloss.evaluate(torch.nn.Identity(), [(x, torch.zeros(3, 1))], "mse")
    assert result.nonfinite_items == 1
    assert result.loss_sum is None and result.loss_per_item is None


def test_sum_is_exact_fsum_of_float64_items() -> None:
    x = torch.tensor([[1e8], [1.0], [-1e8]] * 50, dtype=torch.float64)
    batches = [(x[i : i + 7], torch.zeros_like(x[i : i + 7])) for i in range(0, 150, 7)]
    result = evalloss.evaluate(torch.nn.Identity(), batches, "l1")
    assert result.loss_sum == math.fsum(abs(v) for v in x.flatten().tolist())


def test_bad_target_in_evaluate_names_batch_and_item() -> None:
    y = torch.tensor([0, 1, 5])
    with pytest.raises(
        evalloss.LossError, match=r"batch 1, item 3: class label must be an integer in \[0, 3\)"
    ):
        evalloss.evaluate(nets.mlp(), [(torch.zeros(3, 3), y)], "cross-entropy")


@pytest.mark.parametrize("heavy_first", [False, True])
def test_element_sum_is_exact_when_item_weights_change_mid_pass(heavy_first: bool) -> None:
    """Items of one counted element each, then of three (a 255-masked target): the sum over
    elements is kept apart from the items' only from the first item that weighs more than 1,
    and both figures still equal math.fsum of the float64 element losses."""
    torch.manual_seed(0)
    outputs = torch.randn(12, 4, 3)
    targets = torch.randint(0, 4, (12, 3))
    targets[:6, 1:] = 255  # the first six items count one element each
    batches = [(outputs[i : i + 3], targets[i : i + 3]) for i in range(0, 12, 3)]
    if heavy_first:
        batches.reverse()
    result = evalloss.evaluate(torch.nn.Identity(), batches, "cross-entropy", ignore_index=255)
    elements = torch.nn.functional.cross_entropy(
        outputs.double(), targets, reduction="none", ignore_index=255
    )  # (12, 3); ignored elements give 0
    counted = targets != 255
    values = [e[c].tolist() for e, c in zip(elements, counted, strict=True)]
    assert result.weight == int(counted.sum()) == 6 + 18
    assert result.loss_per_element == pytest.approx(
        math.fsum(v for item in values for v in item) / 24, rel=1e-6
    )
    assert result.loss_sum == pytest.approx(math.fsum(math.fsum(v) / len(v) for v in values),
                                            rel=1e-6)  # fmt: skip
