"""explain's Trainer row (`sequence_weighted_average`) is what the installed transformers'
Trainer.evaluate() prints as eval_loss for that folder and eval batch size, its counting rules
included (docs/language-models.md): checked against Trainer.evaluate() itself, as causal-LM
users call it (DataCollatorForLanguageModeling(mlm=False)), on GPT-2 and Llama folders."""

from __future__ import annotations

from typing import Any

import pytest

import evalloss
from evalloss.models import open_checkpoint
from evalloss.models.hf import trainer_counts_first_tokens
from tests import hf, trainer

BATCHES = (1, 4, 8)


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def folder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp(request.param)
    build = hf.gpt2 if request.param == "gpt2" else hf.llama
    model = build(root / request.param, positions=512)
    hf.tokenizer(model, vocab=300)
    tokenizer = trainer.fast_tokenizer(model)
    docs = [d for d in hf.corpus(30, seed=11) if len(tokenizer(d)["input_ids"]) >= 2]
    data = root / "val.txt"
    data.write_text("".join(d + "\n" for d in docs), encoding="utf-8")
    printed = {b: trainer.evaluate(model, docs, b, root / f"out{b}") for b in BATCHES}
    return {"model": model, "data": data, "printed": printed, "kind": request.param}


def test_the_trainer_row_is_what_trainer_evaluate_prints(folder: dict[str, Any]) -> None:
    report = evalloss.explain(folder["model"], data=folder["data"], batch_sizes=BATCHES)
    rows = {r.batch_size: r for r in report.rows}
    printed = folder["printed"]
    assert abs(printed[1] - printed[8]) > 1e-3 * printed[8]  # it moves with the batch size
    for batch in BATCHES:
        assert rows[batch].sequence_weighted_average == pytest.approx(printed[batch], rel=1e-6)
    # transformers 5.25's rule: GPT-2's loss_type is None, so its labels are counted unshifted
    counts = trainer_counts_first_tokens(open_checkpoint(folder["model"]))
    assert counts == (folder["kind"] == "gpt2")
    assert report.to_dict()["trainer_divisor"] == ("labels" if counts else "tokens")
