"""What ``--slice`` costs (not a test): the same run with and without slices, in-process.

    python benchmarks/bench_slices.py --rows 1000000 --values 100 --repeat 3

Makes ``--rows`` x 64 float32 features, 10 classes and a ``segment`` column of ``--values``
distinct strings (shuffled), as Parquet and CSV, and three checkpoints of the 64-256-256-10
MLP; then, per format, runs ``evalloss.compare`` (one model the baseline, so the per-slice
paired statistics are computed too) without and with ``--slice segment``, interleaved, and
prints the medians and their ratio. ``--values 5000`` shows a column of thousands of values.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CLASSES, FEATURES, feature_names, mlp

import evalloss


def make(folder: Path, rows: int, values: int) -> dict[str, Path]:
    files = {"parquet": folder / f"sliced-{rows}-{values}.parquet",
             "csv": folder / f"sliced-{rows}-{values}.csv"}  # fmt: skip
    if not files["csv"].exists():
        g = np.random.default_rng(0)
        x = np.round(g.normal(size=(rows, FEATURES)), 4).astype(np.float32)
        columns = {n: x[:, i] for i, n in enumerate(feature_names())}
        columns["segment"] = np.array([f"s{v:05d}" for v in range(values)])[
            g.integers(0, values, rows)
        ]
        columns["label"] = g.integers(0, CLASSES, rows)
        table = pa.table(columns)
        pq.write_table(table, files["parquet"], row_group_size=131_072)
        pacsv.write_csv(table, files["csv"])
    for i in range(3):
        path = folder / f"mlp{i}.safetensors"
        if not path.exists():
            torch.manual_seed(i)
            evalloss.save(mlp(), path, loss="cross-entropy", target="label")
        files[f"ckpt{i}"] = path
    return files


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--values", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--folder", default="/tmp/evalloss-bench")
    parser.add_argument("--format", action="append", choices=("parquet", "csv"),
                        help="data formats to time (default: both)")  # fmt: skip
    args = parser.parse_args()
    folder = Path(args.folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = make(folder, args.rows, args.values)
    ckpts = [str(files[f"ckpt{i}"]) for i in range(2)]
    features = feature_names()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"torch {torch.__version__}, {args.rows:,} rows, {args.values} slice values")  # fmt: skip
    for kind in args.format or ("parquet", "csv"):
        times: dict[str, list[float]] = {"plain": [], "sliced": []}
        for _ in range(args.repeat):
            for name, extra in (("plain", {}), ("sliced", {"slice": ["segment"]})):
                start = time.perf_counter()
                report = evalloss.compare(ckpts, baseline=str(files["ckpt2"]), data=files[kind],
                                          feature=features, no_hash=True, **extra)  # type: ignore[arg-type]
                times[name].append(time.perf_counter() - start)
                if extra:
                    assert len(report.models[0].slices) == args.values
        plain, sliced = (statistics.median(times[k]) for k in ("plain", "sliced"))
        print(f"{kind:8s} without slices {plain:6.2f} s  with --slice {sliced:6.2f} s  "
              f"ratio {sliced / plain:.3f}  (runs: {times})")  # fmt: skip


if __name__ == "__main__":
    main()
