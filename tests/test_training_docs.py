"""docs/training.md's three scripts run as written and print the framework's own figure beside
the exact one; the exact one equals an independent float64 oracle."""

from __future__ import annotations

import copy
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import evalloss
from evalloss.run.running import RunningLoss

PAGE = Path(__file__).parents[1] / "docs" / "training.md"


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.S)


def _run(index: int, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, Any], list[str]]:
    namespace: dict[str, Any] = {}
    exec(_blocks()[index], namespace)
    return namespace, capsys.readouterr().out.splitlines()


def _figures(line: str) -> list[float]:
    return [float(v) for v in re.findall(r"\d+\.\d{4}", line)]


class Recording(RunningLoss):
    """RunningLoss that also keeps every update's per-item losses, for the oracle."""

    seen: list[list[float]]

    def reset(self) -> None:
        super().reset()
        self.seen = []

    def update(self, losses: Any, items: int | None = None) -> None:
        super().update(losses, items)
        self.seen.append(losses.detach().double().tolist())


def test_the_plain_loop(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(evalloss, "RunningLoss", Recording)
    namespace, printed = _run(0, capsys)
    assert [line.split(":")[0] for line in printed] == ["epoch 0", "epoch 1", "epoch 2"]
    seen = namespace["meter"].seen  # the last epoch's batches, as the loss gave them
    assert len(seen) == 7 and [len(b) for b in seen][-1] == 8
    exact = math.fsum(v for batch in seen for v in batch) / 200
    shown = math.fsum(torch.tensor(b, dtype=torch.float32).mean().item() for b in seen)
    assert _figures(printed[-1]) == [round(shown, 4), round(exact, 4)]
    assert "over 200 items" in printed[-1]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_the_trainer_script(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("accelerate", reason="transformers' Trainer needs accelerate")
    namespace, printed = _run(1, capsys)
    lines = [line for line in printed if line.startswith("eval batch")]
    assert len(lines) == 2
    from tests import training  # the model's own loss, float64, one document at a time

    docs = [d["input_ids"] for d in namespace["documents"]]
    exact, tokens = training.own_token_loss(namespace["model"], docs)
    assert namespace["metrics"]["eval_loss_per_token"] == pytest.approx(exact, rel=1e-6)
    (own1, exact1), (own16, exact16) = (_figures(line) for line in lines)
    assert exact1 == exact16 == round(exact, 4)
    assert own1 != own16  # Trainer's eval_loss moves with the eval batch size
    assert all(f"over {tokens} tokens" in line for line in lines)


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore:.*LeafSpec.*:FutureWarning")
def test_the_lightning_script(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("lightning", reason="needs the lightning extra")
    namespace, printed = _run(2, capsys)
    lines = [line for line in printed if line.startswith("val batch")]
    assert len(lines) == 2
    twin = copy.deepcopy(namespace["model"]).double().eval()
    terms: list[float] = []
    with torch.no_grad():  # every token's loss, one text at a time
        for t in namespace["texts"]:
            logits = twin(t[None])[0, :-1]
            terms += nn.functional.cross_entropy(logits, t[1:], reduction="none").tolist()
    exact = math.fsum(terms) / len(terms)
    assert float(namespace["metrics"]["val_exact_loss"]) == pytest.approx(exact, rel=1e-6)
    (own1, exact1), (_, exact16) = (_figures(line) for line in lines)
    assert exact1 == exact16 == round(exact, 4)
    assert own1 != exact1  # Lightning weights each batch's token mean by its sequences
