"""Provenance in the report: file hashes, versions, device, threads; the progress bar on a TTY."""

from __future__ import annotations

import hashlib
import json
import platform
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import tqdm

import evalloss
from evalloss.cli import progress as cli
from tests.conftest import run

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "checkpoints"
CKPTS = [EXAMPLE / f"{n}.safetensors" for n in ("bs10", "bs50")]
ARGS = [*CKPTS, "--data", EXAMPLE / "train.csv"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_json_report_records_hashes_versions_device_threads() -> None:
    result = run("compare", *ARGS, "--format", "json", "--threads", "3")
    assert result.exit_code == 0, result.stderr
    prov = json.loads(result.stdout)["provenance"]
    assert prov["sha256"] == {str(p): _sha256(p) for p in [EXAMPLE / "train.csv", *CKPTS]}
    assert prov["evalloss"] == evalloss.__version__
    assert prov["python"] == platform.python_version()
    assert prov["torch"] == torch.__version__
    assert prov["device"] == "cpu" and prov["device_name"]
    assert prov["threads"] == 3  # the threads the run used (--threads)


def test_parquet_data_is_hashed_too(tmp_path: Path) -> None:
    rows = [line.split(",") for line in (EXAMPLE / "train.csv").read_text().splitlines()]
    columns = {name: [float(r[i]) for r in rows[1:]] for i, name in enumerate(rows[0])}
    columns["species"] = [int(v) for v in columns["species"]]
    data = tmp_path / "train.parquet"
    pq.write_table(pa.table(columns), data)
    report = evalloss.compare(CKPTS, data=data)
    assert report.provenance is not None and report.provenance.sha256 is not None
    assert report.provenance.sha256[str(data)] == _sha256(data)


def test_a_changed_checkpoint_changes_its_hash(tmp_path: Path) -> None:
    copy = tmp_path / "bs10.safetensors"
    shutil.copy(CKPTS[0], copy)
    before = evalloss.compare([copy], data=EXAMPLE / "train.csv")
    shutil.copy(CKPTS[1], copy)
    after = evalloss.compare([copy], data=EXAMPLE / "train.csv")
    assert before.provenance and after.provenance and before.provenance.sha256
    assert after.provenance.sha256
    assert before.provenance.sha256[str(copy)] != after.provenance.sha256[str(copy)]


def _recorded_bars(monkeypatch: pytest.MonkeyPatch) -> list[tqdm.tqdm]:  # type: ignore[type-arg]
    """Every progress bar the CLI makes from now on, in order."""
    bars: list[tqdm.tqdm] = []  # type: ignore[type-arg]

    class Bar(tqdm.tqdm):  # type: ignore[type-arg]
        def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(tqdm, "tqdm", Bar)
    return bars


def test_progress_bar_on_a_terminal_only(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    plain = run("compare", *ARGS)
    assert plain.exit_code == 0 and plain.stderr == ""  # not a terminal: quiet
    monkeypatch.setattr(cli, "_stderr_is_tty", lambda: True)
    monkeypatch.setenv("NO_COLOR", "1")
    bars = _recorded_bars(monkeypatch)
    shown = run("compare", *ARGS)
    assert shown.exit_code == 0
    assert shown.stdout == plain.stdout  # the bar never touches the report
    assert [b.n for b in bars] == [600]  # one bar for the pass, every row counted once
    assert "rows/s" in shown.stderr and shown.stderr.endswith("\r")  # erased when done
    assert "\x1b[3" not in shown.stderr  # no colour under NO_COLOR
    quiet = run("compare", *ARGS, "--no-progress")
    assert quiet.stderr == "" and quiet.stdout == plain.stdout
    monkeypatch.setenv("RANK", "1")  # a leftover RANK alone is one process: rank 0, drawn
    leftover = run("compare", *ARGS)
    assert leftover.exit_code == 0 and leftover.stdout == plain.stdout
    assert "rows/s" in leftover.stderr
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun: only rank 0 draws
    with cli.progress_bar(False) as update:
        assert update is None
    monkeypatch.setenv("RANK", "0")
    with cli.progress_bar(False) as update:
        assert update is not None


def test_no_hash_leaves_the_hashes_out_and_nothing_else() -> None:
    hashed = json.loads(run("compare", *ARGS, "--format", "json").stdout)
    bare = json.loads(run("compare", *ARGS, "--format", "json", "--no-hash").stdout)
    assert bare["provenance"]["sha256"] is None
    for document in (hashed, bare):
        for model in document["models"]:
            model.pop("seconds")
        document["provenance"].pop("sha256")
    assert hashed == bare


def test_explain_has_the_progress_bar_too(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(cli, "_stderr_is_tty", lambda: True)
    bars = _recorded_bars(monkeypatch)
    args = [CKPTS[0], "--data", EXAMPLE / "train.csv"]
    shown = run("explain", *args)
    assert shown.exit_code == 0, shown.stderr
    assert [b.n for b in bars] == [600]
    assert run("explain", *args, "--no-progress").stdout == shown.stdout


def test_csv_rows_carry_each_checkpoints_sha256_and_markdown_a_footer() -> None:
    rows = run("compare", *ARGS, "--format", "csv").stdout.splitlines()
    header = rows[0].split(",")
    assert header[-1] == "sha256"
    by_path = {r.split(",")[header.index("path")]: r.split(",")[-1] for r in rows[1:]}
    assert by_path == {str(p): _sha256(p) for p in CKPTS}
    assert (
        run("compare", *ARGS, "--format", "csv", "--no-hash").stdout.splitlines()[0].split(",")[-1]
        == "seconds"
    )
    markdown = run("compare", *ARGS, "--format", "markdown").stdout
    footer = markdown.rstrip().splitlines()[-1]
    assert footer.startswith("<sub>evalloss ") and footer.endswith("</sub>")
    assert f"data sha256 `{_sha256(EXAMPLE / 'train.csv')[:16]}`" in footer


def test_threads_is_what_the_run_used() -> None:
    before = torch.get_num_threads()
    result = run("compare", *ARGS, "--format", "json", "--threads", "1")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["provenance"]["threads"] == 1
    assert torch.get_num_threads() == before  # restored after the run
