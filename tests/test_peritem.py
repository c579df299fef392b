"""--per-item export (streamed, atomic), the plot's sample, the progress callback."""

from __future__ import annotations

import csv
import itertools
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import evalloss
from evalloss.run import export, observers
from tests import nets, oracles
from tests.conftest import NETS, data_set, run


def _setup(write_csv, save, rows: int = 53):  # type: ignore[no-untyped-def]
    x, y = data_set(rows)
    header = [f"f{i}" for i in range(x.shape[1])] + ["label"]
    path = write_csv([[*r, label] for r, label in zip(x.tolist(), y.tolist(), strict=True)], header)
    models = []
    for seed in range(2):
        torch.manual_seed(seed)
        models.append(nets.mlp())
    ckpts = [save(m, f"m{i}") for i, m in enumerate(models)]
    return x, y, path, models, ckpts


def _oracle(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """Each item's cross-entropy, float64, written out by hand (tests/oracles.py)."""
    with torch.no_grad():
        outputs = model.double()(x.double()).tolist()
    return [
        oracles.item_loss("cross-entropy", o, [t]) for o, t in zip(outputs, y.tolist(), strict=True)
    ]


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".tsv"])
def test_per_item_has_every_items_loss_under_every_model(write_csv, save, tmp_path, suffix) -> None:  # type: ignore[no-untyped-def]
    x, y, path, models, ckpts = _setup(write_csv, save)
    out = tmp_path / f"items{suffix}"
    result = run(
        "compare", *ckpts, "--data", path, "--loss", "cross-entropy",
        "--precision", "float64", "--batch-size", 7, "--per-item", out, "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    if suffix == ".parquet":
        table = pq.read_table(out).to_pydict()
    else:
        with open(out, newline="") as f:
            reader = csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ",")
            rows = list(reader)
        table = {k: [r[k] for r in rows] for k in rows[0]}
    assert list(table) == ["row", "label", "m0", "m1"]
    assert [int(v) for v in table["row"]] == list(range(53))
    assert [int(v) for v in table["label"]] == y.tolist()  # class labels stay integers
    report = evalloss.compare(ckpts, data=path, loss="cross-entropy", precision="float64")
    sums = {m.name: m.loss_sum for m in report.models}
    for i, model in enumerate(models):
        got = [float(v) for v in table[f"m{i}"]]
        assert got == pytest.approx(_oracle(model, x, y), rel=1e-12, abs=1e-15)
        assert math.fsum(got) == pytest.approx(sums[f"m{i}"], rel=1e-12)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask  # as any new file, not mkstemp's 0600


