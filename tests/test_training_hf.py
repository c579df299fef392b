"""`ExactEvalCallback` inside transformers' own Trainer: the figures equal the model's own loss
one document (item) at a time in float64, at every eval batch size, for a causal LM, a PEFT
model and a classifier; they reach the returned metrics, the log history, the reporting
callbacks (attached first), early stopping and the best-model metric."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("accelerate", reason="transformers' Trainer needs accelerate")
transformers = pytest.importorskip("transformers", reason="needs the transformers extra")

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

import evalloss  # noqa: E402
from evalloss.integrations.transformers import ExactEvalCallback  # noqa: E402
from tests import training  # noqa: E402

BATCHES = (1, 4, 16)
DRIVER = Path(__file__).parent / "training_driver.py"


@pytest.fixture(scope="module")
def docs() -> list[list[int]]:
    return training.documents()


def _rows(docs: list[list[int]]) -> list[dict[str, Any]]:
    return [{"input_ids": d} for d in docs]


def _evaluate(model: torch.nn.Module, rows: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    trainer = training.trainer(model, rows, batch, callbacks=[ExactEvalCallback()])
    metrics = trainer.evaluate()
    entry = trainer.state.log_history[-1]
    assert all(entry[k] == v for k, v in metrics.items() if k.startswith("eval_"))
    return metrics  # type: ignore[no-any-return]


@pytest.mark.parametrize("adapter", [False, True], ids=["gpt2", "lora"])
def test_causal_lm_per_token_at_every_batch_size(docs: list[list[int]], adapter: bool) -> None:
    model = training.gpt2()
    if adapter:
        model = training.lora(model)
    oracle, tokens = training.own_token_loss(model, docs)
    trainer_loss = {}
    for batch in BATCHES:
        metrics = _evaluate(model, _rows(docs), batch)
        assert metrics["eval_loss_per_token"] == pytest.approx(oracle, rel=1e-6)
        assert metrics["eval_tokens"] == tokens
        assert metrics["eval_perplexity"] == pytest.approx(math.exp(oracle), rel=1e-6)
        trainer_loss[batch] = metrics["eval_loss"]
    assert abs(trainer_loss[1] - trainer_loss[16]) > 1e-3 * oracle  # Trainer's own moves


def test_a_causal_lm_s_own_loss_is_reused_once_checked(
    docs: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """No second log-softmax but on the first batch (the check) and the last (its padding):
    at batch 1, 2 of the 13 batches are scored from the logits."""
    from evalloss.integrations import transformers as integration

    scored: list[int] = []
    real = integration.item_terms

    def counting(loss: Any, logits: torch.Tensor, targets: torch.Tensor) -> Any:
        scored.append(len(logits))
        return real(loss, logits, targets)

    monkeypatch.setattr(integration, "item_terms", counting)
    model = training.gpt2()
    oracle, _ = training.own_token_loss(model, docs)
    assert _evaluate(model, _rows(docs), 1)["eval_loss_per_token"] == \
        pytest.approx(oracle, rel=1e-6)  # fmt: skip
    assert len(docs) > 2 and len(scored) == 2


def test_a_loss_with_another_term_is_not_reused(docs: list[list[int]]) -> None:
    """A model whose own loss is not the token mean (an auxiliary term, as a mixture of
    experts' router loss): the check finds it out, every batch is scored from the logits."""
    model = training.gpt2()
    oracle, tokens = training.own_token_loss(model, docs)

    class Auxiliary(type(model)):  # type: ignore[misc]
        def forward(self, *args: Any, **kwargs: Any) -> Any:
            output = super().forward(*args, **kwargs)
            output.loss = output.loss + 0.25
            return output

    model.__class__ = Auxiliary
    callback = ExactEvalCallback(task="causal-lm")
    metrics = training.trainer(model, _rows(docs), 4, callbacks=[callback]).evaluate()
    assert callback._trusted is False
    assert metrics["eval_loss_per_token"] == pytest.approx(oracle, rel=1e-6)
    assert metrics["eval_tokens"] == tokens


def test_classifier_per_item_at_every_batch_size() -> None:
    model = training.gpt2(classes=3)
    rng = random.Random(2)
    rows = [{"input_ids": d, "label": rng.randrange(3)} for d in training.documents(seed=4)]
    oracle = training.own_item_loss(model, rows)
    for batch in BATCHES:
        metrics = _evaluate(model, rows, batch)
        assert metrics["eval_loss_per_item"] == pytest.approx(oracle, rel=1e-6)
        assert metrics["eval_items"] == len(rows)
        assert "eval_loss_per_token" not in metrics


VOCAB_OR_CLASSES = {"masked-lm": training.VOCAB, "token-classification": 5}


@pytest.mark.parametrize("task", ["masked-lm", "token-classification"])
def test_token_tasks_per_scored_token_at_every_batch_size(task: str) -> None:
    """A masked LM and a token classifier: their labels are not shifted, -100 is not scored
    (a document with no scored token among them)."""
    model = training.bert(task)
    rows = training.token_rows(training.documents(), VOCAB_OR_CLASSES[task])
    oracle, tokens = training.own_labelled_loss(model, rows)
    for batch in BATCHES:
        metrics = _evaluate(model, rows, batch)
        assert metrics["eval_loss_per_token"] == pytest.approx(oracle, rel=1e-6)
        assert metrics["eval_tokens"] == tokens
        assert ("eval_perplexity" in metrics) == (task == "masked-lm")


class Spy(TrainerCallback):  # type: ignore[misc]
    """A reporting callback: what its on_log saw."""

    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        self.seen.append(dict(logs))


def test_the_loggers_get_the_figures_when_attached_first(docs: list[list[int]]) -> None:
    """transformers runs the reporting callbacks first: given in callbacks=[...] after one,
    the callback adds its figures too late for it; attached, it comes first."""
    model = training.gpt2()
    late = Spy()
    trainer = training.trainer(model, _rows(docs), 4, callbacks=[late, ExactEvalCallback()])
    assert "eval_loss_per_token" in trainer.evaluate()
    assert "eval_loss_per_token" not in late.seen[-1]
    spy = Spy()
    trainer = training.trainer(model, _rows(docs), 4, callbacks=[spy])
    ExactEvalCallback().attach(trainer)
    metrics = trainer.evaluate()
    assert spy.seen[-1]["eval_loss_per_token"] == metrics["eval_loss_per_token"]


def test_a_late_callback_warns_when_loggers_are_set(docs: list[list[int]]) -> None:
    trainer = training.trainer(training.gpt2(), _rows(docs), 4, callbacks=[ExactEvalCallback()])
    trainer.args.report_to = ["tensorboard"]  # as if set: no logger is built here
    with pytest.warns(evalloss.EvallossWarning, match=r"attach\(trainer\)"):
        trainer.evaluate()


def test_early_stopping_and_the_best_model_read_it(docs: list[list[int]]) -> None:
    """An early-stopping callback given BEFORE ours still reads the figure (it is added in
    on_log, before any on_evaluate); the best metric is the lowest figure logged."""
    from transformers import EarlyStoppingCallback

    model = training.gpt2()
    trainer = training.trainer(
        model, _rows(docs), 4, train_dataset=_rows(docs),
        callbacks=[EarlyStoppingCallback(early_stopping_patience=50), ExactEvalCallback()],
        eval_strategy="steps", eval_steps=1, max_steps=2, per_device_train_batch_size=4,
        metric_for_best_model="eval_loss_per_token", greater_is_better=False, learning_rate=1e-2,
    )  # fmt: skip
    trainer.train()
    logged = [e["eval_loss_per_token"] for e in trainer.state.log_history if "eval_loss" in e]
    assert len(logged) == 2
    assert trainer.state.best_metric == min(logged)
    oracle, _ = training.own_token_loss(model, docs)  # the trained model, after the last eval
    assert logged[-1] == pytest.approx(oracle, rel=1e-6)


def test_label_smoothing_is_refused_when_the_trainer_is_built(docs: list[list[int]]) -> None:
    with pytest.raises(evalloss.OptionError, match="label_smoothing_factor=0"):
        training.trainer(training.gpt2(), _rows(docs), 4, callbacks=[ExactEvalCallback()],
                         label_smoothing_factor=0.1)  # fmt: skip


def test_unobservable_labels_give_a_warning_not_a_figure(docs: list[list[int]]) -> None:
    def own(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> torch.Tensor:
        return outputs.logits.float().mean()

    trainer = training.trainer(training.gpt2(), _rows(docs), 4, callbacks=[ExactEvalCallback()],
                               compute_loss_func=own)  # fmt: skip
    with pytest.warns(evalloss.EvallossWarning, match="called without labels="):
        metrics = trainer.evaluate()
    assert "eval_loss_per_token" not in metrics


def test_drop_last_is_named_and_the_rest_is_exact(docs: list[list[int]]) -> None:
    """13 documents at eval batch 4 with dataloader_drop_last: the last one is left out."""
    model = training.gpt2()
    trainer = training.trainer(model, _rows(docs), 4, callbacks=[ExactEvalCallback()],
                               dataloader_drop_last=True)  # fmt: skip
    with pytest.warns(evalloss.EvallossWarning, match="leaves out the last 1 of 13 eval items"):
        metrics = trainer.evaluate()
    oracle, tokens = training.own_token_loss(model, docs[:12])
    assert metrics["eval_loss_per_token"] == pytest.approx(oracle, rel=1e-6)
    assert metrics["eval_tokens"] == tokens


def test_an_unknown_model_asks_for_the_task() -> None:
    with pytest.raises(evalloss.OptionError, match="pass task= one of causal-lm, masked-lm, token-classification, classification"):
        ExactEvalCallback()._hook(torch.nn.Linear(2, 2))
    with pytest.raises(evalloss.OptionError, match="must be one of"):
        ExactEvalCallback(task="seq2seq")


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path: Path, docs: list[list[int]]) -> None:
    """torchrun, 2 CPU processes (gloo), 13 documents: every rank's figures at eval batch
    sizes 1 and 4 equal the one-process oracle (the padding duplicate not counted); and
    RunningLoss.all_reduce over uneven shards."""
    out = _torchrun(tmp_path, "hf")
    oracle, tokens = training.own_token_loss(training.gpt2(), docs)
    for rank in (0, 1):
        found = json.loads((out / f"rank{rank}.json").read_text())
        for batch in (1, 4):
            assert found[str(batch)]["eval_loss_per_token"] == pytest.approx(oracle, rel=1e-6)
            assert found[str(batch)]["eval_tokens"] == tokens
        assert found["running"] == pytest.approx(math.fsum(range(1, 8)) / 7, rel=1e-15)
    assert (out / "rank0.json").read_text() == (out / "rank1.json").read_text()


def _torchrun(tmp_path: Path, which: str) -> Path:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(DRIVER), which, str(tmp_path)]  # fmt: skip
    proc = subprocess.run(command, capture_output=True, text=True, timeout=400,
                          cwd=Path(__file__).parents[1])  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp_path
