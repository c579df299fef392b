"""Benchmark data in object storage against the same file on disk (not a test).

    python benchmarks/bench_remote.py --rows 400000 --tokens 4000000 --repeat 3

A local S3 (moto's server, tests/s3server.py, in this process on 127.0.0.1) holds a CSV and a
Parquet file of ``--rows`` x 16 features, a ``.bin`` stream of ``--tokens`` uint16 tokens and
the checkpoints. Throughput: ``evalloss compare`` as a whole process (startup included), the
data and checkpoints from the bucket vs the same files on disk, interleaved, the median of
``--repeat``. Bytes per rank: the same three runs under torchrun with two processes, each
given its own port of the server, so every GET is counted per rank; with ``--no-hash`` (each
rank fetches its share) and without (rank 0 also streams the whole object once to hash it).
moto is a Python server on the same cores: its figures are not S3's, only the shape is.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from bench import interleaved  # noqa: E402

from tests.s3server import S3Server  # noqa: E402

PY = sys.executable
BUCKET = "bench-remote"
LM = str(HERE.parent / "tests" / "lm.py") + ":Causal"
FORMS = ("d.csv", "d.parquet", "s.bin")


def make(folder: Path, rows: int, tokens: int) -> dict[str, Path]:
    import torch
    from torch import nn

    import evalloss
    from tests import lm

    rng = np.random.default_rng(0)
    x = np.round(rng.standard_normal((rows, 16)), 6)
    columns = {f"f{i}": x[:, i] for i in range(16)} | {"y": rng.integers(0, 4, rows)}
    pacsv.write_csv(pa.table(columns), folder / "d.csv")
    pq.write_table(pa.table(columns), folder / "d.parquet", row_group_size=max(1, rows // 16))
    rng.integers(0, lm.VOCAB, tokens).astype(np.uint16).tofile(folder / "s.bin")
    torch.manual_seed(0)
    evalloss.save(nn.Sequential(nn.Linear(16, 4)), folder / "m.safetensors", loss="cross-entropy")
    evalloss.save(lm.Causal(), folder / "lm.safetensors", loss="causal-lm")
    return {p.name: p for p in folder.iterdir()}


def args_for(data: str, ckpt: str, *extra: str) -> list[str]:
    lm_args = ["--model", LM, "--context", "256"] if data.endswith(".bin") else []
    return ["compare", ckpt, "--data", data, *lm_args, "--format", "json", "--no-progress",
            *extra]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=400_000)
    parser.add_argument("--tokens", type=int, default=4_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=list(FORMS), choices=FORMS)
    opts = parser.parse_args()
    server = S3Server(("main", "rank0", "rank1")).start()
    env = {"AWS_ENDPOINT_URL": server.urls["main"], "AWS_ACCESS_KEY_ID": "bench",
           "AWS_SECRET_ACCESS_KEY": "bench", "AWS_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip
    os.environ.update(env)
    import boto3

    client = boto3.client("s3", endpoint_url=server.urls["main"])
    client.create_bucket(Bucket=BUCKET)
    with tempfile.TemporaryDirectory() as tmp:
        files = make(Path(tmp), opts.rows, opts.tokens)
        for name, path in files.items():
            client.upload_file(str(path), BUCKET, name)
        uri = {name: f"s3://{BUCKET}/{name}" for name in files}
        sizes = ", ".join(f"{n} {files[n].stat().st_size / 1e6:.1f} MB" for n in FORMS)
        print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; moto "
              f"server in this process; sizes: {sizes}")  # fmt: skip
        commands = {}
        for data in opts.only:
            ckpt = "lm.safetensors" if data == "s.bin" else "m.safetensors"
            cli = [PY, "-m", "evalloss"]
            commands[f"{data} disk"] = [*cli, *args_for(str(files[data]), str(files[ckpt]))]
            commands[f"{data} bucket"] = [*cli, *args_for(uri[data], uri[ckpt])]
        results = interleaved(commands, opts.repeat)
        for data in opts.only:
            disk, there = results[f"{data} disk"]["seconds"], results[f"{data} bucket"]["seconds"]
            size = files[data].stat().st_size / 1e6
            print(f"{data:<10} disk {size / disk:7.1f} MB/s   bucket {size / there:7.1f} MB/s"
                  f"   bucket/disk wall {there / disk:5.2f}x")  # fmt: skip
        for hashed in (False, True):
            ranks(server, files, uri, hashed, opts.only)
    server.stop()


def ranks(server: S3Server, files: dict[str, Path], uri: dict[str, str], hashed: bool,
          forms: list[str]) -> None:  # fmt: skip
    """Every object's bytes fetched by each of two torchrun ranks, as a share of its size."""
    cases = {}
    for data in forms:
        ckpt = "lm.safetensors" if data == "s.bin" else "m.safetensors"
        cases[data] = args_for(uri[data], uri[ckpt], *([] if hashed else ["--no-hash"]))
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "cases.json"
        spec.write_text(json.dumps(cases))
        server.requests.clear()
        endpoints = f"{server.urls['rank0']},{server.urls['rank1']}"
        done = subprocess.run(
            [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
             str(HERE.parent / "tests" / "torchrun_driver.py"), str(spec)],
            env={**os.environ, "EVALLOSS_TEST_ENDPOINTS": endpoints}, capture_output=True,
            text=True, check=False,
        )  # fmt: skip
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        for result in json.loads(Path(f"{spec}.0.out").read_text()).values():
            if result["code"] not in (None, 0):
                raise SystemExit(result["stderr"])
    print(f"torchrun, 2 ranks, {'hashed (rank 0 hashes the object)' if hashed else '--no-hash'}:")
    for data in forms:
        size, key = files[data].stat().st_size, f"/{BUCKET}/{data}"
        shares = [server.bytes_read(key, size, f"rank{r}") for r in (0, 1)]
        gets = [len(server.gets(key, f"rank{r}")) for r in (0, 1)]
        print(f"  {data:<10} rank 0: {shares[0] / size:6.3f} of {size / 1e6:.1f} MB in {gets[0]} "
              f"GETs   rank 1: {shares[1] / size:6.3f} in {gets[1]} GETs")  # fmt: skip


if __name__ == "__main__":
    main()
