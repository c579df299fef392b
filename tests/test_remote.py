"""Data and checkpoints in object storage (s3://), against moto's S3 server on 127.0.0.1
(tests/s3server.py), never the network: the same report as the same files on disk, bytes
fetched by ranges, and every failure of the store one exit-2 line naming the URI."""

from __future__ import annotations

import json
import os
import struct
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import evalloss
from evalloss.io import remote
from evalloss.sources import objectstream
from tests import lm, nets
from tests.conftest import data_set, run
from tests.s3server import S3Server

BUCKET = "evalloss-test"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    """A local S3 with one bucket; AWS_ENDPOINT_URL and fake credentials in the environment."""
    server = S3Server(("main", "rank0", "rank1")).start()
    with pytest.MonkeyPatch.context() as env:
        for name, value in {
            "AWS_ENDPOINT_URL": server.urls["main"], "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_EC2_METADATA_DISABLED": "true",
            "AWS_REGION": "us-east-1", "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }.items():  # fmt: skip
            env.setenv(name, value)
        env.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        env.delenv("AWS_PROFILE", raising=False)
        client(server).create_bucket(Bucket=BUCKET)
        yield server
    server.stop()


def client(server: S3Server) -> Any:
    return boto3.client("s3", endpoint_url=server.urls["main"], region_name="us-east-1",
                        aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip


def upload(server: S3Server, path: Path, key: str | None = None) -> str:
    key = key or path.name
    client(server).upload_file(str(path), BUCKET, key)
    return f"s3://{BUCKET}/{key}"


def figures(report: dict[str, Any], uri_folder: str, folder: Path) -> str:
    """The report as JSON, the bucket's URIs named as the local files, timings left out."""
    text = json.dumps(report)
    report = json.loads(text.replace(uri_folder, str(folder)) if uri_folder else text)
    for model in report["models"]:
        model.pop("seconds", None)
    return json.dumps(report, sort_keys=True)


def tabular(tmp_path: Path) -> tuple[list[Path], Path, Path]:
    x, y = data_set(300)
    lines = ["a,b,c,y", *(f"{r[0]!r},{r[1]!r},{r[2]!r},{label}" for r, label in
                          zip(x.tolist(), y.tolist(), strict=True))]  # fmt: skip
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    columns = {"a": x[:, 0].numpy(), "b": x[:, 1].numpy(), "c": x[:, 2].numpy(), "y": y.numpy()}
    pq.write_table(pa.table(columns), tmp_path / "d.parquet", row_group_size=64)
    ckpts = []
    for seed in range(2):
        torch.manual_seed(seed)
        ckpts.append(tmp_path / f"m{seed}.safetensors")
        evalloss.save(nets.mlp(), ckpts[-1], loss="cross-entropy")
    return ckpts, tmp_path / "d.csv", tmp_path / "d.parquet"


def test_csv_parquet_and_checkpoints_from_the_bucket_give_the_local_report(
    s3: S3Server, tmp_path: Path
) -> None:
    ckpts, csv, parquet = tabular(tmp_path)
    remote_ckpts = [upload(s3, c, f"t1/{c.name}") for c in ckpts]
    for data in (csv, parquet):
        uri = upload(s3, data, f"t1/{data.name}")
        local = evalloss.compare(ckpts, data=data, baseline=ckpts[0]).to_dict()
        there = evalloss.compare(remote_ckpts, data=uri, baseline=remote_ckpts[0]).to_dict()
        assert figures(there, f"s3://{BUCKET}/t1", tmp_path) == figures(local, "", tmp_path)
        assert there["provenance"]["sha256"][uri] == local["provenance"]["sha256"][str(data)]
    # the CSV was hashed as its one range streamed by: no GET of it after the pass (the other
    # three: the header line, its end, its bytes for the hash, each one small read)
    assert len(s3.gets(f"/{BUCKET}/t1/d.csv")) == 4


def test_a_token_stream_from_the_bucket_in_many_ranged_reads(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(objectstream, "SPAN_BYTES", 64)  # many spans, each a ranged GET
    tokens = np.random.default_rng(0).integers(0, lm.VOCAB, size=1001).astype(np.uint16)
    tokens.tofile(tmp_path / "s.bin")
    torch.manual_seed(0)
    evalloss.save(lm.Causal(), tmp_path / "lm.safetensors", loss="causal-lm")
    uri = upload(s3, tmp_path / "s.bin", "t2/s.bin")
    ckpt = upload(s3, tmp_path / "lm.safetensors", "t2/lm.safetensors")
    model = f"{Path(lm.__file__)}:Causal"
    options = {"context": 8, "stride": 3, "batch_tokens": 16, "model": model}
    local = evalloss.compare([tmp_path / "lm.safetensors"], data=tmp_path / "s.bin", **options)
    there = evalloss.compare([ckpt], data=uri, **options)
    assert figures(there.to_dict(), f"s3://{BUCKET}/t2", tmp_path) == figures(
        local.to_dict(), "", tmp_path
    )
    gets = s3.gets(f"/{BUCKET}/t2/s.bin")
    assert len(gets) > 10 and all(g.range for g in gets)  # ranges, and hashed as they came
    assert s3.bytes_read(f"/{BUCKET}/t2/s.bin", 2002) < 2 * 2002


def test_the_result_cache_keys_an_object_by_its_bytes(s3: S3Server, tmp_path: Path) -> None:
    ckpts, csv, _ = tabular(tmp_path)
    uri = upload(s3, csv, "t3/d.csv")
    evalloss.compare(ckpts, data=csv, cache=tmp_path / "cache")
    before = len(s3.gets(f"/{BUCKET}/t3/d.csv"))
    cached = evalloss.compare(ckpts, data=uri, cache=tmp_path / "cache")  # the same bytes
    assert cached.models[0].loss_sum == evalloss.compare(ckpts, data=csv).models[0].loss_sum
    assert len(s3.gets(f"/{BUCKET}/t3/d.csv")) - before <= 3  # hashed, no rows parsed again


def _one_error_line(result: Any, uri: str, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and uri in lines[0] and "Traceback" not in result.stderr, lines
    for word in words:
        assert word in lines[0], lines[0]


def test_missing_bucket_and_missing_object_each_one_line(s3: S3Server, tmp_path: Path) -> None:
    ckpts, csv, _ = tabular(tmp_path)
    upload(s3, csv, "t4/d.csv")
    for uri, why in [("s3://no-such-bucket-22/d.csv", "no such bucket"),
                     (f"s3://{BUCKET}/t4/nothing.csv", "no such object"),
                     (f"s3://{BUCKET}/t4", "a folder")]:  # fmt: skip
        _one_error_line(run("compare", ckpts[0], "--data", uri), uri, why)
        _one_error_line(run("compare", uri, "--data", csv), uri, why)


def test_access_denied_is_one_line(s3: S3Server, tmp_path: Path) -> None:
    ckpts, csv, _ = tabular(tmp_path)
    uri = upload(s3, csv, "t5/d.csv")
    import requests

    # moto checks signatures from now on: the fake key is not an IAM user's (403)
    requests.post(f"{s3.urls['main']}/moto-api/reset-auth", data=b"0", timeout=10)
    try:
        _one_error_line(run("compare", ckpts[0], "--data", uri), uri, "access denied")
    finally:
        requests.post(f"{s3.urls['main']}/moto-api/reset-auth", data=b"inf", timeout=10)


def test_a_server_that_dies_mid_read_is_one_line(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpts, csv, _ = tabular(tmp_path)
    uri = upload(s3, csv, "t6/d.csv")
    dying = S3Server(("dying",)).start()  # the same objects, on its own port
    monkeypatch.setenv("AWS_ENDPOINT_URL", dying.urls["dying"])
    dying.die_on(f"/{BUCKET}/t6/d.csv")
    _one_error_line(run("compare", ckpts[0], "--data", uri), uri, "storage server")


def test_transient_errors_are_retried(s3: S3Server, tmp_path: Path) -> None:
    ckpts, csv, _ = tabular(tmp_path)
    uri = upload(s3, csv, "t10/d.csv")
    s3.flaky(f"/{BUCKET}/t10/d.csv", 2)  # two 503s: the retry strategy gets past them
    result = run("compare", ckpts[0], "--data", uri, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["models"][0]["loss_sum"] == pytest.approx(
        evalloss.compare([ckpts[0]], data=csv).models[0].loss_sum, rel=1e-12
    )
    assert s3._flaky[f"/{BUCKET}/t10/d.csv"] == 0


def test_an_object_that_changes_during_the_run_is_refused(s3: S3Server, tmp_path: Path) -> None:
    ckpts, csv, _ = tabular(tmp_path)
    uri = upload(s3, csv, "t7/d.csv")
    from evalloss.sources import chunks

    real = chunks.ranges

    def rewritten(*args: Any, **kwargs: Any) -> Any:  # the object is rewritten mid-pass
        client(s3).put_object(Bucket=BUCKET, Key="t7/d.csv", Body=csv.read_bytes() + b"1,2,3,0\n")
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(chunks, "ranges", rewritten)
        result = run("compare", ckpts[0], "--data", uri)
    _one_error_line(result, uri, "changed while it was being read")


def test_a_checkpoint_rewritten_after_its_header_was_read_is_refused(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpts, csv, _ = tabular(tmp_path)
    uri = upload(s3, ckpts[0], "t11/m.safetensors")
    from evalloss.models import staging

    real = staging.staged

    def rewritten(*args: Any) -> Any:  # the same header, other weights, before the download
        client(s3).put_object(Bucket=BUCKET, Key="t11/m.safetensors", Body=ckpts[1].read_bytes())
        return real(*args)

    monkeypatch.setattr(staging, "staged", rewritten)
    _one_error_line(run("compare", uri, "--data", csv), uri, "changed while it was being read")


def test_a_hostile_header_is_refused_before_any_tensor_is_fetched(
    s3: S3Server, tmp_path: Path
) -> None:
    offsets = [8, (1 << 22) + 8]  # a gap of 8 bytes before the tensor: the library refuses it
    header = json.dumps({"w": {"dtype": "F32", "shape": [1 << 20], "data_offsets": offsets}})
    raw = header.encode()
    body = struct.pack("<Q", len(raw)) + raw + bytes(1 << 22)
    path = tmp_path / "bad.safetensors"
    path.write_bytes(body)
    uri = upload(s3, path, "t8/bad.safetensors")
    _, csv, _ = tabular(tmp_path)
    _one_error_line(run("compare", uri, "--data", csv), uri, "a gap of 8 bytes")
    assert s3.bytes_read(f"/{BUCKET}/t8/bad.safetensors", len(body)) == 8 + len(raw)


def test_forms_not_read_in_place_are_refused_by_name(s3: S3Server, tmp_path: Path) -> None:
    ckpts, _, _ = tabular(tmp_path)
    x, y = data_set(10)
    np.savez(tmp_path / "d.npz", inputs=x.numpy(), targets=y.numpy())
    npz = upload(s3, tmp_path / "d.npz", "t9/d.npz")
    _one_error_line(run("compare", ckpts[0], "--data", npz), npz, "copy it to a local disk")
    spec = f"s3://{BUCKET}/t9/code.py:Data"
    _one_error_line(run("compare", ckpts[0], "--data", spec), spec, "never read from object")
    other = "nosuchscheme22://bucket/d.csv"
    _one_error_line(run("compare", ckpts[0], "--data", other), other, "nosuchscheme22://")
    assert remote.is_uri("s3://b/k") and not remote.is_uri("/data/s3:/k")


def test_any_fsspec_filesystem_reads_as_a_disk(tmp_path: Path) -> None:
    import fsspec

    ckpts, csv, parquet = tabular(tmp_path)
    memory = fsspec.filesystem("memory")
    for data in (csv, parquet):
        memory.pipe(f"/evalloss22/{data.name}", data.read_bytes())
        there = evalloss.compare(ckpts, data=f"memory://evalloss22/{data.name}").to_dict()
        local = evalloss.compare(ckpts, data=data).to_dict()
        assert figures(there, "memory://evalloss22", tmp_path) == figures(local, "", tmp_path)


def test_a_missing_package_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpts, _, _ = tabular(tmp_path)
    monkeypatch.setitem(sys.modules, "fsspec", None)  # not installed
    uri = "hf://datasets/someone/data/d.csv"
    _one_error_line(run("compare", ckpts[0], "--data", uri), uri, "pip install 'evalloss[hf]'")
