"""The anchor: transformers' own Trainer.evaluate() on variable-length text moves with the eval
batch size; evalloss's loss per token does not, and explain reproduces each Trainer figure.
docs/why.md shows this table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import evalloss
from tests import hf

ROOT = Path(__file__).parents[1]
BATCHES = (2, 8)


def _documents() -> list[str]:
    """Varied lengths, each of at least two tokens (the Trainer cannot batch an empty one)."""
    return [d for d in hf.corpus(40, seed=7) if len(d.split()) >= 2]


def _trainer_loss(folder: Path, ids: list[list[int]], batch: int, output: Path) -> float:
    import torch
    from transformers import Trainer, TrainingArguments

    def collate(features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        x = torch.zeros((len(features), length), dtype=torch.int64)
        labels = torch.full((len(features), length), -100, dtype=torch.int64)
        for r, f in enumerate(features):
            x[r, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
            labels[r, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
        return {"input_ids": x, "labels": labels}

    args = TrainingArguments(
        output_dir=str(output), per_device_eval_batch_size=batch, report_to=[], use_cpu=True,
        prediction_loss_only=True, remove_unused_columns=False, disable_tqdm=True,
    )  # fmt: skip
    model = hf.model_of(folder).float()
    trainer = Trainer(model=model, args=args, eval_dataset=[{"input_ids": i} for i in ids],
                      data_collator=collate)  # fmt: skip
    return float(trainer.evaluate()["eval_loss"])


@pytest.fixture(scope="module")
def anchor(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    pytest.importorskip("accelerate", reason="transformers' Trainer needs accelerate")
    from tokenizers import Tokenizer

    root = tmp_path_factory.mktemp("anchor")
    # a *ForCausalLM class: transformers 5's Trainer divides a GPT2LMHeadModel's batch loss by
    # its unshifted label count too (docs/why.md), which no weighting of batches reproduces
    folder = hf.llama(root / "llama", positions=512)
    hf.tokenizer(folder, vocab=300)
    docs = _documents()
    data = root / "val.txt"
    data.write_text("".join(d + "\n" for d in docs), encoding="utf-8")
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    ids = [tokenizer.encode(d).ids for d in docs]
    trainer = {b: _trainer_loss(folder, ids, b, root / f"out{b}") for b in BATCHES}
    report = evalloss.compare([folder], data=data)
    explained = evalloss.explain(folder, data=data, batch_sizes=BATCHES)
    return {"trainer": trainer, "exact": report.models[0].loss_per_token,
            "rows": {r.batch_size: r for r in explained.rows}, "ids": ids, "folder": folder}  # fmt: skip


def test_trainer_moves_evalloss_does_not(anchor: dict[str, object]) -> None:
    trainer, exact = anchor["trainer"], anchor["exact"]
    assert isinstance(trainer, dict) and isinstance(exact, float)
    assert abs(trainer[2] - trainer[8]) > 1e-3 * exact  # the eval batch size moves it
    folder, ids = anchor["folder"], anchor["ids"]
    assert isinstance(folder, Path) and isinstance(ids, list)
    loss_sum, tokens = hf.own_loss(folder, ids)
    assert exact == pytest.approx(loss_sum / tokens, rel=1e-6)  # and evalloss is exact


def test_explain_reproduces_each_trainer_figure(anchor: dict[str, object]) -> None:
    trainer, rows = anchor["trainer"], anchor["rows"]
    assert isinstance(trainer, dict) and isinstance(rows, dict)
    for batch in BATCHES:
        assert rows[batch].sequence_weighted_average == pytest.approx(trainer[batch], rel=1e-5)


def test_docs_why_shows_this_table(anchor: dict[str, object]) -> None:
    """docs/why.md's Trainer table: the same figures (float32 tolerance across machines)."""
    text = (ROOT / "docs" / "why.md").read_text()
    section = text[text.index("<!-- trainer-anchor -->") :]
    trainer, exact = anchor["trainer"], anchor["exact"]
    assert isinstance(trainer, dict) and isinstance(exact, float)
    for batch in BATCHES:
        row = re.search(rf"^\| {batch} \| ([0-9.]+) \| ([0-9.]+) \|", section, re.MULTILINE)
        assert row is not None, f"no row for eval batch size {batch}"
        assert float(row.group(1)) == pytest.approx(trainer[batch], rel=1e-4)
        assert float(row.group(2)) == pytest.approx(exact, rel=1e-4)
