"""Every loss's per-item figure against a float64 formula written out by hand (tests/oracles.py)."""

from __future__ import annotations

import itertools
import math
import re
import zlib

import pytest
import torch

from evalloss import LossError
from evalloss.losses import NAMES as ALL_NAMES
from evalloss.losses import ROWS, Loss, get
from evalloss.losses.accuracy import correct_items
from tests import oracles

# the per-item losses (token losses: test_causal.py, test_seq2seq.py)
NAMES = [n for n in ALL_NAMES if not ROWS[n].per_token]


def _means(loss: Loss, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each item's mean loss: its (sum, weight) from the loss, divided as the engine does."""
    return loss.item_values(*loss.per_item(outputs, targets))


def _case(name: str, n: int = 7, t: int = 1, c: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    if name in ("cross-entropy", "nll"):
        out = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
        if name == "nll":
            out = out.log_softmax(dim=1)
        return out, torch.randint(0, c, (n, 1), generator=g).double()
    if name == "bce":
        return torch.rand(n, t, generator=g, dtype=torch.float64) * 0.98 + 0.01, torch.rand(
            n, t, generator=g
        ).double()
    if name == "bce-logits":
        return torch.randn(n, t, generator=g, dtype=torch.float64) * 4, (
            torch.rand(n, t, generator=g) > 0.5
        ).double()
    return torch.randn(n, t, generator=g, dtype=torch.float64) * 2, torch.randn(
        n, t, generator=g, dtype=torch.float64
    ) * 2


@pytest.mark.parametrize(
    ("name", "targets"),
    [(n, 1) for n in NAMES] + [(n, 3) for n in NAMES if n not in ("cross-entropy", "nll")],
)
def test_per_item_matches_hand_formula(name: str, targets: int) -> None:
    out, tgt = _case(name, t=targets)
    got = _means(get(name), out, tgt)
    assert got.dtype == torch.float64 and got.shape == (len(out),)
    want = [oracles.item_loss(name, o, t) for o, t in zip(out.tolist(), tgt.tolist(), strict=True)]
    assert got.tolist() == pytest.approx(want, rel=1e-12, abs=1e-14)


def test_per_item_sum_equals_reduction_sum() -> None:
    """For single-output losses, sum of loss_i equals the criterion's reduction='sum'."""
    out, tgt = _case("cross-entropy", n=50)
    got = math.fsum(_means(get("cross-entropy"), out, tgt).tolist())
    assert got == pytest.approx(
        float(torch.nn.functional.cross_entropy(out, tgt.long().flatten(), reduction="sum")),
        rel=1e-12,
    )


def test_cross_entropy_with_several_class_targets() -> None:
    out = torch.randn(5, 4, 2, dtype=torch.float64)  # (N, C, T)
    tgt = torch.randint(0, 4, (5, 2)).double()
    got = _means(get("cross-entropy"), out, tgt)
    want = [
        (
            oracles.item_loss("cross-entropy", out[i, :, 0].tolist(), [tgt[i, 0]])
            + oracles.item_loss("cross-entropy", out[i, :, 1].tolist(), [tgt[i, 1]])
        )
        / 2
        for i in range(5)
    ]
    assert got.tolist() == pytest.approx(want, rel=1e-12)


def test_single_target_accepts_n_and_n1_outputs() -> None:
    tgt = torch.tensor([[1.0], [2.0], [4.0]])
    flat = _means(get("mse"), torch.zeros(3), tgt)
    column = _means(get("mse"), torch.zeros(3, 1), tgt)
    assert flat.tolist() == column.tolist() == [1.0, 4.0, 16.0]


@pytest.mark.parametrize(
    ("name", "outputs", "targets"),
    [
        ("mse", (4, 2), (4, 1)),  # would broadcast to (4, 2)
        ("mse", (4, 1), (4, 2)),
        ("mse", (4,), (4, 2)),
        ("l1", (3, 1), (4, 1)),  # wrong item count
        ("cross-entropy", (4,), (4, 1)),  # no class dimension
        ("cross-entropy", (4, 3, 2), (4, 1)),
    ],
)
def test_shapes_are_checked_never_broadcast(
    name: str, outputs: tuple[int, ...], targets: tuple[int, ...]
) -> None:
    with pytest.raises(LossError, match=r"shape|output"):
        _means(get(name), torch.zeros(outputs), torch.zeros(targets))


@pytest.mark.parametrize(
    ("name", "target", "why"),
    [
        ("cross-entropy", 3.0, r"\[0, 3\)"),
        ("cross-entropy", -1.0, r"\[0, 3\)"),
        ("nll", 1.5, "integer"),
        ("bce", 1.5, r"\[0, 1\]"),
        ("bce-logits", -0.1, r"\[0, 1\]"),
    ],
)
def test_invalid_targets_are_found_with_their_row(name: str, target: float, why: str) -> None:
    targets = torch.tensor([[0.0], [1.0], [target], [0.0]])
    outputs = torch.zeros(4, 3) if name in ("cross-entropy", "nll") else torch.full((4, 1), 0.5)
    row, column, reason = get(name).invalid_target(outputs, targets)  # type: ignore[misc]
    assert (row, column) == (2, 0)
    assert re.search(why, reason)


def test_accuracy_counts() -> None:
    out = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    tgt = torch.tensor([[0.0], [0.0], [0.0]])
    assert get("cross-entropy").correct(out, tgt) == (2, 3)
    assert get("bce-logits").correct(
        torch.tensor([[1.0], [-1.0]]), torch.tensor([[1.0], [1.0]])
    ) == (1, 2)
    assert get("bce").correct(
        torch.tensor([[0.7], [0.2], [0.5]]), torch.tensor([[1.0], [1.0], [0.0]])
    ) == (2, 3)
    assert get("mse").correct(out, tgt) == (0, 0)
    assert correct_items(get("mse"), out, tgt) is None


@pytest.mark.parametrize(("name", "ignore_index"), [("cross-entropy", None), ("nll", 2),
                                                    ("bce-logits", None), ("bce", None)])  # fmt: skip
def test_accuracy_totals_are_the_items_counts(name: str, ignore_index: int | None) -> None:
    """One rule: a batch's (correct, counted) is the sum of its items' counts, and each item's
    counts are what it gets alone (a mask of class ids, less the ignored ones)."""
    g = torch.Generator().manual_seed(5)
    if name in ("cross-entropy", "nll"):
        out, tgt = torch.randn(6, 3, 4, 5, generator=g), torch.randint(0, 3, (6, 4, 5), generator=g)
    else:
        out, tgt = torch.rand(6, 7, generator=g), (torch.rand(6, 7, generator=g) > 0.5).float()
    loss = get(name, ignore_index)
    hits = correct_items(loss, out, tgt)
    assert hits is not None
    correct, counted = hits
    assert loss.correct(out, tgt) == (int(correct.sum()), int(counted.sum()))
    alone = [loss.correct(out[i : i + 1], tgt[i : i + 1]) for i in range(len(out))]
    assert alone == list(zip(correct.tolist(), counted.tolist(), strict=True))
    assert (counted < tgt[0].numel()).any() == (ignore_index is not None)


def test_unknown_loss() -> None:
    with pytest.raises(LossError, match="unknown loss 'hinge'"):
        get("hinge")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ignore_index", [None, 3])
def test_cross_entropy_per_item_is_the_criterion_bit_for_bit(
    dtype: torch.dtype, ignore_index: int | None
) -> None:
    """Outputs (N, C) with few classes are scored as (1, C, N) on an AVX-512 CPU (3-4x
    faster): every item's loss is still F.cross_entropy's on (N, C), bit for bit, whatever C,
    N, scale or thread count, and a batch of one item gives the same bits too."""
    loss = get("cross-entropy", ignore_index)
    g = torch.Generator().manual_seed(1)
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2, 5):  # 5: the items split unevenly among threads
            torch.set_num_threads(threads)
            for classes, n in itertools.product(range(2, 21), (3000, 3001, 16, 15, 1)):
                scale = torch.logspace(-3, 3, n, dtype=dtype)[:, None]
                outputs = torch.randn(n, classes, generator=g, dtype=dtype) * scale
                targets = torch.randint(0, classes, (n,), generator=g)
                if ignore_index is not None:
                    targets[targets == ignore_index] = 0  # every item keeps its one element
                want = torch.nn.functional.cross_entropy(outputs, targets, reduction="none")
                sums, weights = loss.per_item(outputs, targets[:, None].double())
                assert torch.equal(sums, want.double()), (threads, classes)
                assert torch.equal(weights, torch.ones(n, dtype=torch.int64))
                one = [loss.per_item(outputs[i : i + 1], targets[i : i + 1, None].double())[0]
                       for i in range(0, n, 97)]  # fmt: skip
                assert torch.equal(torch.cat(one), want[::97].double()), (threads, classes)
    finally:
        torch.set_num_threads(previous)
