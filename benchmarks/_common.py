"""Shared by the benchmark scripts: the MLPs (64-256-256-10 by default; the matrix varies the
features and the width), loaded from their checkpoints whatever their shape; the feature names."""

from __future__ import annotations

import torch
from safetensors.torch import load_file
from torch import nn

FEATURES = 64
CLASSES = 10


def mlp(features: int = FEATURES, width: int = 256) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(features, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
        nn.Linear(width, CLASSES),
    )  # fmt: skip


def load(path: str) -> nn.Sequential:
    """The MLP of the checkpoint, its features and width read from the first layer's shape."""
    tensors = load_file(path)
    width, features = tensors["0.weight"].shape
    model = mlp(features, width)
    model.load_state_dict(tensors)
    return model.eval()


def feature_names(features: int = FEATURES) -> list[str]:
    return [f"f{i}" for i in range(features)]


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
