"""Hostile input and faults: the right exit code, one clear line, never a half-written report.

Output safety (atomic -o, refusals before any evaluation), signals and a closed pipe (real
subprocesses), model faults (tests/faulty.py), and data edge cases.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import evalloss
from evalloss.io import files as output
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


def test_output_through_a_symlink_updates_the_file_it_points_to(
    ckpt: Path, data: Path, tmp_path: Path
) -> None:
    real = tmp_path / "reports" / "2026.json"
    real.parent.mkdir()
    real.write_text(OLD)
    link = tmp_path / "latest.json"
    link.symlink_to(real)
    args = ("compare", ckpt, "--data", data, "--model", spec("Fine"), "--format", "json")
    result = run(*args, "-o", link)
    assert result.exit_code == 0, result.stderr
    assert link.is_symlink() and link.resolve() == real
    assert json.loads(real.read_text())["data"]["items"] == 3
    assert leftovers(tmp_path) == [] and leftovers(real.parent) == []


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_output_to_a_fifo_is_written_in_place(ckpt: Path, data: Path, tmp_path: Path) -> None:
    """Like -o /dev/stdout: no rename over a device or FIFO, just the text written to it."""
    import threading

    fifo = tmp_path / "report.fifo"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    args = ("compare", ckpt, "--data", data, "--model", spec("Fine"), "--format", "csv")
    result = run(*args, "-o", fifo)
    reader.join(timeout=60)
    assert result.exit_code == 0, result.stderr
    assert got and got[0].startswith("rank,name,")
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert leftovers(tmp_path) == []


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
    expected = evalloss.EvallossError if isinstance(fault, OSError) else type(fault)
    with pytest.raises(expected):
        output.write("the new report\n" * 1000, out)
    assert out.read_text() == OLD
    assert leftovers(tmp_path) == []


def test_a_full_disk_at_the_end_is_one_line_and_exit_2(
    ckpt: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    out = tmp_path / "report.json"
    out.write_text(OLD)
    line = one_error(run("compare", ckpt, "--data", data, "--model", spec("Fine"), "-o", out))
    assert line == (
        f"evalloss: error: {out}: --output: cannot write it (No space left on device); "
        "no report written"
    )
    assert out.read_text() == OLD and leftovers(tmp_path) == []


def test_stdout_that_fails_is_one_line_and_exit_2(ckpt: Path, data: Path) -> None:
    """A real failing stdout: /dev/full refuses every write with ENOSPC."""
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "evalloss", "compare", ckpt, "--data", data,
             "--model", spec("Fine")],
            stdout=full, stderr=subprocess.PIPE, text=True, check=False,
        )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr == (
        "evalloss: error: cannot write the report to stdout (No space left on device)\n"
    )


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
    assert line == f"evalloss: error: {out}: --output: no such folder '{out.parent}'"


def test_output_folder_that_is_a_file_is_refused(
    ckpt: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = data / "report.json"
    line = _refused(ckpt, data, out, monkeypatch)
    assert line == f"evalloss: error: {out}: --output: '{data}' is not a folder"


def test_output_that_is_a_folder_is_refused(
    ckpt: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    line = _refused(ckpt, data, tmp_path, monkeypatch)
    assert str(tmp_path) in line and "is a directory" in line  # click's own check comes first
    with pytest.raises(evalloss.EvallossError, match="--output: is a folder, not a file path"):
        output.check_output(tmp_path)  # the library's, for API callers


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
    assert "--output: cannot write to folder" in line and "Permission denied" in line


def test_a_folder_that_refuses_new_files_is_refused(
    ckpt: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whoever runs the tests (root too): the probe file's creation decides, not a guess."""
    from evalloss.io import files as output

    real = output.tempfile.mkstemp

    def refuse(*args: object, **kwargs: object) -> tuple[int, str]:
        if str(kwargs.get("suffix")) == ".tmp":
            raise PermissionError(13, "Permission denied")
        return real(*args, **kwargs)  # type: ignore[call-overload,no-any-return]

    monkeypatch.setattr(output.tempfile, "mkstemp", refuse)
    out = tmp_path / "report.json"
    line = _refused(ckpt, data, out, monkeypatch)
    assert line == (
        f"evalloss: error: {out}: --output: cannot write to folder '{tmp_path}' (Permission denied)"
    )


