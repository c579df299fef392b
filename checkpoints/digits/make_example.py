"""Make the image example: scikit-learn's 8x8 digits as tensors, and two small CNNs.

Run from the repository root: ``python checkpoints/digits/make_example.py`` (needs
scikit-learn, which evalloss itself does not: the digits ship with it, nothing is downloaded;
``pip install scikit-learn``). Deterministic. It writes ``val.npz`` (the 597 held-out digits:
``inputs`` (597, 1, 8, 8) uint8 pixel values 0..16, ``targets`` (597,) int64 classes), two
checkpoints with an ``evalloss.layers`` spec trained on the other 1200 digits with batch size 8
and 256 for the same number of epochs, and ``training_log.json`` with what the usual loop
printed for each (a sum of batch averages).
"""

import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

import evalloss

HERE = Path(__file__).resolve().parent
TRAIN = 1200  # the first 1200 digits train, the other 597 are the held-out set
EPOCHS = 8


def Net() -> nn.Sequential:  # noqa: N802 - named like the class it stands for
    """(N, 1, 8, 8) pixel values 0..16 -> 10 class logits; allow-listed layers only, so
    evalloss.save records it as an evalloss.layers spec (no --model needed)."""
    return nn.Sequential(
        nn.BatchNorm2d(1),  # the pixels arrive unscaled (uint8 converted on the device)
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 8, 4, 4)
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),  # (N, 16, 1, 1)
        nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # only this script needs scikit-learn

    data = load_digits()
    return data.images.astype(np.uint8)[:, None], data.target.astype(np.int64)


def train(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> tuple[nn.Module, float]:
    """The usual loop; returns the net and its last epoch's printed loss."""
    torch.manual_seed(1)
    net = Net()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    generator = torch.Generator().manual_seed(1)
    epoch_loss = 0.0
    for _ in range(EPOCHS):
        epoch_loss = 0.0
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(net(x[batch].float()), y[batch])
            loss.backward()
            optimizer.step()
            epoch_loss += loss.item()  # a sum of batch averages
    return net.eval(), epoch_loss


def main() -> None:
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    images, labels = digits()
    np.savez(HERE / "val.npz", inputs=images[TRAIN:], targets=labels[TRAIN:])  # stored: mapped
    x, y = torch.from_numpy(images[:TRAIN]), torch.from_numpy(labels[:TRAIN])
    log = {}
    for name, batch_size in (("bs8", 8), ("bs256", 256)):
        net, printed = train(x, y, batch_size)
        evalloss.save(net, HERE / f"{name}.safetensors", loss="cross-entropy")
        log[name] = {"batch_size": batch_size, "epochs": EPOCHS, "epoch_loss": round(printed, 4)}
    (HERE / "training_log.json").write_text(json.dumps(log, indent=2) + "\n")
    print(json.dumps(log, indent=2))


if __name__ == "__main__":
    main()
