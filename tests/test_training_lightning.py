"""`ExactValidation` inside Lightning's own validation loop: ``val_exact_loss`` equals a float64
one-document-at-a-time oracle at every batch size (Lightning's own ``val_loss`` does not), after
fit and validate, per validation loader; a DistributedSampler's padding is not counted."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("lightning", reason="needs the lightning extra")

import torch
from torch import nn
from torch.utils.data.distributed import DistributedSampler

import evalloss
from evalloss.integrations.lightning import ExactValidation, _dropped, _owned
from tests import training, training_pl

pytestmark = [  # Lightning's advice (workers, logging) and its use of a torch API torch deprecates
    pytest.mark.filterwarnings("ignore::UserWarning:lightning.*"),
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning"),
]
BATCHES = (1, 4, 16)
DRIVER = Path(__file__).parent / "training_driver.py"


@pytest.fixture(scope="module")
def docs() -> list[list[int]]:
    return training.documents()


def _validate(model: Any, loaders: Any, **options: Any) -> dict[str, float]:
    trainer = training_pl.trainer(callbacks=[ExactValidation(**options)])
    trainer.validate(model, loaders, verbose=False)
    return {k: float(v) for k, v in trainer.callback_metrics.items()}


def test_causal_lm_per_token_at_every_batch_size(docs: list[list[int]]) -> None:
    model = training_pl.TinyLM()
    oracle = training_pl.token_oracle(model, docs)
    lightning = {}
    for batch in BATCHES:
        found = _validate(model, training_pl.loader(docs, batch), loss="causal-lm")
        assert found["val_exact_loss"] == pytest.approx(oracle, rel=1e-6)
        lightning[batch] = found["val_loss"]
    assert abs(lightning[1] - lightning[4]) > 1e-3 * oracle  # sequences, not tokens


def test_it_is_float64_in_the_callback_metrics(docs: list[list[int]]) -> None:
    trainer = training_pl.trainer(callbacks=[ExactValidation(loss="causal-lm")])
    trainer.validate(training_pl.TinyLM(), training_pl.loader(docs, 4), verbose=False)
    assert trainer.callback_metrics["val_exact_loss"].dtype == torch.float64


class Classifier(training_pl.TinyLM):
    """Dict batches; validation_step returns the logits tensor alone."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 3)

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return self.net(batch["x"])


def test_cross_entropy_from_a_dict_batch() -> None:
    torch.manual_seed(1)
    x, y = torch.randn(13, 4), torch.randint(0, 3, (13,))
    rows = [{"x": a, "labels": b} for a, b in zip(x, y, strict=True)]
    model = Classifier()
    with torch.no_grad():
        oracle = math.fsum(nn.functional.cross_entropy(
            model.net.double()(x.double()), y, reduction="none").tolist()) / 13  # fmt: skip
    model.float()
    for batch in BATCHES:
        loader = torch.utils.data.DataLoader(rows, batch_size=batch)
        found = _validate(model, loader, loss="cross-entropy")
        assert found["val_exact_loss"] == pytest.approx(oracle, rel=1e-6)


def test_every_validation_loader_has_its_figure(docs: list[list[int]]) -> None:
    model = training_pl.TinyLM()
    loaders = [training_pl.loader(docs[:5], 2), training_pl.loader(docs[5:], 3)]
    found = _validate(model, loaders, loss="causal-lm")
    assert found["val_exact_loss/dataloader_idx_0"] == pytest.approx(
        training_pl.token_oracle(model, docs[:5]), rel=1e-6)  # fmt: skip
    assert found["val_exact_loss/dataloader_idx_1"] == pytest.approx(
        training_pl.token_oracle(model, docs[5:]), rel=1e-6)  # fmt: skip


def test_after_fit_the_figure_is_the_whole_validation_set(docs: list[list[int]]) -> None:
    """The sanity check's two batches give no figure; the epoch's validation does."""
    model = training_pl.TinyLM()
    trainer = training_pl.trainer(callbacks=[ExactValidation(loss="causal-lm")], max_epochs=1,
                                  num_sanity_val_steps=2)  # fmt: skip
    trainer.fit(model, training_pl.loader(docs, 4), training_pl.loader(docs, 4))
    assert float(trainer.callback_metrics["val_exact_loss"]) == pytest.approx(
        training_pl.token_oracle(model, docs), rel=1e-6)  # fmt: skip


def test_a_step_that_returns_only_the_loss_is_named(docs: list[list[int]]) -> None:
    class LossOnly(training_pl.TinyLM):
        def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
            return super().validation_step(batch, batch_idx)["loss"]

    with pytest.raises(evalloss.OptionError, match=r"^ExactValidation: validation_step returned one number \(a mean\?\); return the"):
        _validate(LossOnly(), training_pl.loader(docs, 4), loss="causal-lm")


def test_the_padding_rule_of_a_distributed_sampler() -> None:
    """13 items on 2 processes: the sampler pads to 14; rank 0 owns 7, rank 1 owns 6."""
    data = list(range(13))
    owned = []
    for rank in (0, 1):
        sampler = DistributedSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=3)
        loader = torch.utils.data.DataLoader(data, sampler=sampler)
        order = list(sampler)
        assert len(order) == 7
        owned.append(_owned(loader))
        assert order[: owned[-1]] == [i for j, i in enumerate(order) if rank + 2 * j < 13]
    assert owned == [7, 6]
    assert _owned(torch.utils.data.DataLoader(data)) is None


def test_what_drop_last_leaves_out_is_counted() -> None:
    """13 items: a distributed sampler with drop_last on 2 processes yields 6 each (1 left
    out); a loader with drop_last and batch 4 yields 12 (1 left out)."""
    data = list(range(13))
    samplers = [DistributedSampler(data, num_replicas=2, rank=r, drop_last=True) for r in (0, 1)]
    dropped = [_dropped(torch.utils.data.DataLoader(data, sampler=s)) for s in samplers]
    assert sum(dropped) == 1
    assert _dropped(torch.utils.data.DataLoader(data, batch_size=4, drop_last=True)) == 1
    assert _dropped(torch.utils.data.DataLoader(data, batch_size=4)) == 0


def test_a_loader_that_drops_items_is_named_and_the_rest_is_exact(docs: list[list[int]]) -> None:
    model = training_pl.TinyLM()
    dropping = torch.utils.data.DataLoader(docs, batch_size=4, drop_last=True,  # type: ignore[arg-type,var-annotated]
                                           collate_fn=training_pl.collate)  # fmt: skip
    with pytest.warns(evalloss.EvallossWarning, match="val_exact_loss leaves out 1 validation"):
        found = _validate(model, dropping, loss="causal-lm")
    kept = docs[: len(docs) - len(docs) % 4]
    assert found["val_exact_loss"] == pytest.approx(training_pl.token_oracle(model, kept), rel=1e-6)


@pytest.mark.slow
def test_two_devices_equal_one(tmp_path: Path, docs: list[list[int]]) -> None:
    """torchrun, 2 CPU processes (DDP, gloo), 13 documents: both ranks log the one-process
    oracle at batch sizes 1 and 4 (the sampler's duplicate not counted)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(DRIVER), "lightning", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=400,
                          cwd=Path(__file__).parents[1])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    oracle = training_pl.token_oracle(training_pl.TinyLM(), docs)
    for rank in (0, 1):
        found = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for batch in (1, 4):
            assert found[str(batch)] == pytest.approx(oracle, rel=1e-6)
    assert (tmp_path / "rank0.json").read_text() == (tmp_path / "rank1.json").read_text()
