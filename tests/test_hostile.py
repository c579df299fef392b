"""Hostile input and faults: the right exit code, one clear line, never a half-written report.

Output safety (atomic -o, refusals before any evaluation), signals and a closed pipe (real
subprocesses), model faults (tests/faulty.py), and data edge cases.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import evalloss
from evalloss import render
from tests import faulty
from tests.conftest import run

ROOT = Path(__file__).resolve().parents[1]
FAULTY = str(Path(faulty.__file__).resolve())
DATA = "a,b,c,y\n1,2,3,0\n4,5,6,1\n7,8,9,2\n"
OLD = "the old report\n"


def spec(name: str) -> str:
    return f"{FAULTY}:{name}"


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    """A Linear(3, 3) checkpoint that fits every model in tests/faulty.py."""
    torch.manual_seed(0)
    path = tmp_path / "m.safetensors"
    evalloss.save(faulty.Tuple(), path, loss="cross-entropy")
    return path


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "data.csv"
    path.write_text(DATA)
    return path


def one_error(result) -> str:  # type: ignore[no-untyped-def]
    """The one stderr line of a failed run (exit 2, nothing on stdout, no traceback)."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return str(lines[0])


def leftovers(folder: Path) -> list[str]:
    """Temporary or probe files evalloss might have left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".tmp", ".probe")))


# -- output safety -------------------------------------------------------------------------


def test_output_is_written_whole_with_normal_permissions(ckpt, data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "report.json"
    result = run("compare", ckpt, "--data", data, "--model", spec("Tuple"), "-o", out)
    assert result.exit_code == 2  # Tuple is a faulty model: nothing written
    assert not out.exists() and leftovers(tmp_path) == []
    args = ("compare", ckpt, "--data", data, "--model", spec("Fine"))
    result = run(*args, "--format", "json", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""
    assert json.loads(out.read_text())["data"]["items"] == 3
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    assert leftovers(tmp_path) == []


def test_replacing_a_report_keeps_its_permissions(ckpt, data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "report.csv"
    out.write_text(OLD)
    out.chmod(0o640)
    args = ("compare", ckpt, "--data", data, "--model", spec("Fine"))
    result = run(*args, "--format", "csv", "-o", out)
    assert result.exit_code == 0, result.stderr
    assert out.read_text().startswith("rank,name,")
    assert out.stat().st_mode & 0o777 == 0o640


def test_a_failed_run_leaves_the_old_report(ckpt, data, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "report.json"
    out.write_text(OLD)
    line = one_error(run("compare", ckpt, "--data", data, "--model", spec("Raises"), "-o", out))
    assert "forward failed" in line
    assert out.read_text() == OLD
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("fault", [KeyboardInterrupt(), OSError(28, "No space left on device")])
def test_write_interrupted_before_the_rename_leaves_the_old_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: BaseException
) -> None:
    out = tmp_path / "report.txt"
    out.write_text(OLD)

    def broken_fsync(fd: int) -> None:
        raise fault

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(type(fault)):
        render.write("the new report\n" * 1000, out)
    assert out.read_text() == OLD
    assert leftovers(tmp_path) == []


def _refused(ckpt: Path, data: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run with a model that marks its first forward: the refusal must come before it."""
    marker = out.parent / "forward-ran" if out.parent.is_dir() else ckpt.parent / "forward-ran"
    monkeypatch.setenv("EVALLOSS_TEST_STARTED", str(marker))
    monkeypatch.setenv("EVALLOSS_TEST_SLEEP", "0")
    line = one_error(run("compare", ckpt, "--data", data, "--model", spec("Sleepy"), "-o", out))
    assert not marker.exists(), "evaluation started before the output was checked"
    return line


