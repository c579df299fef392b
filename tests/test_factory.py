"""--data file.py:Name and package.module:Name: the user's own Dataset, read through a
DataLoader, gives the figures of the same items as a tensor file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import evalloss
from evalloss.options import Options
from evalloss.sources import factory, open_data
from tests.conftest import run
from tests.datasets import images

DATASETS = str(Path(__file__).parent / "datasets.py")


@pytest.fixture
def ckpt(save) -> Path:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return save(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), loss="cross-entropy")


@pytest.fixture
def truth(tmp_path: Path, ckpt: Path) -> evalloss.Report:
    x, y = images()
    np.savez(tmp_path / "d.npz", inputs=x.numpy(), targets=y.numpy())
    return evalloss.compare([ckpt], data=tmp_path / "d.npz", precision="float64")


@pytest.mark.parametrize(
    ("spec", "workers"),
    [
        (f"{DATASETS}:digits", 0),
        (f"{DATASETS}:digits", 2),
        ("tests.datasets:digits", 0),
        (f"{DATASETS}:stream", None),
    ],
)
def test_a_dataset_gives_the_figures_of_the_same_items(
    ckpt: Path, truth: evalloss.Report, spec: str, workers: int | None
) -> None:
    report = evalloss.compare([ckpt], data=spec, precision="float64", batch_size=5,
                              workers=workers)  # fmt: skip
    got, want = report.models[0], truth.models[0]
    assert got.items == want.items == 23
    assert got.loss_sum == pytest.approx(want.loss_sum, rel=1e-12)
    assert got.accuracy == want.accuracy
    assert report.data.path == spec


def test_the_cli_takes_a_factory(ckpt: Path, truth: evalloss.Report) -> None:
    result = run("compare", ckpt, "--data", f"{DATASETS}:digits", "--workers", "0",
                 "--precision", "float64", "--format", "csv")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert repr(truth.models[0].loss_sum)[:10] in result.stdout


def test_blocks_are_whole_batches_and_shares_cover_every_item(ckpt: Path) -> None:
    source = open_data(f"{DATASETS}:digits", Options(data="x", workers=0))
    assert source.item_shape == (1, 8, 8)
    sized = source.for_pass(4, torch.device("cpu"))
    assert [len(b) for b in sized.blocks(torch.float32)] == [4, 4, 4, 4, 4, 3]
    rows = [b.row + i for r in range(2) for b in sized.blocks(torch.float32, rank=r, world=2)
            for i in range(len(b))]  # fmt: skip
    assert rows == list(range(23))
    stream = open_data(f"{DATASETS}:stream", Options(data="x")).for_pass(4, torch.device("cpu"))
    kept = [b.row for r in range(2) for b in stream.blocks(torch.float32, rank=r, world=2)]
    assert sorted(kept) == [0, 4, 8, 12, 16, 20]


def test_default_workers_leave_a_core_for_the_models() -> None:
    import os

    cores = len(os.sched_getaffinity(0))
    assert factory.default_workers() == max(0, min(factory.MAX_DEFAULT_WORKERS, cores - 2))


def test_a_file_with_a_colon_in_its_name_is_a_file(tmp_path: Path, ckpt: Path) -> None:
    """An existing file is data, whatever its name looks like."""
    odd = tmp_path / "d.py:Name"
    odd.write_text("a,b\n1,2\n")
    assert not factory.accepts(str(odd), Options(data=str(odd)))
    assert factory.accepts(f"{tmp_path}/d.py:Name2", Options(data="x"))
    assert open_data(odd, Options(data=str(odd), target=("b",))).path == str(odd)


def test_the_readme_digits_example_is_live(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's image example runs as written and says what the README says."""
    root = Path(__file__).parents[1]
    monkeypatch.chdir(root)
    section = (root / "README.md").read_text().split("## Images, masks and your own Dataset", 1)[1]
    command = next(line.strip() for line in section.splitlines() if "evalloss compare" in line)
    result = run(*command.split()[1:], "--format", "json")
    assert result.exit_code == 0, result.stderr
    import json

    models = {m["name"]: m for m in json.loads(result.stdout)["models"]}
    assert [models["bs8"]["rank"], models["bs256"]["rank"]] == [1, 2]
    for name in ("bs8", "bs256"):
        assert f"{models[name]['loss_per_item']:.3f}" in section
    log = json.loads((root / "checkpoints" / "digits" / "training_log.json").read_text())
    assert all(f"{run['epoch_loss']:.2f}" in section for run in log.values())


def test_provenance_hashes_the_checkpoints_and_the_factory_code(ckpt: Path) -> None:
    import hashlib

    report = evalloss.compare([ckpt], data=f"{DATASETS}:digits", workers=0)
    assert report.provenance is not None and report.provenance.sha256 is not None
    hashes = report.provenance.sha256
    assert hashes[DATASETS] == hashlib.sha256(Path(DATASETS).read_bytes()).hexdigest()
    assert hashes[str(ckpt)] == hashlib.sha256(ckpt.read_bytes()).hexdigest()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu_for_tensor_files_and_datasets(tmp_path: Path, ckpt: Path) -> None:
    """uint8 batches converted on the GPU, a Dataset's batches pinned and copied without
    blocking: the figures of the CPU."""
    x, y = images()
    np.savez(tmp_path / "d.npz", inputs=x.numpy(), targets=y.numpy())
    source = open_data(f"{DATASETS}:digits", Options(data="x", workers=1))
    assert source.for_pass(8, torch.device("cuda")).pin  # type: ignore[attr-defined]
    for data, workers in ((tmp_path / "d.npz", None), (f"{DATASETS}:digits", 1)):
        figures = [
            evalloss.compare([ckpt], data=data, device=device, precision="float64",
                             batch_size=8, workers=workers).models[0]
            for device in ("cpu", "cuda")
        ]  # fmt: skip
        assert figures[0].items == figures[1].items == 23
        assert figures[1].loss_sum == pytest.approx(figures[0].loss_sum, rel=1e-12)
        assert figures[1].accuracy == figures[0].accuracy
