"""Tiny models, made-up documents and the independent oracles of the training integrations
(tests/test_training_hf.py, tests/test_training_lightning.py, tests/training_driver.py).

Oracles: the model in float64, one document (or item) at a time, its own loss, added with
``math.fsum``: nothing of evalloss's sums, the Trainer's or Lightning's.
"""

from __future__ import annotations

import copy
import math
import tempfile
from typing import Any

import torch
from torch import nn

VOCAB = 50
ODD = 13  # items: odd, so two processes' padding duplicates one


def documents(count: int = ODD, seed: int = 1) -> list[list[int]]:
    """Token documents of 2 to 29 tokens (varied, so batches pad)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 30, (count,), generator=g).tolist()
    return [torch.randint(0, VOCAB, (n,), generator=g).tolist() for n in lengths]


def collate(features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Right-padded ids, attention mask and HF labels (-100 on padding); ``label`` (a class)
    passes through as ``labels``."""
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.zeros((len(features), width), dtype=torch.int64)
    mask = torch.zeros_like(ids)
    for row, f in enumerate(features):
        ids[row, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
        mask[row, : len(f["input_ids"])] = 1
    if "label" in features[0]:
        labels = torch.tensor([f["label"] for f in features])
    elif "labels" in features[0]:  # a label a token (-100: not scored), padded with -100
        labels = torch.full_like(ids, -100)
        for row, f in enumerate(features):
            labels[row, : len(f["labels"])] = torch.tensor(f["labels"])
    else:
        labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def gpt2(seed: int = 0, classes: int | None = None) -> nn.Module:
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_positions=64, n_embd=16, n_layer=1, n_head=2,
                        bos_token_id=0, eos_token_id=0, pad_token_id=0)  # fmt: skip
    if classes is None:
        return GPT2LMHeadModel(config).eval()
    config.num_labels = classes
    return GPT2ForSequenceClassification(config).eval()


def bert(task: str, seed: int = 0) -> nn.Module:
    """A one-layer BERT: a masked LM, or a token classifier of 5 classes."""
    from transformers import BertConfig, BertForMaskedLM, BertForTokenClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=64,
                        num_labels=5, pad_token_id=0)  # fmt: skip
    kind = BertForMaskedLM if task == "masked-lm" else BertForTokenClassification
    return kind(config).eval()


def token_rows(docs: list[list[int]], classes: int, seed: int = 3) -> list[dict[str, Any]]:
    """Each token labelled (a class below ``classes``) or not scored (-100), about half and
    half; the third document has no scored token."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i, ids in enumerate(docs):
        labels = torch.randint(0, classes, (len(ids),), generator=g)
        unscored = torch.rand(len(ids), generator=g) < 0.5
        if i == 2:
            unscored[:] = True
        rows.append({"input_ids": ids, "labels": labels.masked_fill(unscored, -100).tolist()})
    return rows


def own_labelled_loss(model: nn.Module, rows: list[dict[str, Any]]) -> tuple[float, int]:
    """(loss per scored token, scored tokens): the model's own ``labels=`` loss x the row's
    scored tokens, float64, one row at a time (a row with none adds nothing), math.fsum."""
    twin = copy.deepcopy(model).double().eval()
    terms, tokens = [], 0
    with torch.no_grad():
        for row in rows:
            scored = sum(label != -100 for label in row["labels"])
            if scored:
                out = twin(input_ids=torch.tensor([row["input_ids"]]),
                           labels=torch.tensor([row["labels"]]))  # fmt: skip
                terms.append(float(out.loss) * scored)
                tokens += scored
    return math.fsum(terms) / tokens, tokens


def lora(model: nn.Module) -> nn.Module:
    """A LoRA adapter over ``model`` whose weights change its outputs (not zero-initialised)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(5)
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], init_lora_weights=False,
                        fan_in_fan_out=True)
    return get_peft_model(model, config)


def own_token_loss(model: nn.Module, docs: list[list[int]]) -> tuple[float, int]:
    """(loss per token, tokens): the model's own ``labels=`` loss x (tokens - 1), float64,
    one document at a time, with math.fsum."""
    twin = copy.deepcopy(model).double().eval()
    terms, tokens = [], 0
    with torch.no_grad():
        for ids in docs:
            x = torch.tensor([ids])
            terms.append(float(twin(input_ids=x, labels=x).loss) * (len(ids) - 1))
            tokens += len(ids) - 1
    return math.fsum(terms) / tokens, tokens


def own_item_loss(model: nn.Module, rows: list[dict[str, Any]]) -> float:
    """The classifier's own ``labels=`` loss, float64, one item at a time, math.fsum / N."""
    twin = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        terms = [float(twin(input_ids=torch.tensor([r["input_ids"]]),
                            labels=torch.tensor([r["label"]])).loss) for r in rows]  # fmt: skip
    return math.fsum(terms) / len(rows)


def trainer(model: nn.Module, rows: list[dict[str, Any]], batch: int, **kwargs: Any) -> Any:
    """transformers' Trainer over ``rows`` on the CPU, reporting to nothing, with the
    callbacks in ``kwargs``."""
    from transformers import Trainer, TrainingArguments

    extra = {k: kwargs.pop(k) for k in list(kwargs) if k not in ("callbacks", "train_dataset",
                                                                  "compute_loss_func")}  # fmt: skip
    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(), per_device_eval_batch_size=batch, use_cpu=True,
        report_to=[], disable_tqdm=True, remove_unused_columns=False, save_strategy="no",
        **extra,
    )  # fmt: skip
    return Trainer(model=model, args=args, eval_dataset=rows, data_collator=collate, **kwargs)