def test_explain_checks_its_output_too(ckpt: Path, data: Path) -> None:
    args = ("explain", ckpt, "--data", data, "--model", spec("Fine"), "-o", data)
    line = one_error(run(*args))
    assert line.endswith(f"--output: is one of the inputs ({data}); refusing to overwrite it")
    assert data.read_text() == DATA


def test_model_faults_reach_api_callers_as_exceptions(ckpt: Path, data: Path) -> None:
    with pytest.raises(evalloss.ModelError, match="forward failed on rows 1-3") as info:
        evalloss.compare([ckpt], data=data, model=spec("Raises"))
    assert info.value.exit_code == 2 and info.value.path == str(ckpt)
    assert isinstance(info.value.__cause__, ValueError)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_output_folder_where_no_file_can_be_made_is_refused(
    ckpt: Path, data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/proc refuses new files even to root: the probe write, not a permission guess, decides."""
    line = _refused(ckpt, data, Path("/proc/report.json"), monkeypatch)
    assert line.startswith(
        "evalloss: error: /proc/report.json: --output: cannot write to folder '/proc'"
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
    assert line.startswith(f"evalloss: error: {out}: --output: is one of the inputs (")
    assert line.endswith("); refusing to overwrite it")
    assert not marker.exists()
    assert {p: p.read_bytes() for p in before} == before


def test_check_output_is_library_code_for_api_callers(tmp_path: Path, data: Path) -> None:
    output.check_output(None, [data])  # stdout: nothing to check
    output.check_output(tmp_path / "new.json", [data, None])
    with pytest.raises(evalloss.EvallossError) as info:
        output.check_output(data, [data])
    assert info.value.exit_code == 2
    outputs = {"--output": tmp_path / "r.json", "--per-item": data}
    with pytest.raises(evalloss.OptionError, match="--per-item: is one of the inputs"):
        output.check_outputs(outputs, iter([data]))  # inputs read once per output


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


SIGNALS = [
    (signal.SIGINT, 130, "evalloss: error: interrupted (SIGINT); no report written"),
    (signal.SIGTERM, 143, "evalloss: error: terminated (SIGTERM); no report written"),
]


@pytest.mark.parametrize(("sig", "code", "line"), SIGNALS)
def test_signal_mid_run_exits_with_its_code_and_leaves_the_old_report(
    ckpt: Path, data: Path, tmp_path: Path, sig: signal.Signals, code: int, line: str
) -> None:
    out = tmp_path / "report.json"
    out.write_text(OLD)
    marker = tmp_path / "forward-ran"
    args = ("compare", ckpt, "--data", data, "--model", spec("Sleepy"), "-o", out)
    items = ("--per-item", tmp_path / "items.csv")  # its temporary file is open mid-run
    proc = _cli(*args, *items, EVALLOSS_TEST_STARTED=str(marker), EVALLOSS_TEST_SLEEP="120")
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
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["data.csv", "forward-ran", "m.safetensors", "report.json"]


@pytest.mark.parametrize(("sig", "code", "line"), SIGNALS)
def test_a_signal_whose_exception_a_library_replaced_still_ends_the_run_with_its_code(
    ckpt: Path, data: Path, tmp_path: Path, sig: signal.Signals, code: int, line: str
) -> None:
    """Was (1 run in 20 of a burst of SIGTERM, under load): exit 2, "m.safetensors: cannot
    load its tensors (could not determine the shape of object type 'UntypedStorage')"."""
    out = tmp_path / "report.json"
    args = ("compare", ckpt, "--data", data, "--model", spec("SwallowsSignal"), "-o", out)
    proc = _cli(*args, EVALLOSS_TEST_SIGNAL=str(int(sig)))
    stdout, stderr = proc.communicate(timeout=120)
    assert (proc.returncode, stdout, stderr.splitlines()) == (code, "", [line])
    assert not out.exists()


@pytest.mark.slow
def test_sigterm_under_torchrun_stops_every_rank(ckpt: Path, tmp_path: Path) -> None:
    """torchrun forwards SIGTERM to each worker: every rank exits 143 with its line, no report."""
    data = tmp_path / "data.csv"
    data.write_text("a,b,c,y\n" + "".join(f"{i % 7},{i % 5},{i % 3},{i % 3}\n" for i in range(40)))
    out = tmp_path / "report.json"
    out.write_text(OLD)
    marker = tmp_path / "forward-ran"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    command += ["-m", "evalloss", "compare", str(ckpt), "--data", str(data), "-o", str(out)]
    command += ["--model", spec("Sleepy"), "--batch-size", "4"]
    env = {**os.environ, "EVALLOSS_TEST_STARTED": str(marker), "EVALLOSS_TEST_SLEEP": "120"}
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while not all(Path(f"{marker}{rank}").exists() for rank in (0, 1)):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the ranks never reached forward: {proc.communicate()}")
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode != 0  # torchrun's own code; each rank's is 143
    lines = [ln for ln in stderr.splitlines() if ln.startswith("evalloss: ")]
    assert lines == ["evalloss: error: terminated (SIGTERM); no report written"] * 2
    assert out.read_text() == OLD and leftovers(tmp_path) == []


def test_closed_stdout_exits_141_quietly(ckpt: Path, data: Path) -> None:
    """`evalloss compare ... | head -0`: the reader is gone before the report is printed."""
    proc = _cli("compare", ckpt, "--data", data, "--model", spec("Fine"))
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the pipe's only reader: every write now fails with EPIPE
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141
    assert stderr == ""


@pytest.mark.parametrize("args", [["--help"], ["compare", "--help"], ["--version"]])
def test_help_into_a_closed_pipe_is_141_too(args: list[str]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "evalloss", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert (proc.wait(timeout=60), stderr) == (141, b"")


def test_error_with_stdout_and_stderr_closed_keeps_its_exit_code(
    ckpt: Path, tmp_path: Path
) -> None:
    """`evalloss ... 2>&1 | head -0` on bad input: still exit 2, no crash on the closed pipe."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "evalloss", "compare", ckpt, "--data", tmp_path / "none.csv"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    proc.stdout.close()
    assert proc.wait(timeout=120) == 2


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
    assert done.stdout.startswith("cross-entropy loss per item over 3 items ")
    assert done.stdout.count("\n") == 1  # head -1: the title's first line alone
    assert done.stderr == ""


def test_per_item_and_plot_paths_are_checked_like_output(
    ckpt: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ("compare", ckpt, "--data", data, "--model", spec("Fine"))
    line = one_error(run(*args, "--per-item", tmp_path / "data.csv"))
    assert line == (
        f"evalloss: error: {data}: --per-item: is one of the inputs ({data}); "
        "refusing to overwrite it"
    )
    same = tmp_path / "report.csv"
    line = one_error(run(*args, "-o", same, "--per-item", same))
    assert line == (
        f"evalloss: error: {same}: --per-item: the same file as --output; refusing to overwrite it"
    )
    assert not same.exists() and leftovers(tmp_path) == []


# -- model faults --------------------------------------------------------------------------

_SHAPE_HINT = "expected one tensor with the batch first (return the logits/predictions only)"


@pytest.mark.parametrize(
    ("model", "extra", "want"),
    [
        (
            "Raises",
            (),
            "forward failed on rows 1-3 with input of shape (3, 3): "
            "ValueError: the model is broken",
        ),
        (
            "RaisesOnSecondBatch",
            ("--batch-size", "2"),
            "forward failed on row 3 with input of shape (1, 3): KeyError: 'feature'",
        ),
        (
            "OutOfMemory",
            ("--batch-size", "8"),
            "out of memory on cpu evaluating rows 1-3 (3 rows per batch): "
            "use a smaller --batch-size, e.g. 1",
        ),
        ("Exits", (), "forward failed on rows 1-3 with input of shape (3, 3): SystemExit: 3"),
        ("Tuple", (), f"forward returned tuple on rows 1-3, {_SHAPE_HINT}"),
        ("Integer", (), f"forward returned int on rows 1-3, {_SHAPE_HINT}"),
        (
            "TooManyColumns",
            ("--loss", "mse"),
            "mse needs model output of shape (3, 1) for 1 target column(s), got (3, 3)",
        ),
        ("DropsARow", (), "model output has shape (2, 3), expected 3 items first"),
        ("IntegerTensor", (), "model output has dtype torch.int64, expected floating point"),
    ],
)
def test_model_fault_is_one_line_naming_the_model(
    ckpt: Path, data: Path, tmp_path: Path, model: str, extra: tuple[str, ...], want: str
) -> None:
    out = tmp_path / "report.json"
    out.write_text(OLD)
    result = run("compare", ckpt, "--data", data, "--model", spec(model), "-o", out, *extra)
    assert one_error(result) == f"evalloss: error: {ckpt}: {want}"
    assert out.read_text() == OLD and leftovers(tmp_path) == []


def test_prints_in_a_model_go_to_stderr_not_into_the_report(ckpt: Path, data: Path) -> None:
    for command in ("compare", "explain"):
        result = run(command, ckpt, "--data", data, "--model", spec("Chatty"), "--format", "json")
        assert result.exit_code == 0, result.stderr
        json.loads(result.stdout)  # the report alone
        assert "debug: batch of 3" in result.stderr


def test_out_of_memory_is_recognised_in_every_form() -> None:
    from evalloss.run.engine import out_of_memory

    assert out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    assert out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried"))
    assert out_of_memory(MemoryError())
    assert not out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not out_of_memory(ValueError("out of memory"))  # only allocator errors


def _cross_entropy_sum(weight: torch.Tensor, bias: torch.Tensor, text: str) -> float:
    """Independent oracle: float64 logits by hand, log-sum-exp with math, summed with fsum."""
    rows = [list(map(float, line.split(","))) for line in text.strip().splitlines()[1:]]
    w, b = weight.double().tolist(), bias.double().tolist()
    losses = []
    for *x, y in rows:
        z = [math.fsum(wi * xi for wi, xi in zip(w[k], x, strict=True)) + b[k] for k in range(3)]
        top = max(z)
        losses.append(top + math.log(math.fsum(math.exp(v - top) for v in z)) - z[int(y)])
    return math.fsum(losses)


def test_non_finite_outputs_are_counted_and_rank_last(tmp_path: Path) -> None:
    text = "a,b,c,y\n1,2,3,0\n4,5,6,1\n7,8,9,2\n6,1,1,0\n"  # rows 3 and 4 have a > 5
    data = tmp_path / "data.csv"
    data.write_text(text)
    torch.manual_seed(0)
    model = faulty.Poisonable()
    paths = {}
    for name, poison in (("nan", math.nan), ("good", 0.0), ("inf", math.inf)):
        model.poison.fill_(poison)
        paths[name] = tmp_path / f"{name}.safetensors"
        evalloss.save(model, paths[name], loss="cross-entropy")
    result = run(
        "compare", paths["nan"], paths["good"], paths["inf"], "--data", data,
        "--model", spec("Poisonable"), "--precision", "float64", "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    models = json.loads(result.stdout)["models"]
    assert [(m["name"], m["rank"]) for m in models] == [("good", 1), ("nan", 2), ("inf", 3)]
    good, nan, inf = models
    assert good["nonfinite_items"] == 0 and good["items"] == 4
    want = _cross_entropy_sum(model.linear.weight, model.linear.bias, text)
    assert good["loss_sum"] == pytest.approx(want, rel=1e-12)
    for bad in (nan, inf):
        assert bad["nonfinite_items"] == 2 and bad["items"] == 4
        assert bad["loss_per_item"] is None and bad["loss_sum"] is None
    table = run(
        "compare", paths["nan"], paths["good"], "--data", data, "--model", spec("Poisonable")
    )
    assert table.exit_code == 0
    last = table.stdout.strip().splitlines()[-1].split()
    assert last[:3] == ["2", "nan", "-"]


# -- data edge cases -----------------------------------------------------------------------

PLAIN = "a,b,c,y\n1,2,3,0\n4,5,6,1\n7,8,9,2\n"


def _want(ckpt: Path, text: str) -> float:
    """The oracle's loss sum for the Linear(3, 3) in ``ckpt`` over CSV ``text``."""
    from safetensors.torch import load_file

    tensors = load_file(ckpt)
    return _cross_entropy_sum(tensors["linear.weight"], tensors["linear.bias"], text)


@pytest.mark.parametrize(
    "raw",
    [
        b"\xef\xbb\xbfa,b,c,y\n1,2,3,0\n4,5,6,1\n7,8,9,2\n",  # UTF-8 BOM
        b"a,b,c,y\r\n1,2,3,0\r\n4,5,6,1\r\n7,8,9,2\r\n",  # CRLF
        b"a,b,c,y\n1,2,3,0\n4,5,6,1\n7,8,9,2",  # no final newline
        b"\xef\xbb\xbfa,b,c,y\r\n1,2,3,0\r\n4,5,6,1\r\n7,8,9,2",  # all three
        b'"a","b","c","y"\r\n1,"2",3,0\r\n4,5,6,"1"\r\n7,8,9,2',  # quoted, CRLF, no newline
    ],
    ids=["bom", "crlf", "no-final-newline", "bom-crlf-no-newline", "quoted-crlf"],
)
def test_bom_crlf_and_missing_final_newline_are_accepted(
    ckpt: Path, tmp_path: Path, raw: bytes
) -> None:
    data = tmp_path / "data.csv"
    data.write_bytes(raw)
    by_name = ("--feature", "a", "--feature", "b", "--feature", "c", "--target", "y")
    args = ("compare", ckpt, "--data", data, "--model", spec("Fine"), "--precision", "float64")
    result = run(*args, *by_name, "--format", "json")  # the header names are clean: no \ufeff, \r
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["data"]["items"] == 3 and report["data"]["targets"] == ["y"]
    assert report["models"][0]["loss_sum"] == pytest.approx(_want(ckpt, PLAIN), rel=1e-12)


def test_bom_without_header(ckpt: Path, tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    data.write_bytes(b"\xef\xbb\xbf1,2,3,0\n4,5,6,1\n7,8,9,2\n")
    args = ("compare", ckpt, "--data", data, "--model", spec("Fine"), "--no-header")
    result = run(*args, "--format", "json", "--precision", "float64")
    assert result.exit_code == 0, result.stderr
    loss_sum = json.loads(result.stdout)["models"][0]["loss_sum"]
    assert loss_sum == pytest.approx(_want(ckpt, PLAIN), rel=1e-12)


def test_a_data_set_of_one_row(ckpt: Path, tmp_path: Path) -> None:
    data = tmp_path / "one.csv"
    data.write_text("a,b,c,y\n4,5,6,1")
    args = ("compare", ckpt, "--data", data, "--model", spec("Fine"), "--precision", "float64")
    result = run(*args, "--format", "json")
    assert result.exit_code == 0, result.stderr
    model = json.loads(result.stdout)["models"][0]
    assert model["items"] == 1
    assert model["loss_per_item"] == pytest.approx(_want(ckpt, "h\n4,5,6,1\n"), rel=1e-12)


_LONG = 200_000


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (b"a,b,c,y\n1,2,3,0\n4,\xff,6,1\n7,8,9,2\n", "DATA:3: not valid UTF-8 text (invalid start byte)"),
        (
            b"a,b,c,y\n" + b"1,2,3,0\n" * 5000 + b"4,5,6,\xc3\x281\n",
            "DATA:5002: not valid UTF-8 text (invalid continuation byte)",
        ),
        (b"a,\xffb,c,y\n1,2,3,0\n", "DATA:1: not valid UTF-8 text (invalid start byte at byte 3)"),
        (b'a,b,c,y\n1,2,3,0\n"4,5,6,1\n7,8,9,2\n', "DATA:3: a quoted field opened on this line runs on to line 5 (unterminated quote?)"),
        (b'a,b,c,y\n1,2,3,0\n4,"5,6,1\n7,8,9,2\n', "DATA:3: a quoted field opened on this line runs on to line 5 (unterminated quote?)"),
        (b'a,"b,c,y\n1,2,3,0\n', "DATA:1: unterminated quote"),
        (
            b'a,b,c,y\n1,2,3,0\n4,"5,6,1\n' + b"1,2,3,0\n" * 30_000,
            "DATA:3: a quoted field opened on this line runs on past 131072 characters "
            "(unterminated quote?)",
        ),
        (b"a,b,a,y\n1,2,3,0\n", "DATA:1: a: duplicate column name"),
        (b"a,b,c,y\n1,2,3,0\n4," + b"5" * _LONG + b",6,1\n", "DATA:3: a field is longer than 131072 characters: not a CSV/TSV file?"),
        (b"a,b,c,y" + b"z" * _LONG + b"\n1,2,3,0\n", "DATA:1: a field is longer than 131072 characters: not a CSV/TSV file?"),
        (b"a,b,c,y\n1,2,3,0\n" + b"4,5,6,1" + b",1" * _LONG + b"\n", f"DATA:3: expected 4 fields, found {_LONG + 4}"),
        (b"a,b,c,y\r1,2,3,0\r4,5,6,1\r", "DATA:1: line ends are CR only (classic Mac text): convert them to LF or CRLF"),
        (b"a,b,c,y\n1,2,3,0\n4,5\x00,6,1\n", "DATA:3: b: not a number: '5\\x00'"),
        (b"a,b,c,y\n1,2,3,0\n4," + b"9" * 1000 + b",6,1\n", "DATA:3: b: not a finite number: '" + "9" * 40 + "'... (1000 characters)"),
        (b"\n1,2,3,0\n", "DATA:1: first line is blank; expected the header"),
        (b",,c,y\n1,2,3,0\n", "DATA:1: two columns have an empty name"),
        # found by fuzzing: Python's float() takes these, pyarrow does not; the message was
        # "cannot parse (In CSV column #0: CSV conversion error ...)" without line or column
        (b"a,b,c,y\n1,2,3,0\n1_0,2,3,0\n", "DATA:3: a: not a number: '1_0'"),
        ("a,b,c,y\n1,\u0661,3,0\n".encode(), "DATA:2: b: not a number: '\u0661'"),
        (b"a;b;c;y\n1;2;3;0\n", "DATA: no feature columns left after the targets: the file has one column, 'a;b;c;y'; is it comma-separated?"),
    ],
    ids=[
        "utf8", "utf8-late", "utf8-header", "quote", "quote-mid", "quote-header", "quote-runaway", "duplicate",
        "long-line", "long-header", "many-fields", "cr-only", "nul", "huge-number", "blank-first-line", "empty-names", "underscore", "arabic-digit", "semicolons",
    ],
)  # fmt: skip
def test_bad_text_is_one_line_with_its_line_number(
    ckpt: Path, tmp_path: Path, raw: bytes, want: str
) -> None:
    data = tmp_path / "data.csv"
    data.write_bytes(raw)
    line = one_error(run("compare", ckpt, "--data", data, "--model", spec("Fine")))
    assert line.replace(str(data), "DATA") == f"evalloss: error: {want}"


def test_an_absurd_first_line_is_not_read_whole(
    ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evalloss.sources import csvtext

    monkeypatch.setattr(csvtext, "MAX_HEADER_BYTES", 1000)
    data = tmp_path / "data.csv"
    data.write_bytes(b"a," * 1000 + b"y\n1,2\n")
    line = one_error(run("compare", ckpt, "--data", data, "--model", spec("Fine")))
    assert (
        line
        == f"evalloss: error: {data}:1: first line is longer than 1000 bytes: not a CSV/TSV file?"
    )


# -- docs/errors.md stays in step ----------------------------------------------------------

DOC = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
SOURCE = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "evalloss").rglob("*.py"))


