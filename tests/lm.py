"""Tiny causal language models for the tests (imported by path with --model, as a user's are).

`Causal`: token embeddings, averaged over the positions so far (a causal prefix mean), then a
linear head: position p's logits depend on tokens 0..p only, so right padding never changes a
scored position. `TupleOut` and `ObjectOut` return the logits the ways transformers models do;
`LastOnly` returns only the last position's, as nanoGPT's forward does without targets, and
`AllPositions` is the short wrapper docs/language-models.md shows for it.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

VOCAB = 11


class Causal(nn.Module):
    def __init__(self, vocab: int = VOCAB, width: int = 6) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.head = nn.Linear(width, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (N, L) -> (N, L, V)
        h = self.embed(ids).cumsum(dim=1)  # (N, L, W)
        count = torch.arange(1, ids.shape[1] + 1, device=ids.device, dtype=h.dtype)
        return self.head(torch.tanh(h / count[None, :, None]))


class TupleOut(Causal):
    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return super().forward(ids), None


class ObjectOut(Causal):
    def forward(self, ids: torch.Tensor) -> SimpleNamespace:  # type: ignore[override]
        return SimpleNamespace(logits=super().forward(ids), loss=None)


class LastOnly(Causal):
    """nanoGPT's GPT.forward(idx) without targets: logits of the last position only."""

    def forward(self, ids: torch.Tensor, targets: torch.Tensor | None = None) -> tuple:  # type: ignore[override]
        logits = super().forward(ids)
        return (logits if targets is not None else logits[:, [-1], :]), None


class AllPositions(nn.Module):
    """The wrapper for a nanoGPT-style model: pass the input as targets, keep the logits."""

    def __init__(self) -> None:
        super().__init__()
        self.model = LastOnly()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        logits, _ = self.model(ids, targets=ids)
        return logits  # type: ignore[no-any-return]
