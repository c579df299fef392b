"""transformers' own Trainer, run here on tiny local folders: a training run's ``output_dir``
(`train`) and ``Trainer.evaluate()`` as a causal-LM user calls it (`evaluate`). Nothing is
downloaded."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import pytest

from tests import hf

# what Trainer saves beside the weights: pickles, which evalloss must never open
PICKLES = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "scaler.pt")


def fast_tokenizer(folder: Path) -> Any:
    """The folder's tokenizer.json as transformers wraps it, ``<s>`` its pad token (a token
    `hf.corpus` text never gives)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), pad_token="<s>")


def dataset(tokenizer: Any, documents: list[str]) -> list[dict[str, list[int]]]:
    """Each document of two tokens or more as ``{"input_ids": ...}``."""
    ids = [tokenizer(d)["input_ids"] for d in documents]
    return [{"input_ids": i} for i in ids if len(i) >= 2]


def arguments(output: Path, **overrides: Any) -> Any:
    from transformers import TrainingArguments

    settings: dict[str, Any] = {"output_dir": str(output), "report_to": [], "use_cpu": True,
                                "disable_tqdm": True, "seed": 0, "data_seed": 0,
                                "dataloader_num_workers": 0}  # fmt: skip
    return TrainingArguments(**{**settings, **overrides})


def train(
    start: Path, output: Path, train_docs: list[str], eval_docs: list[str], **overrides: Any
) -> Any:
    """A real Trainer run of ``start`` (a model folder with a tokenizer.json): evaluated and
    saved every ``eval_steps`` / ``save_steps`` (given in ``overrides``); returns the Trainer
    (``trainer.state.log_history`` is what it logged)."""
    pytest.importorskip("accelerate", reason="transformers' Trainer needs accelerate")
    import torch
    from transformers import DataCollatorForLanguageModeling, Trainer

    tokenizer = fast_tokenizer(start)
    model = hf.model_of(start).float().train()
    args = arguments(output, eval_strategy="steps", save_strategy="steps", learning_rate=3e-3,
                     per_device_train_batch_size=4, per_device_eval_batch_size=4,
                     logging_steps=1, **overrides)  # fmt: skip
    torch.manual_seed(0)
    trainer = Trainer(model=model, args=args, processing_class=tokenizer,
                      train_dataset=dataset(tokenizer, train_docs),
                      eval_dataset=dataset(tokenizer, eval_docs),
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))  # fmt: skip
    trainer.train()
    return trainer


def evaluate(folder: Path, documents: list[str], batch: int, output: Path) -> float:
    """``Trainer.evaluate()``'s eval_loss for the folder, one process, right padding and -100
    at padding (`DataCollatorForLanguageModeling(mlm=False)`)."""
    pytest.importorskip("accelerate", reason="transformers' Trainer needs accelerate")
    from transformers import DataCollatorForLanguageModeling, Trainer

    tokenizer = fast_tokenizer(folder)
    args = arguments(output, per_device_eval_batch_size=batch, prediction_loss_only=True)
    trainer = Trainer(model=hf.model_of(folder).float(), args=args, processing_class=tokenizer,
                      eval_dataset=dataset(tokenizer, documents),
                      data_collator=DataCollatorForLanguageModeling(tokenizer, mlm=False))  # fmt: skip
    return float(trainer.evaluate()["eval_loss"])


class _Marker:
    """Unpickling this makes the folder named by its argument."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (self.marker,)


def plant_pickles(checkpoint: Path, marker: Path) -> None:
    """Trainer's pickles in ``checkpoint`` replaced by ones that make ``marker`` if opened."""
    for name in PICKLES:
        (checkpoint / name).write_bytes(pickle.dumps(_Marker(marker)))
