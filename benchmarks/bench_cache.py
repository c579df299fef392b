"""Benchmark --cache on a one-candidate gate (not a test).

    python benchmarks/bench_cache.py --rows 1000000 --documents 2000 --repeat 3

Three cases: the tabular benchmark's data (``--rows`` x 64 features, Parquet) with two of its
64-256-256-10 MLPs (not model-bound: reading the data costs as much as a model), the same data
with two 64-W-W-10 MLPs of ``--wide`` W (model-bound), and the language-model benchmark's
documents (`bench_lm`) with two of its GPTs. For each, three commands timed as whole processes,
interleaved, the median of ``--repeat``: the gate without a cache; the same gate with the
baseline cached (a fresh copy of a cache that holds the baseline alone, copied inside the timed
command); and the gate with an empty cache (both models evaluated, hashed and stored: the cost
of a miss). Then the JSON reports of the uncached and cached-baseline gates are compared figure
by figure, and the key's hashes are timed alone (sha256 of the data and both checkpoints on one
thread) as a share of the miss. ``--cases lm`` runs one case.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import interleaved, make_data, paths  # noqa: E402
from bench_lm import KWARGS  # noqa: E402
from bench_lm import make as make_lm  # noqa: E402

PY = sys.executable


def gate(candidate: Path, baseline: Path, data: Path, *extra: str) -> list[str]:
    return [PY, "-m", "evalloss", "compare", str(candidate), "--baseline", str(baseline),
            "--data", str(data), "--max-loss", "1e9", "--format", "json", "--no-progress",
            *extra]  # fmt: skip


def shell(*parts: str) -> list[str]:
    return ["sh", "-c", " ".join(parts)]


def case(name: str, command: list[str], folder: Path, repeat: int) -> dict[str, float]:
    """Time the three gates of one case; check the cached figures; return the ratios."""
    base, cand, data = command[6], command[4], command[command.index("--data") + 1]
    seeded = folder / f"{name}-seeded"
    shutil.rmtree(seeded, ignore_errors=True)
    gate_at = command.index("--max-loss")
    only_base = [*command[:4], base, *command[7:gate_at], *command[gate_at + 2 :]]
    subprocess.run([*only_base, "--cache", str(seeded)], check=True, stdout=subprocess.DEVNULL)
    work, empty = folder / f"{name}-work", folder / f"{name}-empty"
    quoted = " ".join(f"'{c}'" for c in command)
    copy = f"rm -rf '{work}' && cp -r '{seeded}' '{work}' &&"
    commands = {
        f"{name}: no cache": command,
        f"{name}: baseline cached": shell(copy, quoted, f"--cache '{work}'"),
        f"{name}: empty cache (miss)": shell(f"rm -rf '{empty}' &&", quoted, f"--cache '{empty}'"),
    }
    print(f"# {name}: candidate {Path(cand).name}, baseline {Path(base).name}", flush=True)
    results = interleaved(commands, repeat)
    plain = _figures(subprocess.run(command, check=False, capture_output=True, text=True).stdout)
    cached = subprocess.run([*command, "--cache", str(seeded)], check=False, capture_output=True,
                            text=True)  # fmt: skip
    identical = plain == _figures(cached.stdout)
    walls = [r["seconds"] for r in results.values()]
    ratios = {"cached / uncached": walls[1] / walls[0], "miss / uncached": walls[2] / walls[0],
              "key hashes / miss": hash_seconds([data, cand, base]) / walls[2]}  # fmt: skip
    for label, value in ratios.items():
        print(f"{name}: {label}: {value:.3f}x", flush=True)
    print(f"{name}: cached figures bit-identical to uncached: {identical}", flush=True)
    return ratios


def hash_seconds(files: list[str]) -> float:
    """What the key's hashes cost a miss at most: evalloss's own sha256 of the data and both
    checkpoints, on this (one) thread, median of 3 (a run does it on a thread of its own,
    while torch imports, so its wall-time cost is less)."""
    import statistics
    import time

    from evalloss.io.hashing import _hash

    def once() -> float:
        start = time.perf_counter()
        for path in files:
            _hash(path)
        return time.perf_counter() - start

    return statistics.median(once() for _ in range(3))


def _figures(report: str) -> object:
    """The report's figures: every model without its seconds, and the gate."""
    document = json.loads(report)
    for model in document["models"]:
        model.pop("seconds")
    return document["models"], document.get("gate")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--documents", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--wide", type=int, default=1024, help="the model-bound MLP's width")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/evalloss-bench-cache"))
    parser.add_argument("--cases", default="tabular,wide,lm", help="which of tabular,wide,lm")
    args = parser.parse_args()
    cases = set(args.cases.split(","))
    import torch

    import evalloss

    make_data(args.folder, args.rows)
    files = paths(args.folder, args.rows)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{args.rows} rows, {args.documents} documents", flush=True)  # fmt: skip
    if "tabular" in cases:
        case("tabular", gate(files["ckpt1"], files["ckpt0"], files["parquet"]), args.folder,
             args.repeat)  # fmt: skip
    sys.path.insert(0, str(HERE))
    from _common import FEATURES, mlp
    from _lm import GPT

    wide = [args.folder / f"mlp-{args.wide}-{i}.safetensors" for i in range(2)]
    for i, path in enumerate(wide):
        if not path.exists():
            torch.manual_seed(i)
            evalloss.save(mlp(FEATURES, args.wide), path, loss="cross-entropy", target="label")
    if "wide" in cases:
        case(f"tabular-w{args.wide}", gate(wide[1], wide[0], files["parquet"]), args.folder,
             args.repeat)  # fmt: skip
    if "lm" not in cases:
        return

    data, base, _ = make_lm(args.folder / "lm", args.documents)
    cand = base.with_name("gpt-candidate.safetensors")
    if not cand.exists():
        torch.manual_seed(1)
        evalloss.save(GPT(**KWARGS), cand, loss="causal-lm")
    model = ["--model", f"{HERE / '_lm.py'}:GPT", "--model-kwargs", json.dumps(KWARGS)]
    case(f"lm-{args.documents}", gate(cand, base, data, *model), args.folder, args.repeat)


if __name__ == "__main__":
    main()
