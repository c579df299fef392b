"""The speed matrix: evalloss against the scripts a user would write, across data shapes (not
a test).

    python benchmarks/matrix.py                                   # the whole matrix
    python benchmarks/matrix.py --rows 1000000 --features 8 --models 1 --width 16 --format csv

Cells: rows (600k, 1M, 3M) x features (8, 32, 256) x models (1, 3) x MLP width (16, 256:
features-W-W-10) x format (CSV, Parquet). In each cell five commands run as whole processes
(start-up included), interleaved, ``--repeat`` rounds: ``evalloss compare`` on the layers-spec
checkpoints; ``evalloss compare`` on the same weights as a user's own ``nn.Module`` class
(``--model usermlp.py:MLP``, a file the benchmark writes; its checkpoints have no spec); the limit
(`limit.py`: pyarrow reads the file whole with float32 columns, then forward passes over the
preloaded tensor at batch 2048, 2 threads); the pyarrow script (`pyarrow_script.py`:
pyarrow's defaults, all rows in one forward pass a model); the pandas script
(`pandas_script.py`). Each gives its median wall time and its peak RSS (``wait4``). A row
per cell is printed, and appended as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import interleaved  # noqa: E402

PY = sys.executable


def ints(text: str) -> list[int]:
    return [int(float(t)) for t in text.split(",")]


def make(folder: Path, rows: int, features: int, widths: list[int]) -> None:
    """The cell's data (CSV and Parquet: ``features`` float32 columns, 4 decimals, and a
    10-class label) and three checkpoints a width, unless already there."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    import torch
    from _common import CLASSES, feature_names, mlp

    import evalloss

    folder.mkdir(parents=True, exist_ok=True)
    csv, parquet = data_paths(folder, rows, features)
    if not (csv.exists() and parquet.exists()):
        rng = np.random.default_rng(features)
        teacher = rng.standard_normal((features, CLASSES), dtype=np.float32)
        batches = []
        for start in range(0, rows, 500_000):
            x = rng.standard_normal((min(500_000, rows - start), features), dtype=np.float32)
            x = np.round(x, 4)
            y = (x @ teacher + rng.standard_normal((len(x), CLASSES), dtype=np.float32))
            columns = {n: x[:, i] for i, n in enumerate(feature_names(features))}
            batches.append(pa.record_batch({**columns, "label": y.argmax(axis=1)}))
        table = pa.Table.from_batches(batches)
        pacsv.write_csv(table, csv, write_options=pacsv.WriteOptions(quoting_style="none"))
        pq.write_table(table, parquet, row_group_size=65_536)
    for width in widths:
        for i, path in enumerate(checkpoint_paths(folder, features, width)):
            if not path.exists():
                torch.manual_seed(i)
                evalloss.save(mlp(features, width), path, loss="cross-entropy", target="label")
    user_checkpoints(folder, features, widths)


USER_MODULE = '''"""A user's own MLP (written by benchmarks/matrix.py)."""
import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self, features: int, width: int, classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(features, width)
        self.fc2 = nn.Linear(width, width)
        self.out = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.fc2(torch.relu(self.fc1(x)))))
'''


def user_checkpoints(folder: Path, features: int, widths: list[int]) -> None:
    """The user module's file and, a width, the spec checkpoints' weights under its names
    (no ``evalloss.layers`` spec: the run needs ``--model``)."""
    from safetensors.torch import load_file

    import evalloss

    module = folder / "usermlp.py"
    if not module.exists():
        module.write_text(USER_MODULE)
    sys.path.insert(0, str(folder))
    from usermlp import MLP

    names = {"0": "fc1", "2": "fc2", "4": "out"}
    for width in widths:
        pairs = zip(checkpoint_paths(folder, features, width),
                    user_checkpoint_paths(folder, features, width), strict=True)  # fmt: skip
        for spec, user in pairs:
            if not user.exists():
                model = MLP(features, width)
                tensors = load_file(spec)
                model.load_state_dict({f"{names[k.split('.')[0]]}.{k.split('.')[1]}": v
                                       for k, v in tensors.items()})  # fmt: skip
                evalloss.save(model, user, loss="cross-entropy", target="label")


def data_paths(folder: Path, rows: int, features: int) -> tuple[Path, Path]:
    stem = folder / f"m-{rows}x{features}"
    return stem.with_suffix(".csv"), stem.with_suffix(".parquet")


def checkpoint_paths(folder: Path, features: int, width: int) -> list[Path]:
    return [folder / f"mlp-{features}-{width}-{i}.safetensors" for i in range(3)]


def user_checkpoint_paths(folder: Path, features: int, width: int) -> list[Path]:
    return [folder / f"user-{features}-{width}-{i}.safetensors" for i in range(3)]


