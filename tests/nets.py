"""Architectures the tests name with --model (imported by file path, as a user's would be)."""

from __future__ import annotations

import torch
from torch import nn


class Zero(nn.Module):
    """Outputs zeros of shape (N, outputs): with L1 the loss of an item is |target|."""

    def __init__(self, outputs: int = 1) -> None:
        super().__init__()
        self.outputs = outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(len(x), self.outputs)


def mlp(features: int = 3, hidden: int = 8, outputs: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, outputs))


def linear(features: int = 3, outputs: int = 1) -> nn.Linear:
    return nn.Linear(features, outputs)


def not_a_module() -> int:
    return 42
