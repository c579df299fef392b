"""A small GPT-shaped model for benchmarks/bench_lm.py, and the two scripts it is timed
against: a plain padded loop in file order, and the limit (pre-sorted, pre-padded batches)."""

from __future__ import annotations

import json
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F


class Block(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, L, W)
        n, length, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(width, dim=2)
        shape = (n, length, self.heads, width // self.heads)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(attended.transpose(1, 2).reshape(n, length, width))
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    """Token and position embeddings, causal blocks, a head: (N, L) ids -> (N, L, V) logits."""

    def __init__(self, vocab: int = 4096, width: int = 128, layers: int = 2, heads: int = 4,
                 positions: int = 1024) -> None:  # fmt: skip
        super().__init__()
        self.tokens, self.positions = nn.Embedding(vocab, width), nn.Embedding(positions, width)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, vocab, bias=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def _load(path: str, kwargs: str) -> GPT:
    from safetensors.torch import load_file

    model = GPT(**json.loads(kwargs))
    model.load_state_dict(load_file(path))
    return model.eval()


def _documents(path: str) -> list[list[int]]:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=["input_ids"]).column("input_ids").to_pylist()


def _score(model: GPT, batch: list[list[int]]) -> tuple[float, int]:
    """Right-padded batch -> (summed NLL of every next token, scored tokens)."""
    length = max(len(d) for d in batch)
    ids = torch.zeros((len(batch), length), dtype=torch.int64)
    labels = torch.full((len(batch), length), -100, dtype=torch.int64)
    for r, d in enumerate(batch):
        ids[r, : len(d)] = torch.tensor(d)
        labels[r, : len(d) - 1] = torch.tensor(d[1:])
    logits = model(ids)
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                           reduction="sum", ignore_index=-100)  # fmt: skip
    return float(loss), int((labels != -100).sum())


def plain(path: str, data: str, kwargs: str, batch: int = 8) -> None:
    """What a user writes: file order, batches of 8 documents, padded to the longest."""
    model, docs = _load(path, kwargs), [d for d in _documents(data) if len(d) > 1]
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for s in range(0, len(docs), batch):
            loss, count = _score(model, docs[s : s + batch])
            total, tokens = total + loss, tokens + count
    print(total / tokens)


def limit(path: str, data: str, kwargs: str, budget: int) -> None:
    """The limit: batches made before the clock starts (length-sorted, packed under the token
    budget), then forward passes and the loss only."""
    model, docs = _load(path, kwargs), sorted(d for d in _documents(data) if len(d) > 1)
    docs.sort(key=len)
    batches, group = [], []
    for d in docs:
        if group and (len(group) + 1) * len(d) > budget:
            batches.append(group)
            group = []
        group.append(d)
    batches.append(group)
    start, total = time.perf_counter(), 0.0
    with torch.inference_mode():
        for b in batches:
            total += _score(model, b)[0]
    print(time.perf_counter() - start, file=sys.stderr)


class _ForTrainer(nn.Module):
    """The model as transformers' Trainer wants it: labels in, a token-mean loss out."""

    def __init__(self, gpt: GPT) -> None:
        super().__init__()
        self.gpt = gpt

    def forward(
        self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, **_: object
    ) -> dict[str, torch.Tensor]:
        logits = self.gpt(input_ids)
        if labels is None:
            return {"logits": logits}
        shifted = logits[:, :-1].reshape(-1, logits.shape[-1])
        loss = F.cross_entropy(shifted, labels[:, 1:].reshape(-1), ignore_index=-100)
        return {"loss": loss, "logits": logits}


def trainer(path: str, data: str, kwargs: str, batch: int = 8) -> None:
    """transformers' Trainer.evaluate at eval batch 8 (its eval_loss: batch token means
    weighted by sequences per batch), the way its users run it."""
    import tempfile

    from transformers import Trainer, TrainingArguments

    docs = [d for d in _documents(data) if len(d) > 1]

    def collate(features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        ids = torch.zeros((len(features), length), dtype=torch.int64)
        labels = torch.full((len(features), length), -100, dtype=torch.int64)
        for r, f in enumerate(features):
            ids[r, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
            labels[r, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
        return {"input_ids": ids, "labels": labels}

    with tempfile.TemporaryDirectory() as folder:
        args = TrainingArguments(
            output_dir=folder, per_device_eval_batch_size=batch, report_to=[], use_cpu=True,
            prediction_loss_only=True, remove_unused_columns=False,
        )  # fmt: skip
        dataset = [{"input_ids": d} for d in docs]
        model = _ForTrainer(_load(path, kwargs))
        run = Trainer(model=model, args=args, eval_dataset=dataset, data_collator=collate)
        print(run.evaluate()["eval_loss"])


if __name__ == "__main__":
    kind, *args = sys.argv[1:]
    if kind == "plain":
        plain(*args)
    elif kind == "trainer":
        trainer(*args)
    else:
        limit(args[0], args[1], args[2], int(args[3]))