def commands(data: Path, ckpts: list[str], users: list[str], features: int,
             width: int) -> dict[str, list[str]]:
    kwargs = json.dumps({"features": features, "width": width})
    return {
        "evalloss": [PY, "-m", "evalloss", "compare", *ckpts, "--data", str(data),
                     "--format", "json", "--no-progress"],
        "user": [PY, "-m", "evalloss", "compare", *users, "--data", str(data), "--model",
                 str(data.parent / "usermlp.py") + ":MLP", "--model-kwargs", kwargs,
                 "--format", "json", "--no-progress"],
        "limit": [PY, "limit.py", str(data), "2048", "2", *ckpts],
        "pyarrow": [PY, "pyarrow_script.py", str(data), *ckpts],
        "pandas": [PY, "pandas_script.py", str(data), *ckpts],
    }  # fmt: skip


def table(results: Path) -> None:
    """The Markdown table of a results file: a row per cell (the last run of each)."""
    rows = {}
    for line in results.read_text().splitlines():
        r = json.loads(line)
        rows[(r["rows"], r["features"], r["models"], r["width"], r["format"])] = r
    names = ("evalloss", "user", "limit", "pyarrow", "pandas")
    print("| rows | features | models x width | format | spec | user module | limit | pyarrow "
          "| pandas | spec / faster script | user / faster script | peak RSS MB (spec / user / "
          "limit / pa / pd) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (rows_, features, models, width, kind), r in sorted(rows.items()):
        s = {k: r[k]["s"] if k in r else math.nan for k in names}  # a skipped command: nan
        best = min((v for k, v in s.items() if k in ("pyarrow", "pandas") and k in r),
                   default=math.nan)  # fmt: skip
        rss = " / ".join(f"{r[k]['rss_mb']:.0f}" if k in r else "-" for k in names)
        times = " | ".join("-" if math.isnan(v) else f"{v:.2f}" for v in s.values())
        print(f"| {rows_:,} | {features} | {models} x {width} | {kind} | {times} | "
              f"{s['evalloss'] / best:.2f}x | {s['user'] / best:.2f}x | {rss} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=ints, default=[600_000, 1_000_000, 3_000_000])
    parser.add_argument("--features", type=ints, default=[8, 32, 256])
    parser.add_argument("--models", type=ints, default=[1, 3])
    parser.add_argument("--width", type=ints, default=[16, 256])
    parser.add_argument("--format", default="csv,parquet")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--skip", default="", help="commands to leave out, e.g. pandas")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/evalloss-matrix"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/evalloss-matrix/results.jsonl"))
    parser.add_argument("--make-only", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--table", type=Path, help="print the Markdown table of a results file")
    args = parser.parse_args()
    if args.table:
        table(args.table)
        return
    if args.make_only:
        make(args.folder, *args.make_only, args.width)
        return
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, load average {os.getloadavg()[0]:.2f}; median of "
          f"{args.repeat} interleaved rounds", flush=True)  # fmt: skip
    skip = set(args.skip.split(",")) - {""}
    for rows, features in itertools.product(args.rows, args.features):
        # in a child: a big parent would inflate the peak RSS of every timed child
        subprocess.run([PY, __file__, "--make-only", str(rows), str(features), "--folder",
                        str(args.folder), "--width", ",".join(map(str, args.width))],
                       check=True)  # fmt: skip
        csv, parquet = data_paths(args.folder, rows, features)
        for width, models, kind in itertools.product(args.width, args.models,
                                                     args.format.split(",")):  # fmt: skip
            data = csv if kind == "csv" else parquet
            ckpts = [str(p) for p in checkpoint_paths(args.folder, features, width)[:models]]
            users = [str(p) for p in user_checkpoint_paths(args.folder, features, width)[:models]]
            cell = f"{rows} x {features}, {models} x width {width}, {kind}"
            print(f"## {cell} ({data.stat().st_size / 1e6:.0f} MB)", flush=True)
            every = commands(data, ckpts, users, features, width)
            runs = {k: c for k, c in every.items() if k not in skip}
            got = interleaved(runs, args.repeat)
            row = {"rows": rows, "features": features, "models": models, "width": width,
                   "format": kind, "load": os.getloadavg()[0]} | {
                   k: {"s": r["seconds"], "cpu": r["cpu"], "rss_mb": r["rss_mb"]}
                   for k, r in got.items()}  # fmt: skip
            scripts = [got[k]["seconds"] for k in ("pyarrow", "pandas") if k in got]
            for ours in ("evalloss", "user"):
                ratios, took = [], got.get(ours, {}).get("seconds")
                if took and scripts:
                    ratios.append(f"{took / min(scripts):.2f}x the faster script")
                if took and "limit" in got:
                    ratios.append(f"{took / got['limit']['seconds']:.2f}x the limit")
                if ratios:
                    print(f"=> {cell}: {ours} {', '.join(ratios)}", flush=True)
            with args.out.open("a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
