"""Make the shipped language-model example: a corpus, and one byte-level model trained three ways.

Run from the repository root: ``python checkpoints/lm/make_example.py``. Deterministic: it
writes ``val.jsonl`` (documents of byte ids, from 3 to 400 bytes: the project's own generated
sentences), three checkpoints of `charlm.CharLM`, and ``training_log.json`` with what the usual
loops printed for each: the training loop's ``epoch_loss += loss.item()`` over its last epoch,
and transformers' ``Trainer.evaluate``'s ``eval_loss`` on the validation documents (the batch
token means weighted by sequences per batch, at eval batch size 8).

The story: the same model trained with batches of 8 and of 64 documents prints very different
training losses (a sum of batch token means shrinks with fewer batches), and their eval_loss
cannot be trusted to the third digit either; only the exact loss per token ranks them.
"""

import json
import random
from pathlib import Path

import torch
from charlm import CharLM
from torch.nn import functional as F

import evalloss

HERE = Path(__file__).resolve().parent
WORDS = [
    "the",
    "a",
    "model",
    "loss",
    "batch",
    "token",
    "mean",
    "sum",
    "exact",
    "figure",
    "every",
    "item",
    "data",
    "set",
    "train",
    "test",
    "run",
    "log",
    "epoch",
    "average",
    "weight",
    "small",
    "large",
    "long",
    "short",
    "fair",
    "wrong",
    "right",
    "compares",
    "prints",
    "shows",
    "each",
    "one",
    "many",
    "some",
    "all",
    "of",
    "in",
    "on",
    "by",
    "with",
    "from",
    "to",
    "and",
    "but",
    "or",
    "so",
    "is",
    "was",
    "are",
    "were",
    "be",
]


def corpus(documents: int, seed: int) -> list[list[int]]:
    """Documents of generated sentences, long-tailed in length, as byte ids."""
    rng = random.Random(seed)
    docs = []
    for _ in range(documents):
        words = [rng.choice(WORDS) for _ in range(max(1, int(rng.lognormvariate(2.3, 0.9))))]
        text = " ".join(words)[:400] + "."
        docs.append(list(text.encode()))
    return docs


def batches(docs: list[list[int]], size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for s in range(0, len(docs), size):
        part = docs[s : s + size]
        length = max(len(d) for d in part)
        ids = torch.zeros((len(part), length), dtype=torch.int64)
        labels = torch.full((len(part), length), -100, dtype=torch.int64)
        for r, d in enumerate(part):
            ids[r, : len(d)] = torch.tensor(d)
            labels[r, : len(d) - 1] = torch.tensor(d[1:])
        out.append((ids, labels))
    return out


def token_mean(model: CharLM, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    logits = model(ids)
    return F.cross_entropy(logits.reshape(-1, 256), labels.reshape(-1), ignore_index=-100)


def train(docs: list[list[int]], size: int, epochs: int, seed: int) -> tuple[CharLM, float]:
    """The usual loop; returns the model and its last epoch's ``epoch_loss``."""
    torch.manual_seed(seed)
    model = CharLM()
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    order = list(range(len(docs)))
    epoch_loss = 0.0
    for epoch in range(epochs):
        random.Random(seed + epoch).shuffle(order)
        epoch_loss = 0.0
        for ids, labels in batches([docs[i] for i in order], size):
            loss = token_mean(model, ids, labels)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            epoch_loss += loss.item()
    return model.eval(), epoch_loss


def eval_loss(model: CharLM, docs: list[list[int]], size: int = 8) -> float:
    """transformers' Trainer.evaluate: batch token means, weighted by sequences per batch."""
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, labels in batches(docs, size):
            total += token_mean(model, ids, labels).item() * len(ids)
            count += len(ids)
    return total / count


def main() -> None:
    train_docs, val_docs = corpus(1200, seed=1), corpus(300, seed=2)
    (HERE / "val.jsonl").write_text("".join(json.dumps({"input_ids": d}) + "\n" for d in val_docs))
    runs = {"bs8": (8, 3), "bs64": (64, 3), "barely": (64, 1)}
    log = {}
    for name, (size, epochs) in runs.items():
        model, epoch_loss = train(train_docs, size, epochs, seed=0)
        evalloss.save(model, HERE / f"{name}.safetensors", loss="causal-lm")
        log[name] = {
            "batch_size": size,
            "epochs": epochs,
            "epoch_loss": round(epoch_loss, 4),
            "eval_loss": round(eval_loss(model, val_docs), 4),
        }
    (HERE / "training_log.json").write_text(json.dumps(log, indent=2) + "\n")
    print(json.dumps(log, indent=2))


if __name__ == "__main__":
    main()
