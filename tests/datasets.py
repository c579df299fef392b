"""Data set factories the tests name with --data (by file path, and as tests.datasets:Name)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, IterableDataset, TensorDataset

ITEMS = 23  # a multiple of no batch size the tests use


def images(items: int = ITEMS, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (N, 1, 8, 8), values 0..16 like scikit-learn's digits, and class ids (N,)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 17, (items, 1, 8, 8), generator=g, dtype=torch.uint8)
    return x, torch.randint(0, 10, (items,), generator=g)


def digits() -> Dataset[tuple[torch.Tensor, torch.Tensor]]:
    """A map-style Dataset of ``images()`` as float tensors and int class ids."""
    x, y = images()
    return TensorDataset(x.float(), y)


class Stream(IterableDataset[tuple[torch.Tensor, torch.Tensor]]):
    """``images()`` as an IterableDataset (no __len__)."""

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        x, y = images()
        yield from zip(x.float(), y, strict=True)


def stream() -> Stream:
    return Stream()


class _Items(Dataset[object]):
    def __init__(self, items: list[object]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> object:
        return self.items[i]


def raises() -> Dataset[object]:
    raise ValueError("no such folder: /data/val")


def not_a_dataset() -> list[int]:
    return [1, 2, 3]


def singles() -> Dataset[object]:
    """Items that are one tensor, not (input, target) pairs."""
    return _Items([torch.zeros(3)] * 4)


def triples() -> Dataset[object]:
    return _Items([(torch.zeros(3), 1, 2)] * 4)


def text_targets() -> Dataset[object]:
    return _Items([(torch.zeros(3), "cat")] * 4)


class _Failing(Dataset[object]):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> object:
        if i == 7:
            raise OSError("image 7 is truncated")
        return torch.zeros(1, 8, 8), 0


def fails_at_7() -> Dataset[object]:
    return _Failing()


def empty() -> Dataset[object]:
    return _Items([])
