"""Benchmark evalloss against the limit, a pandas script and the tutorial loop (not a test).

    pip install -e '.[bench]'
    python benchmarks/bench.py --rows 1000000            # the full comparison
    python benchmarks/bench.py --rows 300000 --sweep     # also: batch sizes, threads, read-ahead
    python benchmarks/bench.py --rows 3000000 --only evalloss-csv --repeat 1   # RSS at 3M rows
    python benchmarks/bench.py --rows 1000000 --torchrun # 1 vs 2 processes

Makes a synthetic data set (``--rows`` x 64 float32 features, 10 classes) as CSV and Parquet,
three checkpoints of a 64-256-256-10 MLP saved with `evalloss.save`, then times each command as
a whole process (start-up included), the median of ``--repeat`` runs, with its peak RSS (from
``wait4``'s rusage of that process and its children). The tutorial loop runs on a 100k-row
slice and is extrapolated linearly in its loop time (stated in the output).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
PY = sys.executable
SLICE = 100_000


def paths(folder: Path, rows: int) -> dict[str, Path]:
    files = {
        "csv": folder / f"data-{rows}.csv",
        "parquet": folder / f"data-{rows}.parquet",
        "slice": folder / f"slice-{min(rows, SLICE)}.csv",
    }
    return files | {f"ckpt{i}": folder / f"mlp{i}.safetensors" for i in range(3)}


def make_data(folder: Path, rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq
    import torch

    import evalloss

    sys.path.insert(0, str(HERE))
    from _common import FEATURES, mlp

    folder.mkdir(parents=True, exist_ok=True)
    files = paths(folder, rows)
    if not all(files[k].exists() for k in ("csv", "parquet", "slice")):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((rows, FEATURES), dtype=np.float32)
        teacher = rng.standard_normal((FEATURES, 10), dtype=np.float32)
        y = (x @ teacher + rng.standard_normal((rows, 10), dtype=np.float32)).argmax(axis=1)
        table = pa.table({**{f"f{i}": x[:, i] for i in range(FEATURES)}, "label": y})
        options = pacsv.WriteOptions(quoting_style="none")
        pacsv.write_csv(table, files["csv"], write_options=options)
        pq.write_table(table, files["parquet"], row_group_size=65_536)
        pacsv.write_csv(table.slice(0, SLICE), files["slice"], write_options=options)
    for i in range(3):
        if not files[f"ckpt{i}"].exists():
            torch.manual_seed(i)
            evalloss.save(mlp(), files[f"ckpt{i}"], loss="cross-entropy", target="label")


def timed(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float, str]:
    """(wall seconds, peak RSS in MB, CPU seconds (user + system), stderr) of the process.
    Byte code is cached as on a user's machine (a sandbox's PYTHONDONTWRITEBYTECODE would
    make evalloss compile its own modules on every start: 0.15 s)."""
    start = time.perf_counter()
    child = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=HERE,
        env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | (env or {}),
    )
    assert child.stderr is not None
    err = child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"failed ({child.returncode}): {' '.join(command)}\n{err}")
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime, err


def _summary(
    label: str, walls: list[float], rss: list[float], cpus: list[float]
) -> dict[str, float]:
    result = {
        "seconds": statistics.median(walls),
        "cpu": statistics.median(cpus),
        "rss_mb": max(rss),
        "runs": len(walls),
    }
    print(
        f"{label:<28} {result['seconds']:8.2f} s  (runs: {', '.join(f'{w:.2f}' for w in walls)})"
        f"  CPU {result['cpu']:6.2f} s  peak RSS {result['rss_mb']:5.0f} MB",
        flush=True,
    )
    return result


def interleaved(
    commands: dict[str, list[str]], repeat: int, env: dict[str, dict[str, str]] | None = None
) -> dict[str, dict[str, float]]:
    """Run every command once per round, ``repeat`` rounds (so each sees the same load over
    time); the median wall and CPU time and the largest peak RSS of each."""
    runs: dict[str, list[tuple[float, float, float, str]]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, command in commands.items():
            runs[name].append(timed(command, (env or {}).get(name)))
    results = {}
    for name, got in runs.items():
        results[name] = _summary(
            name, [g[0] for g in got], [g[1] for g in got], [g[2] for g in got]
        )
        loop = [float(g[3].split("loop ")[1]) for g in got if "loop " in g[3]]
        if loop:
            results[name]["loop"] = statistics.median(loop)
    return results


def evalloss_cmd(data: Path, ckpts: list[str], *extra: str) -> list[str]:
    return [
        PY,
        "-m",
        "evalloss",
        "compare",
        *ckpts,
        "--data",
        str(data),
        "--format",
        "json",
        *extra,
    ]


def sweep(files: dict[str, Path], ckpts: list[str], repeat: int) -> None:
    print("# batch size (evalloss compare, CSV, whole process)")
    interleaved(
        {
            f"--batch-size {size}": evalloss_cmd(files["csv"], ckpts, "--batch-size", str(size))
            for size in (1024, 2048, 4096, 8192, 16384)
        },
        repeat,
    )
    print("\n# threads and read-ahead (CSV and Parquet)")
    commands, env = {}, {}
    for kind in ("csv", "parquet"):
        for threads in ("1", "2"):
            for ahead in ("1", "0"):
                name = f"{kind} --threads {threads} read-ahead {ahead}"
                commands[name] = evalloss_cmd(files[kind], ckpts, "--threads", threads)
                env[name] = {"EVALLOSS_READ_AHEAD": ahead}
    interleaved(commands, repeat, env)


def _versions() -> str:
    """torch and pyarrow versions, asked of a child: this process stays small (see main)."""
    code = (
        "import torch, pyarrow; print(f'torch {torch.__version__}, pyarrow {pyarrow.__version__}')"
    )
    return subprocess.check_output([PY, "-c", code], text=True).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--limit-batch", default="1024,2048", help="the limit's batch sizes (the fastest counts)"
    )
    parser.add_argument(
        "--limit-threads", default="2", help="the limit's torch threads (the fastest counts)"
    )
    parser.add_argument("--folder", type=Path, default=Path("/tmp/evalloss-bench"))
    parser.add_argument(
        "--only", default="", help="comma-separated: evalloss-csv,limit-csv-b1024-t2,..."
    )
    parser.add_argument("--sweep", action="store_true", help="batch sizes, threads, read-ahead")
    parser.add_argument("--torchrun", action="store_true", help="1 vs 2 processes")
    parser.add_argument("--make-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_only:
        make_data(args.folder, args.rows)
        return

    print(f"# {args.rows:,} rows x 64 features, 10 classes, 3 checkpoints of a 64-256-256-10 MLP")
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {_versions()}, load average {os.getloadavg()[0]:.2f}"
    )
    # In a child process: a big parent would inflate every timed child's peak RSS (a forked
    # child counts its parent's pages until it execs).
    subprocess.run(
        [PY, __file__, "--make-only", "--rows", str(args.rows), "--folder", str(args.folder)],
        check=True,
    )
    files = paths(args.folder, args.rows)
    ckpts = [str(files[f"ckpt{i}"]) for i in range(3)]
    print(
        f"# CSV {files['csv'].stat().st_size / 1e6:.0f} MB, Parquet "
        f"{files['parquet'].stat().st_size / 1e6:.0f} MB; median of {args.repeat} runs\n"
    )
    if args.sweep:
        sweep(files, ckpts, args.repeat)
        return
    if args.torchrun:
        two = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        commands = {}
        for kind in ("csv", "parquet"):
            commands[f"evalloss {kind}, 1 process"] = evalloss_cmd(files[kind], ckpts)
            commands[f"evalloss {kind}, 2 processes"] = [
                *two,
                *evalloss_cmd(files[kind], ckpts)[1:],
            ]
        got = interleaved(commands, args.repeat)
        for kind in ("csv", "parquet"):
            one, many = got[f"evalloss {kind}, 1 process"], got[f"evalloss {kind}, 2 processes"]
            print(f"speed-up, {kind}: {one['seconds'] / many['seconds']:.2f}x")
        return

    scale = args.rows / min(args.rows, SLICE)
    runs = {
        "evalloss-csv": evalloss_cmd(files["csv"], ckpts),
        "evalloss-parquet": evalloss_cmd(files["parquet"], ckpts),
        **{
            f"limit-{kind}-b{batch}-t{threads}": [
                PY,
                "limit.py",
                str(files[kind]),
                batch,
                threads,
                *ckpts,
            ]
            for kind in ("csv", "parquet")
            for batch in args.limit_batch.split(",")
            for threads in args.limit_threads.split(",")
        },
        "pandas-csv": [PY, "pandas_script.py", str(files["csv"]), *ckpts],
        "tutorial-slice": [PY, "tutorial.py", str(files["slice"]), *ckpts],
    }
    wanted = set(args.only.split(",")) if args.only else set(runs)
    got = interleaved({name: cmd for name, cmd in runs.items() if name in wanted}, args.repeat)
    for kind in ("csv", "parquet"):  # the limit: its fastest batch size and thread count
        tries = [r for name, r in got.items() if name.startswith(f"limit-{kind}-")]
        if tries:
            got[f"limit-{kind}"] = min(tries, key=lambda r: r["seconds"])
    if "tutorial-slice" in got:
        t = got["tutorial-slice"]
        t["seconds"] = t["seconds"] - t["loop"] + t["loop"] * scale
        t["cpu"] = t["cpu"] - t["loop"] + t["loop"] * scale  # the loop runs on one core
        print(
            f"{'tutorial (extrapolated)':<28} {t['seconds']:8.2f} s  = start-up and read of "
            f"the {SLICE:,}-row slice + its loop time x {scale:.1f}"
        )

    def ratio(a: str, b: str, label: str) -> None:
        if a in got and b in got:
            print(
                f"{label:<28} {got[a]['seconds'] / got[b]['seconds']:6.2f}x wall, "
                f"{got[a]['cpu'] / got[b]['cpu']:6.2f}x CPU"
            )

    print()
    ratio("evalloss-csv", "limit-csv", "evalloss / limit, CSV")
    ratio("evalloss-parquet", "limit-parquet", "evalloss / limit, Parquet")
    ratio("pandas-csv", "evalloss-csv", "pandas / evalloss")
    ratio("tutorial-slice", "evalloss-csv", "tutorial / evalloss")
    if "pandas-csv" in got and "evalloss-csv" in got:
        print(
            f"{'RSS evalloss / pandas':<28} "
            f"{got['evalloss-csv']['rss_mb'] / got['pandas-csv']['rss_mb']:6.2f}"
        )
    print(f"# load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
