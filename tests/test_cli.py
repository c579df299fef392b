"""The command line: output, exit codes, one-line errors, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import evalloss
from evalloss import api
from tests import nets
from tests.conftest import NETS, net, run

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "checkpoints"
CKPTS = [EXAMPLE / f"{n}.safetensors" for n in ("bs10", "bs50", "barely")]


def _bare(module: torch.nn.Module, tmp_path: Path) -> Path:
    """A checkpoint with no evalloss metadata: only --model can build it."""
    path = tmp_path / "bare.safetensors"
    save_file(module.state_dict(), str(path))
    return path


def test_example_table() -> None:
    result = run("compare", *CKPTS, "--data", EXAMPLE / "train.csv")  # no --model, no --loss
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    title, table = result.stdout.split("\n\n")
    # the absolute path does not fit one 80-column line: the title breaks before it
    assert title == f"cross-entropy loss per item over 600 items (float32, cpu)\nof {EXAMPLE / 'train.csv'}"
    lines = table.splitlines()
    assert lines[0].split() == ["rank", "model", "loss/item", "loss", "sum", "items", "accuracy"]
    assert [line.split()[1] for line in lines[2:]] == ["bs10", "bs50", "barely"]


def test_json_report_is_strict_sorted_and_matches_the_api() -> None:
    args = [*CKPTS, "--data", EXAMPLE / "train.csv"]
    result = run("compare", *args, "--format", "json")
    assert result.exit_code == 0
    document = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"token {c}"))
    assert list(document) == sorted(document)
    assert document["world_size"] == 1 and document["gate"] is None
    assert "vs_baseline" not in document["models"][0]
    report = evalloss.compare(CKPTS, data=EXAMPLE / "train.csv")
    assert [m["loss_sum"] for m in document["models"]] == [m.loss_sum for m in report.models]
    assert document["models"][0]["path"] == str(CKPTS[0])


def test_output_file_and_csv_format(tmp_path: Path) -> None:
    out = tmp_path / "report.csv"
    result = run(
        "compare",
        *CKPTS,
        "--data",
        EXAMPLE / "train.csv",
        "--format",
        "csv",
        "-o",
        out,
    )
    assert result.exit_code == 0 and result.stdout == ""
    rows = out.read_text().splitlines()
    assert rows[0].startswith("rank,name,path,loss_per_item,loss_sum")
    assert len(rows) == 4


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nowhere.py:Net", "error: nowhere.py: --model: no such file"),
        (f"{NETS}:Missing", "defines no 'Missing'"),
        (f"{NETS}:not_a_module", "not_a_module returned int, not an nn.Module"),
        ("no_such_package_xyz.models:Net", "no module named 'no_such_package_xyz'"),
        ("justaname", "expected path/to/file.py:Name or package.module:Name"),
    ],
)
def test_bad_model_spec_is_exit_2(write_csv, tmp_path: Path, spec: str, message: str) -> None:  # type: ignore[no-untyped-def]
    path = write_csv([[1, 2, 3, 0]], ["a", "b", "c", "y"])
    ckpt = _bare(nets.mlp(), tmp_path)
    result = run("compare", ckpt, "--data", path, "--model", spec, "--loss", "cross-entropy")
    assert result.exit_code == 2
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr


def test_model_kwargs(write_csv, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = write_csv([[1, 2, 0]], ["a", "b", "y"])
    ckpt = _bare(nets.mlp(features=2, hidden=5), tmp_path)  # no spec: --model builds it
    args = ["compare", ckpt, "--data", path, "--model", net("mlp"), "--loss", "cross-entropy"]
    ok = run(*args, "--model-kwargs", '{"features": 2, "hidden": 5}')
    assert ok.exit_code == 0, ok.stderr
    bad = run(*args, "--model-kwargs", "{nope")
    assert bad.exit_code == 2 and "--model-kwargs: not valid JSON" in bad.stderr


def test_strict_load_names_every_bad_key_and_both_shapes(write_csv, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = write_csv([[1, 2, 3, 0]], ["a", "b", "c", "y"])
    ckpt = _bare(
        torch.nn.Sequential(
            torch.nn.Linear(3, 9), torch.nn.Tanh(), torch.nn.Linear(9, 3), torch.nn.Linear(3, 3)
        ),
        tmp_path,
    )
    result = run("compare", ckpt, "--data", path, "--model", net("mlp"), "--loss", "cross-entropy")
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "unexpected keys: 3.bias, 3.weight" in line
    assert "0.weight (checkpoint (9, 3), model (8, 3))" in line
    assert "2.weight (checkpoint (3, 9), model (3, 8))" in line


def test_no_loss_anywhere_is_exit_2(save, write_csv) -> None:  # type: ignore[no-untyped-def]
    path = write_csv([[1, 2, 3, 0]], ["a", "b", "c", "y"])
    result = run("compare", save(nets.mlp()), "--data", path)
    assert result.exit_code == 2
    assert "--loss: no --loss given and no checkpoint has evalloss.loss metadata" in result.stderr


def test_usage_error_is_exit_2_on_one_line() -> None:
    result = run("compare", "--data", "x.csv")
    assert result.exit_code == 2
    assert result.stderr.startswith("evalloss: error: ") and len(result.stderr.splitlines()) == 1


def test_internal_error_is_exit_3_with_traceback(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def boom(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(api, "compare", boom)
    result = run("compare", CKPTS[0], "--data", EXAMPLE / "train.csv")
    assert result.exit_code == 3
    assert "Traceback" in result.stderr and "please report" in result.stderr


def test_version_and_module_entry_point() -> None:
    assert run("--version").stdout.strip() == f"evalloss, version {evalloss.__version__}"
    proc = subprocess.run(
        [sys.executable, "-m", "evalloss", "--version"], capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == f"evalloss, version {evalloss.__version__}"


@pytest.mark.parametrize(
    "args",
    [
        ["-c", "import evalloss"],
        ["-m", "evalloss", "--help"],
        ["-m", "evalloss", "compare", "--help"],
    ],
)
def test_import_and_help_load_no_heavy_module(args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", *args], capture_output=True, text=True, check=True
    )
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if "|" in line
    }
    assert "evalloss" in imported or args[0] == "-c"
    assert not imported & {
        "torch",
        "pyarrow",
        "numpy",
        "scipy",
        "safetensors",
        "tabulate",
        "tqdm",
        "matplotlib",
        "jsonschema",
        "mlflow",
        "transformers",
        "lightning",
        "peft",
        "accelerate",
    }
