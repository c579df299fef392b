"""The architecture of the shipped example: 4 features -> 16 hidden -> 3 classes."""

from torch import nn


def Net() -> nn.Sequential:  # noqa: N802 - named like the class it stands for
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
