"""Make the shipped example: a small data set and one network trained three ways.

Run from the repository root: ``python checkpoints/make_example.py``. Deterministic: it
writes ``train.csv`` (600 rows, 4 features, 3 classes), three checkpoints, and
``training_log.json`` with what the usual training loop printed for each.

The story (the seed article's): the same network trained with batch size 10 and 50 prints
very different epoch losses (a sum of batch averages), and a barely trained one prints a
figure that looks competitive. Only the exact per-item loss ranks them correctly.
"""

import json
from pathlib import Path

import torch
from torch import nn

import evalloss

HERE = Path(__file__).resolve().parent

ROWS, CLASSES = 600, 3


def Net() -> nn.Sequential:  # noqa: N802 - named like the class it stands for
    """4 features -> 16 hidden -> 3 classes; evalloss.save records it as an evalloss.layers spec."""
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))


def make_data(generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Three overlapping Gaussian blobs in 4 dimensions, rounded to 3 decimals."""
    centres = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.5, 1.0, -0.5, 0.5], [0.5, 2.0, 1.0, -1.0]])
    y = torch.arange(ROWS) % CLASSES
    x = centres[y] + torch.randn(ROWS, 4, generator=generator)
    return torch.round(x * 1000) / 1000, y


def train(
    x: torch.Tensor, y: torch.Tensor, batch_size: int, epochs: int, seed: int
) -> tuple[nn.Module, float]:
    """The seed article's loop; returns the net and its last epoch's printed loss."""
    torch.manual_seed(seed)
    net = Net()
    loss_func = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(seed)
    epoch_loss = 0.0
    for _ in range(epochs):
        epoch_loss = 0.0  # accumulated for one full epoch
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss_val = loss_func(net(x[batch]), y[batch])  # average per item
            loss_val.backward()
            optimizer.step()
            epoch_loss += loss_val.item()  # sum of averages
    return net, epoch_loss


def main() -> None:
    torch.use_deterministic_algorithms(True)
    x, y = make_data(torch.Generator().manual_seed(0))
    with open(HERE / "train.csv", "w") as f:
        f.write("x1,x2,x3,x4,species\n")
        for row, label in zip(x.tolist(), y.tolist(), strict=True):
            f.write(",".join(f"{v:.3f}" for v in row) + f",{label}\n")
    log = {}
    for name, batch_size, epochs in (("bs10", 10, 40), ("bs50", 50, 40), ("barely", 50, 1)):
        net, printed = train(x, y, batch_size, epochs, seed=1)
        evalloss.save(net, HERE / f"{name}.safetensors", loss="cross-entropy", target="species")
        log[name] = {
            "batch_size": batch_size,
            "epochs": epochs,
            "last_epoch_loss": round(printed, 4),
        }
    (HERE / "training_log.json").write_text(json.dumps(log, indent=2) + "\n")
    print(json.dumps(log, indent=2))


if __name__ == "__main__":
    main()
