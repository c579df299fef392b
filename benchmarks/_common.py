"""Shared by the benchmark scripts: load the 64-256-256-10 MLP checkpoints, read the data."""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from torch import nn

FEATURES = 64
CLASSES = 10


def mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(FEATURES, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, CLASSES)
    )


def load(path: str) -> nn.Sequential:
    model = mlp()
    model.load_state_dict(load_file(path))
    return model.eval()


def feature_names() -> list[str]:
    return [f"f{i}" for i in range(FEATURES)]


def loss_sum(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    """Sum of per-item cross-entropy over all rows, float64, in batches of ``batch``."""
    total = 0.0
    with torch.inference_mode():
        for s in range(0, len(x), batch):
            out = model(x[s : s + batch])
            total += float(
                nn.functional.cross_entropy(out, y[s : s + batch], reduction="none").double().sum()
            )
    return total
