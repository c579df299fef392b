"""Faults under a run (issue 15, class 8): files that change while they are read, processes
that disagree on what they read. A changed input is an exit-2 line, never a mixed figure."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import evalloss
from evalloss.models import open_checkpoint
from evalloss.models.checkpoint import load_tensors
from evalloss.options import Options
from evalloss.run import distributed, onepass
from evalloss.sources import open_data
from tests.conftest import run as cli

FAULTY = str(Path(__file__).parent / "faulty.py")


def _data(tmp_path: Path, rows: int = 40) -> Path:
    path = tmp_path / "d.csv"
    path.write_text("a,b,c,y\n" + "".join(f"{i % 7},{i % 5},{i % 3},{i % 3}\n" for i in range(rows)))
    return path


def test_a_data_file_rewritten_during_the_run_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _data(tmp_path)
    ckpt = tmp_path / "m.safetensors"
    torch.manual_seed(0)
    evalloss.save(torch.nn.Linear(3, 3), ckpt, loss="cross-entropy")
    renamed = tmp_path / "m2.safetensors"
    from safetensors.torch import load_file, save_file

    save_file({f"linear.{k}": v for k, v in load_file(ckpt).items()}, renamed,
              metadata={"evalloss.loss": "cross-entropy"})  # fmt: skip
    monkeypatch.setenv("EVALLOSS_TEST_DATA", str(data))
    out = tmp_path / "report.json"
    result = cli("compare", renamed, "--data", data, "--model", f"{FAULTY}:RewritesTheData",
                 "-o", out)  # fmt: skip
    assert result.exit_code == 2, result.stderr
    assert result.stderr == (
        f"evalloss: error: {data}: changed while it was being read (its size or modification "
        "time): the figures would match neither version; run again on a file that stays put\n"
    )
    assert not out.exists()


def test_a_checkpoint_replaced_between_header_and_tensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    evalloss.save(torch.nn.Linear(3, 3), path)
    checkpoint = open_checkpoint(path)
    evalloss.save(torch.nn.Sequential(torch.nn.Linear(3, 3)), path)  # another file, same name
    os.utime(path, ns=(1, 1))  # whatever the clock's resolution: another modification time
    with pytest.raises(evalloss.CheckpointError, match="changed while it was being read"):
        load_tensors(checkpoint)


class _World(distributed.World):
    """Two processes' worth of answers, without processes: rank 1 saw ``other``."""

    def __init__(self, other: tuple[int, int]) -> None:
        super().__init__(rank=0, size=2)
        self.other = other

    def gather(self, value: object) -> list[object]:
        return [value, self.other]


def test_processes_that_read_different_files_are_refused(tmp_path: Path) -> None:
    source = open_data(_data(tmp_path), Options.of(data=tmp_path / "d.csv"))
    size, mtime = source.stamp()
    assert onepass._changed(source, _World((size, mtime))) is None
    error = onepass._changed(source, _World((size + 7, mtime)))
    assert error is not None and "different files" in str(error)
    assert f"rank 0: {size} bytes, rank 1: {size + 7} bytes" in str(error)
