"""Run under torchrun (2 CPU processes) by tests/test_training_hf.py and
tests/test_training_lightning.py: ``training_driver.py hf|lightning OUT``. Each rank writes its
figures (JSON) to OUT/rank<r>.txt; the tests compare them with one-process oracles."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1]))
warnings.filterwarnings("ignore")

import torch  # noqa: E402

from tests import training  # noqa: E402


def hf() -> dict[str, object]:
    from evalloss import RunningLoss
    from evalloss.integrations.transformers import ExactEvalCallback

    found: dict[str, object] = {}
    rows = [{"input_ids": d} for d in training.documents()]
    for batch in (1, 4):
        trainer = training.trainer(training.gpt2(), rows, batch, callbacks=[ExactEvalCallback()])
        metrics = trainer.evaluate()
        found[str(batch)] = {k: metrics[k] for k in ("eval_loss_per_token", "eval_tokens")}
    meter = RunningLoss()  # uneven shards: 1, 2, 3 on rank 0; 4, 5, 6, 7 on rank 1
    rank = int(os.environ["RANK"])
    for batch in ([[1.0, 2.0, 3.0]] if rank == 0 else [[4.0, 5.0], [6.0, 7.0]]):
        meter.update(torch.tensor(batch))
    found["running"] = meter.all_reduce().loss_per_item
    return found


def lightning() -> dict[str, object]:
    from evalloss.integrations.lightning import ExactValidation
    from tests import training_pl

    found: dict[str, object] = {}
    docs = training.documents()
    for batch in (1, 4):
        trainer = training_pl.trainer(callbacks=[ExactValidation(loss="causal-lm")], devices=2,
                                      strategy="ddp")  # fmt: skip
        trainer.validate(training_pl.TinyLM(), training_pl.loader(docs, batch), verbose=False)
        found[str(batch)] = float(trainer.callback_metrics["val_exact_loss"])
    return found


if __name__ == "__main__":
    which, out = sys.argv[1], Path(sys.argv[2])
    figures = hf() if which == "hf" else lightning()
    (out / f"rank{os.environ['RANK']}.json").write_text(json.dumps(figures))
