"""--mlflow against a real MLflow tracking server, started once for this module on 127.0.0.1
(a free port, a SQLite store and an artifact root in a temp folder) and stopped at the end;
everything read back through MlflowClient. A server that is down is one warning line."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow", reason="needs mlflow: pip install -e '.[test]'")

from mlflow import MlflowClient  # noqa: E402

import evalloss  # noqa: E402
from tests.conftest import run  # noqa: E402

EXAMPLE = Path(__file__).parents[1] / "checkpoints"
CKPTS = [EXAMPLE / f"{n}.safetensors" for n in ("bs10", "bs50")]
BASE = ["--baseline", EXAMPLE / "barely.safetensors", "--data", EXAMPLE / "train.csv"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job workers
    log = (folder / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
         f"sqlite:///{folder / 'mlflow.db'}", "--default-artifact-root", str(folder / "artifacts"),
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not _healthy(uri):
            log_text = (folder / "server.log").read_text(errors="replace")[-3000:]
            assert proc.poll() is None, f"mlflow server exited:\n{log_text}"
            assert time.monotonic() < deadline, f"mlflow server not up in 120 s:\n{log_text}"
            time.sleep(0.25)
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its uvicorn worker
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _healthy(uri: str) -> bool:
    try:
        with urllib.request.urlopen(f"{uri}/health", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def tracking(server: str, monkeypatch: pytest.MonkeyPatch) -> MlflowClient:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(name, raising=False)
    return MlflowClient(server)


def test_a_new_run_of_the_experiment_has_the_whole_report(
    tracking: MlflowClient, tmp_path: Path
) -> None:
    out, plot = tmp_path / "report.json", tmp_path / "losses.png"
    result = run("compare", *CKPTS, *BASE, "--min-improvement", "0.9", "--plot", plot,
                 "--format", "json", "-o", out, "--mlflow-experiment", "gate ci")  # fmt: skip
    assert result.exit_code == 1 and result.stdout == ""  # the gate's code, the report alone
    assert "warning" not in result.stderr
    experiment = tracking.get_experiment_by_name("gate ci")
    assert experiment is not None
    (found,) = tracking.search_runs([experiment.experiment_id])
    assert found.info.status == "FINISHED" and found.info.run_name == "evalloss"
    report = evalloss.compare(CKPTS, data=EXAMPLE / "train.csv",
                              baseline=EXAMPLE / "barely.safetensors")  # fmt: skip
    metrics, params, tags = found.data.metrics, found.data.params, found.data.tags
    for m in report.models:  # exact figures, keyed by the model's name
        assert metrics[f"{m.name}.loss_per_item"] == m.loss_per_item
        assert metrics[f"{m.name}.rank"] == m.rank
        if m.vs_baseline is not None:
            assert metrics[f"{m.name}.vs_baseline.delta"] == m.vs_baseline.delta
            assert metrics[f"{m.name}.vs_baseline.ci95_low"] == m.vs_baseline.ci95[0]  # type: ignore[index]
    hashes = report.provenance.sha256  # type: ignore[union-attr]
    assert params["evalloss.sha256.bs10"] == hashes[str(CKPTS[0])]  # type: ignore[index]
    assert params["evalloss.sha256.data"] == hashes[str(EXAMPLE / "train.csv")]  # type: ignore[index]
    assert (
        params["evalloss.min_improvement"] == "0.9" and params["evalloss.loss"] == "cross-entropy"
    )
    assert "evalloss.token_dtype" not in params  # defaults are not options given
    assert tags["evalloss.verdict"] == "failed" and tags["evalloss.winner"] == str(CKPTS[0])
    assert tags["evalloss.verdict_line"].startswith("FAIL  bs10 beats baseline barely")
    files = {a.path for a in tracking.list_artifacts(found.info.run_id, "evalloss")}
    assert files == {"evalloss/evalloss-report.json", "evalloss/losses.png"}
    logged = tracking.download_artifacts(found.info.run_id, "evalloss/evalloss-report.json",
                                         str(tmp_path))  # fmt: skip
    assert json.loads(Path(logged).read_text()) == json.loads(out.read_text())


def test_the_active_run_gets_it_with_safe_unique_keys(
    tracking: MlflowClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    experiment = tracking.create_experiment("active")
    active = tracking.create_run(experiment).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", active)
    odd = [tmp_path / "a:b<c>.safetensors", tmp_path / "a;b|c|.safetensors"]
    for path in odd:
        shutil.copy(CKPTS[0], path)
    result = run("compare", *odd, "--data", EXAMPLE / "train.csv", "--mlflow", "--format",
                 "html", "-o", tmp_path / "report.html")  # fmt: skip
    assert result.exit_code == 0 and "warning" not in result.stderr, result.stderr
    logged = tracking.get_run(active)
    assert logged.info.status == "RUNNING"  # not ours to end
    keys = {k.rsplit(".", 1)[0] for k in logged.data.metrics}
    assert keys == {"a_b_c_", "a_b_c__2"}
    assert logged.data.tags["evalloss.verdict"] == "none"
    files = {a.path for a in tracking.list_artifacts(active, "evalloss")}
    assert files == {"evalloss/evalloss-report.json", "evalloss/report.html"}


def test_a_server_that_is_down_is_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = _free_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://ci:secret@127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    out = tmp_path / "report.json"
    result = run("compare", *CKPTS, *BASE, "--min-improvement", "0", "--format", "json",
                 "-o", out, "--mlflow")  # fmt: skip
    assert result.exit_code == 0 and result.stdout == ""
    warnings = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warnings) == 1
    shown = f"http://***@127.0.0.1:{port}"  # no credential in a CI log
    assert warnings[0].startswith(f"evalloss: warning: --mlflow: cannot log to {shown} (")
    assert "secret" not in result.stderr
    assert warnings[0].endswith("; the report stands")
    assert json.loads(out.read_text())["gate"]["passed"] is True


def test_a_run_of_ours_that_fails_halfway_is_marked_failed(
    tracking: MlflowClient, tmp_path: Path
) -> None:
    from evalloss.cli import tracking as logging_to_mlflow
    from evalloss.errors import EvallossWarning

    report = evalloss.compare(CKPTS, data=EXAMPLE / "train.csv")
    with pytest.warns(EvallossWarning, match=r"^--mlflow: cannot log to http://127\.0\.0\.1"):
        got = logging_to_mlflow.log(report, experiment="halfway", options={},
                                    artifacts=[str(tmp_path / "missing.png")])  # fmt: skip
    assert got is None
    experiment = tracking.get_experiment_by_name("halfway")
    (found,) = tracking.search_runs([experiment.experiment_id])  # type: ignore[union-attr]
    assert found.info.status == "FAILED"
    assert found.data.metrics["bs10.loss_per_item"] == report.models[0].loss_per_item
