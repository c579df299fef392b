"""Lightning modules for tests/test_training_lightning.py and tests/training_driver.py: a tiny
causal LM (logits against aligned labels, -100 not scored) over the documents of
tests/training.py, and its float64 one-document-at-a-time oracle."""

from __future__ import annotations

import copy
import math
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from tests.training import VOCAB


def collate(batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids (N, L) and aligned labels: labels[n, p] is the token p predicts."""
    width = max(len(d) for d in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.int64)
    labels = torch.full((len(batch), width), -100)
    for row, d in enumerate(batch):
        ids[row, : len(d)] = torch.tensor(d)
        labels[row, : len(d) - 1] = torch.tensor(d[1:])
    return ids, labels


class TinyLM(pl.LightningModule):
    """Position p's logits depend on tokens 0..p only (a causal prefix mean)."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed, self.head = nn.Embedding(VOCAB, 8), nn.Linear(8, VOCAB)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (N, L) -> (N, L, V)
        count = torch.arange(1, ids.shape[1] + 1, dtype=torch.float32)
        h = self.embed(ids).cumsum(dim=1) / count.to(ids.device, self.head.weight.dtype)[None, :, None]
        return self.head(torch.tanh(h))  # type: ignore[no-any-return]

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        ids, labels = batch
        logits = self(ids)
        loss = nn.functional.cross_entropy(logits.transpose(1, 2), labels)  # the batch's token mean
        self.log("val_loss", loss)
        return {"loss": loss, "logits": logits}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        ids, labels = batch
        return nn.functional.cross_entropy(self(ids).transpose(1, 2), labels)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.5)


def token_oracle(model: TinyLM, docs: list[list[int]]) -> float:
    """Loss per token: float64, one document at a time, every token's loss, math.fsum."""
    twin = copy.deepcopy(model).double().eval()
    terms: list[float] = []
    with torch.no_grad():
        for d in docs:
            logits = twin(torch.tensor([d]))[0, :-1]  # (L - 1, V)
            terms += nn.functional.cross_entropy(logits, torch.tensor(d[1:]), reduction="none").tolist()
    return math.fsum(terms) / len(terms)


def trainer(**kwargs: Any) -> pl.Trainer:
    options = {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False,
               "enable_model_summary": False, "enable_checkpointing": False, **kwargs}  # fmt: skip
    return pl.Trainer(**options)


def loader(docs: list[list[int]], batch: int) -> torch.utils.data.DataLoader[Any]:
    return torch.utils.data.DataLoader(docs, batch_size=batch, collate_fn=collate)  # type: ignore[arg-type]
