"""Tiny PEFT adapter folders over the tiny model folders of `tests.hf`, made with peft itself
and saved with ``save_pretrained``; and the independent figure: peft's own ``PeftModel``
(``from_pretrained``, eval mode, adapter active), or the merged model (``merge_and_unload``),
scoring one document at a time in float64, added with ``math.fsum``."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import pytest

from tests import hf  # first: skips without the hf extra

peft = pytest.importorskip("peft", reason="needs the peft extra")

import torch  # noqa: E402


def save(base: Path, folder: Path, config: Any, seed: int) -> Path:
    """The adapter ``config`` made over ``base`` with random (non-zero) weights, saved."""
    torch.manual_seed(seed)
    with warnings.catch_warnings():  # peft's notes (fan_in_fan_out for GPT-2's Conv1D)
        warnings.simplefilter("ignore")
        model = peft.get_peft_model(hf.model_of(base).float(), config)
    with torch.no_grad():  # large enough that every adapter changes the loss
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)
    model.save_pretrained(folder)
    return folder


def lora(base: Path, folder: Path, seed: int = 1, **options: Any) -> Path:
    options = {"r": 4, "lora_alpha": 8, "target_modules": ["c_attn"], **options}
    return save(base, folder, peft.LoraConfig(**options), seed)


def ids(tokenizer: Path, documents: list[str]) -> list[list[int]]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer))
    return [tok.encode(d).ids for d in documents]


def peft_model(base: Path, adapter: Path | None, *, merged: bool = False) -> torch.nn.Module:
    """The base in float64 with the adapter as peft loads it (or merged into it)."""
    model = hf.model_of(base)
    if adapter is None:
        return model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = peft.PeftModel.from_pretrained(model, adapter).to(torch.float64).eval()
    return loaded.merge_and_unload().eval() if merged else loaded


def loss_sum(model: torch.nn.Module, documents: list[list[int]]) -> float:
    """Every scored token's loss, one document at a time, float64, `math.fsum`."""
    terms: list[float] = []
    with torch.no_grad():
        for doc in documents:
            if len(doc) < 2:
                continue
            x = torch.tensor([doc])
            logp = torch.log_softmax(model(input_ids=x).logits[0, :-1].double(), dim=-1)
            terms += (-logp[torch.arange(len(doc) - 1), x[0, 1:]]).tolist()
    return math.fsum(terms)
