"""An output that is a URI is refused with one exit-2 line before any work, never written as
the local path pathlib makes of it (``s3://b/r.json`` is ``s3:/b/r.json``, a file under a
folder ``s3:`` wherever one exists). The same for every output, the cache folder, the API and
the one atomic writer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import evalloss
from evalloss.io import files
from tests.conftest import run

URIS = ["s3://bucket/out.x", "gs://bucket/out.x", "file:///tmp/out.x", "hf://datasets/u/out.x"]


@pytest.fixture
def lookalike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A checkpoint and data, and in the working folder every folder a URI would become."""
    monkeypatch.chdir(tmp_path)
    for scheme in ("s3:", "gs:", "file:", "hf:"):
        (tmp_path / scheme / "bucket").mkdir(parents=True)
    (tmp_path / "hf:" / "datasets" / "u").mkdir(parents=True)
    checkpoint = tmp_path / "m.safetensors"
    evalloss.save(torch.nn.Sequential(torch.nn.Linear(1, 1)), checkpoint, loss="mse")
    data = tmp_path / "d.csv"
    data.write_text("a,y\n1,2\n3,5\n")
    return {"checkpoint": checkpoint, "data": data, "root": tmp_path}


def _written(root: Path) -> list[str]:
    """Every file under ``root`` but the inputs."""
    inputs = {"m.safetensors", "d.csv"}
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if not p.is_dir() and str(p.relative_to(root)) not in inputs)  # fmt: skip


@pytest.mark.parametrize("uri", URIS)
@pytest.mark.parametrize(
    ("option", "suffix"),
    [("-o", ".json"), ("--per-item", ".csv"), ("--plot", ".png"), ("--junit-xml", ".xml"),
     ("--cache", "")],
)  # fmt: skip
def test_an_output_uri_is_refused_before_any_work(
    lookalike: dict[str, Path], uri: str, option: str, suffix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    built = []
    monkeypatch.setattr("evalloss.run.plan.build", lambda *a: built.append(a))
    target = uri.replace(".x", suffix)
    result = run("compare", lookalike["checkpoint"], "--data", lookalike["data"], option, target)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    name = "--output" if option == "-o" else option
    assert result.stderr == f"evalloss: error: {target}: {name}: is a URI: " + (
        "the cache is a local folder\n" if option == "--cache" else
        "outputs are local files: write it to a local path and copy it (aws s3 cp, gcloud "
        "storage cp)\n"
    )  # fmt: skip
    assert result.stdout == "" and not built
    assert _written(lookalike["root"]) == []


def test_explain_and_cache_commands_refuse_a_uri(lookalike: dict[str, Path]) -> None:
    result = run("explain", lookalike["checkpoint"], "--data", lookalike["data"],
                 "-o", "s3://bucket/e.txt")  # fmt: skip
    assert result.exit_code == 2 and "s3://bucket/e.txt: --output: is a URI" in result.stderr
    for action in ("list", "clear"):
        result = run("cache", action, "--cache", "s3://bucket")
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "s3://bucket: --cache: is a URI" in result.stderr
    assert _written(lookalike["root"]) == []


def test_the_api_and_the_writer_refuse_a_uri(lookalike: dict[str, Path]) -> None:
    args = ([lookalike["checkpoint"]],)
    for keyword in ("per_item", "plot", "cache"):
        value = "s3://bucket/p.png" if keyword == "plot" else "s3://bucket/p.csv"
        with pytest.raises(evalloss.OptionError, match="is a URI"):
            evalloss.compare(*args, data=lookalike["data"], **{keyword: value})
    with pytest.raises(evalloss.OptionError, match="is a URI"):
        evalloss.save(torch.nn.Linear(1, 1), "s3://bucket/m.safetensors")
    with pytest.raises(evalloss.OptionError, match="is a URI"):
        files.write("text", "gs://bucket/r.json")
    assert _written(lookalike["root"]) == []


def test_local_paths_like_uris_are_still_written(lookalike: dict[str, Path]) -> None:
    """Only ``scheme://`` is a URI: ``s3:/bucket/r.json`` is a local path, as typed."""
    result = run("compare", lookalike["checkpoint"], "--data", lookalike["data"],
                 "-o", "s3:/bucket/r.json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert (lookalike["root"] / "s3:" / "bucket" / "r.json").is_file()
    assert os.fspath(Path("s3://bucket")) == "s3:/bucket"  # why a URI is checked as a string
