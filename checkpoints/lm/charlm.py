"""The shipped language-model example's architecture: a small byte-level causal model.

Bytes (a vocabulary of 256) -> an embedding -> a GRU (causal: position p sees bytes 0..p) ->
logits for the next byte. `evalloss compare` builds it from this file
(``--model checkpoints/lm/charlm.py:CharLM``); the checkpoints hold only its weights.
"""

from __future__ import annotations

import torch
from torch import nn


class CharLM(nn.Module):
    def __init__(self, vocab: int = 256, width: int = 48) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.gru = nn.GRU(width, width, batch_first=True)
        self.head = nn.Linear(width, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (N, L) -> (N, L, 256)
        hidden, _ = self.gru(self.embed(ids))
        return self.head(hidden)
