"""The seed article's tutorial loop: a Dataset over the CSV, a DataLoader with batch size 10,
``epoch_loss += loss.item()``, per model. ``python tutorial.py DATA CKPT...``; prints the
seconds spent in the loops on stderr (the caller extrapolates from a slice)."""

from __future__ import annotations

import sys
import time

import pandas as pd
import torch
from _common import feature_names, load
from torch import nn
from torch.utils.data import DataLoader, Dataset


class CSVDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    def __init__(self, path: str) -> None:
        frame = pd.read_csv(path)
        self.x = torch.tensor(frame[feature_names()].values, dtype=torch.float32)
        self.y = torch.tensor(frame["label"].values, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def main() -> None:
    data, ckpts = sys.argv[1], sys.argv[2:]
    loader = DataLoader(CSVDataset(data), batch_size=10)
    criterion = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for path in ckpts:
        model = load(path)
        epoch_loss = 0.0
        with torch.no_grad():
            for xb, yb in loader:
                loss = criterion(model(xb), yb)
                epoch_loss += loss.item()
        print(path, epoch_loss / len(loader))
    print(f"loop {time.perf_counter() - start:.3f}", file=sys.stderr)


if __name__ == "__main__":
    main()
