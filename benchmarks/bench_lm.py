"""Benchmark `--loss causal-lm` against the scripts a user would write (not a test).

    python benchmarks/bench_lm.py --documents 2000 --repeat 3

Makes a small GPT-shaped model (`_lm.GPT`: 2 layers, width 128, a vocabulary of 4096) and
``--documents`` documents of token ids with long-tailed lengths (a log-normal, 2 to 1024
tokens) as Parquet, then times as whole processes, interleaved, the median of ``--repeat``:
evalloss (`compare --loss causal-lm`); a plain padded loop in file order at batch 8; and the
limit (forward passes over pre-tokenized, length-sorted, pre-padded batches at the same token
budget, timed inside the process, start-up excluded); and transformers' `Trainer.evaluate` at
eval batch 8 when transformers is installed. Prints tokens per second and ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import interleaved, timed  # noqa: E402

KWARGS = {"vocab": 4096, "width": 128, "layers": 2, "heads": 4, "positions": 1024}


def make(folder: Path, documents: int) -> tuple[Path, Path, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch
    from _lm import GPT

    import evalloss

    folder.mkdir(parents=True, exist_ok=True)
    data, ckpt = folder / f"docs-{documents}.parquet", folder / "gpt.safetensors"
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(4.5, 0.9, size=documents).astype(int), 2, 1024)
    if not data.exists():
        docs = [rng.integers(0, KWARGS["vocab"], size=n).tolist() for n in lengths]
        pq.write_table(pa.table({"input_ids": docs}), data, row_group_size=512)
    if not ckpt.exists():
        torch.manual_seed(0)
        evalloss.save(GPT(**KWARGS), ckpt, loss="causal-lm")
    return data, ckpt, int((lengths - 1).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--budget", type=int, default=16384, help="tokens per forward pass")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/evalloss-bench-lm"))
    args = parser.parse_args()
    data, ckpt, tokens = make(args.folder, args.documents)
    kwargs = json.dumps(KWARGS)
    py = sys.executable
    model = f"{HERE / '_lm.py'}:GPT"
    commands = {
        "evalloss": [py, "-m", "evalloss", "compare", str(ckpt), "--data", str(data), "--model",
                     model, "--model-kwargs", kwargs, "--batch-tokens", str(args.budget),
                     "--no-progress", "--no-hash"],
        "plain loop, batch 8": [py, str(HERE / "_lm.py"), "plain", str(ckpt), str(data), kwargs],
    }  # fmt: skip
    if importlib.util.find_spec("transformers") is not None:
        commands["Trainer.evaluate, batch 8"] = [
            py, str(HERE / "_lm.py"), "trainer", str(ckpt), str(data), kwargs,
        ]  # fmt: skip
    else:
        print("transformers is not installed: Trainer.evaluate is not timed", flush=True)
    print(f"{platform.processor() or platform.machine()}, {args.documents} documents, "
          f"{tokens} scored tokens, budget {args.budget}", flush=True)  # fmt: skip
    results = interleaved(commands, args.repeat)
    limits = []
    for _ in range(args.repeat):
        *_, err = timed([py, str(HERE / "_lm.py"), "limit", str(ckpt), str(data), kwargs,
                         str(args.budget)])  # fmt: skip
        limits.append(float(err.strip().splitlines()[-1]))
    limit = float(np.median(limits))
    print(f"{'limit (compute only)':<28} {limit:8.2f} s  (runs: "
          f"{', '.join(f'{x:.2f}' for x in limits)})")  # fmt: skip
    ours = results["evalloss"]["seconds"]
    for name, result in results.items():
        print(f"{name:<28} {tokens / result['seconds']:10.0f} tokens/s")
    print(f"{'limit':<28} {tokens / limit:10.0f} tokens/s")
    for name, result in results.items():
        if name != "evalloss":
            print(f"{name} / evalloss: {result['seconds'] / ours:.2f}x")
    print(f"evalloss / limit: {ours / limit:.2f}x")


if __name__ == "__main__":
    main()
