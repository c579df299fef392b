"""Benchmark tensor data and Dataset factories against a plain DataLoader loop (not a test).

    python benchmarks/bench_tensors.py --images 10000 --repeat 3

Makes ``--images`` MNIST-shaped images (1, 28, 28) uint8 with class ids as an ``.npz`` and a
small CNN (two convolutions, allow-listed layers), then times in this process, interleaved,
the median of ``--repeat`` passes at the same batch size:

- evalloss on the ``.npz`` (memory-mapped, uint8 converted per batch) against the loop a user
  writes: the arrays loaded whole, a ``TensorDataset`` through a ``DataLoader``, ``x.float()``,
  ``cross_entropy(reduction='sum')`` added up;
- evalloss on ``--data bench_tensors.py:dataset`` (the same items as a map-style Dataset)
  against the same ``DataLoader`` loop over that Dataset, both with 0 workers;
- evalloss on a Dataset that decodes every item (zlib, like a PNG) with 0, 1 and 2 workers:
  what the ``--workers`` default rests on;
- peak RSS of whole ``evalloss compare`` processes on ``.npz`` files of 3x32x32 images at two
  sizes: memory must not grow with the file.

Prints images per second and ratios (evalloss / loop: above 1 is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import evalloss

HERE = Path(__file__).resolve()
BATCH = 256


def cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )  # fmt: skip


def _arrays() -> tuple[np.ndarray, np.ndarray]:
    with np.load(os.environ["BENCH_TENSORS_NPZ"]) as data:
        return data["inputs"], data["targets"]


def dataset() -> Dataset[tuple[torch.Tensor, torch.Tensor]]:
    """The factory evalloss imports: the .npz's items as a map-style Dataset."""
    x, y = _arrays()
    return TensorDataset(torch.from_numpy(x), torch.from_numpy(y))


class Decoding(Dataset[tuple[torch.Tensor, int]]):
    """Every item stored zlib-compressed and decoded on access, as an image file would be."""

    def __init__(self) -> None:
        x, y = _arrays()
        self.blobs = [zlib.compress(item.tobytes(), 6) for item in x]
        self.shape, self.y = x.shape[1:], y.tolist()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        item = np.frombuffer(zlib.decompress(self.blobs[i]), dtype=np.uint8).reshape(self.shape)
        return torch.from_numpy(item.astype(np.float32) / 16.0), self.y[i]


def decoding() -> Decoding:
    return Decoding()


def plain_loop(model: nn.Module, data: Dataset, workers: int = 0) -> float:  # type: ignore[type-arg]
    total = 0.0
    model.eval()
    with torch.inference_mode():
        for x, y in DataLoader(data, batch_size=BATCH, num_workers=workers):
            out = model(x.float())
            total += float(nn.functional.cross_entropy(out, y, reduction="sum").double())
    return total


def _timed(run: object) -> float:
    start = time.perf_counter()
    run()  # type: ignore[operator]
    return time.perf_counter() - start


def speed(folder: Path, images: int, repeat: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (images, 1, 28, 28), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (images,), generator=g)
    npz = folder / "images.npz"
    np.savez(npz, inputs=x.numpy(), targets=y.numpy())
    os.environ["BENCH_TENSORS_NPZ"] = str(npz)
    torch.manual_seed(0)
    model = cnn()
    ckpt = folder / "cnn.safetensors"
    evalloss.save(model, ckpt, loss="cross-entropy")
    spec = f"{HERE}:dataset"
    runs = {
        "evalloss .npz": lambda: evalloss.compare([ckpt], data=npz, batch_size=BATCH, no_hash=True),
        "loop, arrays in memory": lambda: plain_loop(
            model, TensorDataset(*map(torch.from_numpy, _arrays()))),
        "evalloss Dataset, 0 workers": lambda: evalloss.compare(
            [ckpt], data=spec, batch_size=BATCH, workers=0, no_hash=True),
        "loop over that Dataset, 0 workers": lambda: plain_loop(model, dataset()),
    }  # fmt: skip
    for w in (0, 1, 2):
        runs[f"evalloss decoding Dataset, {w} workers"] = (
            lambda w=w: evalloss.compare([ckpt], data=f"{HERE}:decoding", batch_size=BATCH,
                                         workers=w, no_hash=True))  # fmt: skip
    runs["loop over the decoding Dataset, 0 workers"] = lambda: plain_loop(model, decoding())
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    next(iter(runs.values()))()  # warm-up: imports, first allocations
    for _ in range(repeat):
        for name, run in runs.items():
            seconds[name].append(_timed(run))
    return {name: statistics.median(s) for name, s in seconds.items()}


_PEAK = """
import atexit, sys
def peak():
    status = open("/proc/self/status").read()
    print("VmHWM", status.split("VmHWM:")[1].split()[0], file=sys.stderr)
atexit.register(peak)
sys.argv[0] = "evalloss"
from evalloss.cli import main
main()
"""


def memory(folder: Path, sizes: list[int]) -> dict[int, float]:
    """Peak RSS (MB) of a whole `evalloss compare` process per file size (3x32x32 uint8)."""
    torch.manual_seed(0)
    small = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 10))
    ckpt = folder / "small.safetensors"
    evalloss.save(small, ckpt, loss="cross-entropy")
    peaks = {}
    for n in sizes:
        path = folder / f"m{n}.npz"
        rng = np.random.default_rng(0)
        np.savez(path, inputs=rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8),
                 targets=rng.integers(0, 10, n))  # fmt: skip
        # VmHWM, the child's own peak: wait4's ru_maxrss would include this process's
        # resident memory at the fork (the arrays just written), not only evalloss's
        child = subprocess.run([sys.executable, "-c", _PEAK, "compare", str(ckpt), "--data",
                                str(path), "--no-hash", "--no-progress"],
                               capture_output=True, text=True, check=True)  # fmt: skip
        peaks[n] = int(child.stderr.split("VmHWM")[-1].split()[0]) / 1024
        path.unlink()
    return peaks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--memory", type=int, nargs="*", default=[20_000, 80_000])
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        times = speed(Path(tmp), args.images, args.repeat)
        for name, s in times.items():
            print(f"{name:45s} {s:7.2f} s  {args.images / s:9,.0f} images/s")
        pairs = [("evalloss .npz", "loop, arrays in memory"),
                 ("evalloss Dataset, 0 workers", "loop over that Dataset, 0 workers"),
                 ("evalloss decoding Dataset, 0 workers",
                  "loop over the decoding Dataset, 0 workers")]  # fmt: skip
        for ours, theirs in pairs:
            print(f"{ours} vs {theirs}: {times[theirs] / times[ours]:.2f}x the images/s")
        peaks = memory(Path(tmp), args.memory)
        for n, mb in peaks.items():
            print(f"peak RSS, {n} images of 3x32x32 ({n * 3072 / 2**20:.0f} MB): {mb:.0f} MB")
        print(json.dumps({"seconds": times, "peak_rss_mb": peaks}))


if __name__ == "__main__":
    main()