def test_export_streams_in_bounded_chunks(write_csv, save, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Small flushes give many row groups with the same content as one big write."""
    _, _, path, _, ckpts = _setup(write_csv, save, rows=100)
    args = {"data": path, "loss": "cross-entropy", "batch_size": 3}
    evalloss.compare(ckpts, per_item=tmp_path / "whole.parquet", **args)
    biggest = []
    original = export.Export._flush

    def spy(self):  # type: ignore[no-untyped-def]
        biggest.append(self._buffered)
        original(self)

    monkeypatch.setattr(export, "FLUSH_ROWS", 10)
    monkeypatch.setattr(export.Export, "_flush", spy)
    evalloss.compare(ckpts, per_item=tmp_path / "chunked.parquet", **args)
    assert max(biggest) <= 10 + 3  # never more than one flush size plus one batch held
    chunked = pq.ParquetFile(tmp_path / "chunked.parquet")
    assert chunked.metadata.num_row_groups >= 8
    assert chunked.read().equals(pq.read_table(tmp_path / "whole.parquet"))


def test_a_failed_pass_leaves_no_per_item_file(write_csv, save, tmp_path) -> None:  # type: ignore[no-untyped-def]
    rows = [[0.1 * i, 0.2, 0.3, i % 3] for i in range(40)] + [[0.1, 0.2, 0.3, 7]]
    path = write_csv(rows, ["a", "b", "c", "y"])
    out = tmp_path / "out" / "items.csv"
    out.parent.mkdir()
    result = run(
        "compare", save(nets.mlp()), "--data", path,
        "--loss", "cross-entropy", "--batch-size", 4, "--per-item", out,
    )  # fmt: skip
    assert result.exit_code == 2 and result.stdout == ""
    assert list(out.parent.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("items.xlsx", "must end in .parquet, .pq, .csv, .tsv"),
        ("nowhere/items.csv", "no such folder"),
    ],
)
def test_bad_per_item_path_is_exit_2_before_any_work(
    write_csv, save, tmp_path, name, message
) -> None:  # type: ignore[no-untyped-def]
    _, _, path, _, ckpts = _setup(write_csv, save)
    result = run(
        "compare", *ckpts, "--data", path, "--loss", "cross-entropy",
        "--per-item", tmp_path / name,
    )  # fmt: skip
    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "--per-item: " + message in result.stderr


def test_per_item_and_plot_are_refused_under_torchrun(
    write_csv, save, tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    _, _, path, _, ckpts = _setup(write_csv, save)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for option, name in (("--per-item", "i.csv"), ("--plot", "p.png")):
        result = run(
            "compare", *ckpts, "--data", path,
            "--loss", "cross-entropy", option, tmp_path / name,
        )  # fmt: skip
        assert result.exit_code == 2, result.stderr
        assert f"{option}: not supported under torchrun (WORLD_SIZE=2)" in result.stderr


def test_model_names_that_clash_with_columns_get_a_prefix() -> None:
    assert export.columns(["row", "y", "bs10"], ["y"]) == [
        "row",
        "y",
        "loss:row",
        "loss:y",
        "bs10",
    ]


def test_progress_is_fed_every_row_once(write_csv, save) -> None:  # type: ignore[no-untyped-def]
    _, _, path, _, ckpts = _setup(write_csv, save, rows=53)
    seen: list[int] = []
    evalloss.compare(
        ckpts, data=path, loss="cross-entropy", batch_size=5,
        progress=seen.append,
    )  # fmt: skip
    assert sum(seen) == 53  # once per pass, not once per model
    assert max(seen) <= 5


def _feed(sample: observers.Sample, rows: int, cuts: list[int], order: list[int]) -> None:
    bounds = sorted({0, rows, *(c % (rows + 1) for c in cuts)})
    blocks = list(itertools.pairwise(bounds))
    for i in order:
        if i < len(blocks):
            start, stop = blocks[i]
            r = torch.arange(start, stop, dtype=torch.float64)
            sample.add(start, [r, 2 * r + 1])
    for i in range(len(blocks)):
        if i not in order:
            start, stop = blocks[i]
            r = torch.arange(start, stop, dtype=torch.float64)
            sample.add(start, [r, 2 * r + 1])


@settings(derandomize=True, max_examples=40, deadline=None)
@given(
    st.integers(1, 300),
    st.integers(1, 120),
    st.lists(st.integers(0, 400), max_size=6),
    st.permutations(range(7)),
)
def test_the_plot_sample_is_bounded_paired_and_independent_of_chunking(
    rows: int, size: int, cuts: list[int], order: list[int]
) -> None:
    one = observers.Sample(2, size=size)
    _feed(one, rows, [], [0])
    other = observers.Sample(2, size=size)
    _feed(other, rows, cuts, list(order))
    a, b = one.values(), other.values()
    assert len(a) == min(rows, size) and one.seen == other.seen == rows
    assert sorted(a[:, 0]) == sorted(b[:, 0])  # the same items, however they arrived
    assert np.array_equal(b[:, 1], 2 * b[:, 0] + 1)  # each kept row is one item for all models
    assert len(set(a[:, 0].tolist())) == len(a)


@pytest.mark.parametrize("option", ["--per-item", "--plot", "-o"])
def test_no_output_may_replace_an_input(write_csv, save, tmp_path, option) -> None:  # type: ignore[no-untyped-def]
    """`--per-item train.csv` would eat the data; every output is checked before the run."""
    _, _, path, _, ckpts = _setup(write_csv, save)
    before = path.read_bytes()
    target = {"--per-item": path, "--plot": tmp_path / "m0.png", "-o": tmp_path / "i.csv"}
    args = ["compare", *ckpts, "--data", path, "--loss", "cross-entropy"]
    if option == "--plot":  # a checkpoint that happens to be named like a picture
        shutil.copy(ckpts[0], target["--plot"])
        args[1] = target["--plot"]
        result = run(*args, "--plot", target["--plot"])
    elif option == "-o":
        result = run(*args, "--per-item", target["-o"], "-o", target["-o"])
    else:
        result = run(*args, "--per-item", path)
    assert result.exit_code == 2 and result.stdout == "", result.stderr
    assert "refusing to overwrite it" in result.stderr and len(result.stderr.splitlines()) == 1
    assert path.read_bytes() == before


def test_the_model_file_is_an_input_too(write_csv, save, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, _, path, _, ckpts = _setup(write_csv, save)
    spec_file = tmp_path / "net.csv"  # a model file named like an export
    shutil.copy(NETS, spec_file)
    result = run(
        "compare", *ckpts, "--data", path, "--model", f"{spec_file}:mlp",
        "--loss", "cross-entropy", "--per-item", spec_file,
    )  # fmt: skip
    assert result.exit_code == 2 and "refusing to overwrite it" in result.stderr
    assert spec_file.read_text() == Path(NETS).read_text()


def test_a_failing_disk_is_an_exit_2_error_and_leaves_nothing(
    write_csv, save, tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    _, _, path, _, ckpts = _setup(write_csv, save, rows=30)
    out = tmp_path / "out"
    out.mkdir()

    def full(self, table):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export, "FLUSH_ROWS", 8)
    monkeypatch.setattr(pq.ParquetWriter, "write_table", full)
    result = run(
        "compare", *ckpts, "--data", path, "--loss", "cross-entropy",
        "--per-item", out / "items.parquet",
    )  # fmt: skip
    assert result.exit_code == 2 and result.stdout == ""
    assert "--per-item: cannot write ([Errno 28] No space left on device)" in result.stderr
    assert list(out.iterdir()) == []