def test_errors_doc_has_every_exit_code_and_error_class() -> None:
    from evalloss import errors
    from evalloss.cli import exits as cli

    table = {int(m.group(1)) for m in re.finditer(r"^\| (\d+) \|", DOC, flags=re.MULTILINE)}
    codes = {getattr(cli, n) for n in dir(cli) if n.startswith("EXIT_")}
    assert table == codes == {0, 1, 2, 3, 4, 130, 141, 143}
    classes = [c.__name__ for c in vars(errors).values() if isinstance(c, type)]
    for name in classes:
        if name.endswith("Error") and name != "EvallossError":
            assert f"`{name}`" in DOC, f"docs/errors.md does not cover {name}"


@pytest.mark.parametrize(
    "phrase",
    [
        "interrupted (SIGINT); no report written",
        "terminated (SIGTERM); no report written",
        "please report it with the above",
        "is one of the inputs (",
        "); refusing to overwrite it",
        "is a folder, not a file path",
        "cannot write to folder",
        "two columns have an empty name",
        "duplicate column name",
        "(unterminated quote?)",
        "line ends are CR only (classic Mac text): convert them to LF or CRLF",
        "not valid UTF-8 text (",
        "characters: not a CSV/TSV file?",
        "no feature columns left after the targets",
        "column is both a target and a feature",
        "empty file: no header and no data rows",
        "forward failed on ",
        "use a smaller --batch-size, e.g. ",
        "tensor with the batch first (return the logits/predictions only)",
        "expected floating point",
        "no architecture: the file has no evalloss.layers spec and no --model was given",
        "a Git LFS pointer, not the checkpoint itself",
        "which can run code when loaded",
        "too short for safetensors",
        "the header names it twice",
        "NaN or Inf weights in ",
    ],
)
def test_errors_doc_quotes_the_code(phrase: str) -> None:
    """Each phrase is in the code and in docs/errors.md: change one, update the other."""
    assert phrase in SOURCE, f"the code no longer says {phrase!r}: update docs/errors.md"
    assert phrase in DOC, f"docs/errors.md does not show {phrase!r}"