def test_missing_output_folder_is_refused_before_evaluation(
    ckpt: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "no" / "such" / "report.json"
    line = _refused(ckpt, data, out, monkeypatch)
    assert line == f"evalloss: error: {out}: output folder '{out.parent}' does not exist"


def test_output_folder_that_is_a_file_is_refused(
    ckpt: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = data / "report.json"
    line = _refused(ckpt, data, out, monkeypatch)
    assert line == f"evalloss: error: {out}: output folder '{data}' is not a folder"


def test_output_that_is_a_folder_is_refused(
    ckpt: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    line = _refused(ckpt, data, tmp_path, monkeypatch)
    assert str(tmp_path) in line and "is a directory" in line  # click's own check comes first
    with pytest.raises(evalloss.EvallossError, match="is a folder; --output needs a file path"):
        render.check_output(tmp_path)  # the library's, for API callers


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write to a read-only folder")
def test_unwritable_output_folder_is_refused(
    ckpt: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        line = _refused(ckpt, data, folder / "report.json", monkeypatch)
    finally:
        folder.chmod(0o755)
    assert "cannot write to output folder" in line and "Permission denied" in line


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_output_folder_where_no_file_can_be_made_is_refused(
    ckpt: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/proc refuses new files even to root: the probe write, not a permission guess, decides."""
    line = _refused(ckpt, data, Path("/proc/report.json"), monkeypatch)
    assert line.startswith(
        "evalloss: error: /proc/report.json: cannot write to output folder '/proc'"
    )


@pytest.mark.parametrize("which", ["data", "checkpoint", "model file", "relative", "symlink"])
def test_output_that_is_an_input_is_refused(
    ckpt: Path,
    data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    which: str,
) -> None:
    model_file = tmp_path / "faulty_copy.py"
    model_file.write_text(Path(FAULTY).read_text())
    link = tmp_path / "link.csv"
    link.symlink_to(data)
    monkeypatch.chdir(tmp_path)
    out = {
        "data": data,
        "checkpoint": ckpt,
        "model file": model_file,
        "relative": Path("sub") / ".." / "data.csv",
        "symlink": link,
    }[which]
    (tmp_path / "sub").mkdir()
    before = {p: p.read_bytes() for p in (data, ckpt, model_file)}
    marker = tmp_path / "forward-ran"
    monkeypatch.setenv("EVALLOSS_TEST_STARTED", str(marker))
    monkeypatch.setenv("EVALLOSS_TEST_SLEEP", "0")
    line = one_error(
        run("compare", ckpt, "--data", data, "--model", f"{model_file}:Sleepy", "-o", out)
    )
    assert line.startswith(f"evalloss: error: {out}: --output is one of the inputs (")
    assert line.endswith("); refusing to overwrite it")
    assert not marker.exists()
    assert {p: p.read_bytes() for p in before} == before


def test_check_output_is_library_code_for_api_callers(tmp_path: Path, data: Path) -> None:
    render.check_output(None, [data])  # stdout: nothing to check
    render.check_output(tmp_path / "new.json", [data, None])
    with pytest.raises(evalloss.EvallossError) as info:
        render.check_output(data, [data])
    assert info.value.exit_code == 2


# -- signals and a closed pipe: real processes ---------------------------------------------


def _cli(*args: object, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "evalloss", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
    )


@pytest.mark.parametrize(
    ("sig", "code", "line"),
    [
        (signal.SIGINT, 130, "evalloss: error: interrupted (SIGINT); no report written"),
        (signal.SIGTERM, 143, "evalloss: error: terminated (SIGTERM); no report written"),
    ],
)
def test_signal_mid_run_exits_with_its_code_and_leaves_the_old_report(
    ckpt: Path, data: Path, tmp_path: Path, sig: signal.Signals, code: int, line: str
) -> None:
    out = tmp_path / "report.json"
    out.write_text(OLD)
    marker = tmp_path / "forward-ran"
    args = ("compare", ckpt, "--data", data, "--model", spec("Sleepy"), "-o", out)
    proc = _cli(*args, EVALLOSS_TEST_STARTED=str(marker), EVALLOSS_TEST_SLEEP="120")
    deadline = time.monotonic() + 120
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run never reached forward: {proc.communicate()}")
        time.sleep(0.05)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code
    assert stdout == ""
    assert stderr.splitlines() == [line]
    assert out.read_text() == OLD
    assert leftovers(tmp_path) == []


def test_closed_stdout_exits_141_quietly(ckpt: Path, data: Path) -> None:
    """`evalloss compare ... | head -0`: the reader is gone before the report is printed."""
    proc = _cli("compare", ckpt, "--data", data, "--model", spec("Fine"))
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the pipe's only reader: every write now fails with EPIPE
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141
    assert stderr == ""


def test_shell_pipe_into_head(ckpt: Path, data: Path, tmp_path: Path) -> None:
    """The real thing through a shell: `| head -1` prints the first line, nothing on stderr."""
    script = tmp_path / "pipe.sh"
    script.write_text(
        f'"{sys.executable}" -m evalloss compare "{ckpt}" --data "{data}" '
        f'--model "{spec("Fine")}" | head -1\n'
    )
    done = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, cwd=ROOT, timeout=120, check=False
    )
    assert done.returncode == 0
    assert done.stdout.startswith("cross-entropy loss per item over 3 items of ")
    assert done.stderr == ""