def _binary_files(ckpt: Path, tmp: Path) -> dict[str, bytes]:
    import bz2
    import gzip
    import lzma
    import zipfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": [1.0], "b": [2.0], "c": [3.0], "y": [0]}), tmp / "t.parquet")
    with zipfile.ZipFile(tmp / "t.zip", "w") as z:
        z.writestr("data.csv", PLAIN)
    return {
        "gzip-compressed; decompress it first": gzip.compress(PLAIN.encode()),
        "bzip2-compressed; decompress it first": bz2.compress(PLAIN.encode()),
        "xz-compressed; decompress it first": lzma.compress(PLAIN.encode()),
        "a zip archive; extract the CSV first": (tmp / "t.zip").read_bytes(),
        "a Parquet file; name it .parquet or .pq": (tmp / "t.parquet").read_bytes(),
        "a safetensors checkpoint, not a data set": ckpt.read_bytes(),
        "UTF-16 text; save it as UTF-8": PLAIN.encode("utf-16"),
    }


def test_a_data_file_that_is_not_text_is_named(ckpt: Path, tmp_path: Path) -> None:
    """A compressed file, Parquet or a checkpoint given as --data: say what it is."""
    data = tmp_path / "data.csv"
    for kind, raw in _binary_files(ckpt, tmp_path).items():
        data.write_bytes(raw)
        line = one_error(run("compare", ckpt, "--data", data, "--model", spec("Fine")))
        assert line == f"evalloss: error: {data}: not a CSV/TSV file: {kind}"
    data.write_bytes(PLAIN.encode("utf-16-le"))  # no BOM: NUL bytes give it away
    line = one_error(run("compare", ckpt, "--data", data, "--model", spec("Fine")))
    assert line == (
        f"evalloss: error: {data}:1: not a CSV/TSV file: NUL bytes: UTF-16 or binary data, "
        "not UTF-8 text"
    )
