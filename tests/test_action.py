"""action.yml: its gate step, run as the runner would run it (inputs as environment variables,
GITHUB_OUTPUT and GITHUB_STEP_SUMMARY as temp files, GITHUB_ACTIONS=true)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
ACTION = yaml.safe_load((ROOT / "action.yml").read_text(encoding="utf-8"))
EXAMPLE = ROOT / "checkpoints"


def _gate_step() -> dict:  # type: ignore[type-arg]
    return next(s for s in ACTION["runs"]["steps"] if s.get("id") == "gate")


def test_the_action_is_composite_and_its_outputs_come_from_the_gate() -> None:
    assert ACTION["runs"]["using"] == "composite"
    assert {"checkpoints", "data", "baseline", "min-improvement", "max-loss"} <= set(
        ACTION["inputs"]
    )
    for name in ("passed", "winner", "report"):
        assert ACTION["outputs"][name]["value"] == f"${{{{ steps.gate.outputs.{name} }}}}"
    for step in ACTION["runs"]["steps"]:  # no input is pasted into a script (injection)
        assert "${{" not in step.get("run", "")


def _run_gate(
    tmp_path: Path, inputs: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    step = _gate_step()
    values = {k: v.get("default", "") for k, v in ACTION["inputs"].items()} | inputs
    env = {}
    for name, template in step["env"].items():
        key = re.fullmatch(r"\$\{\{ inputs\.([\w-]+) \}\}", template).group(1)  # type: ignore[union-attr]
        env[name] = str(values[key])
    outputs, summary = tmp_path / "output", tmp_path / "summary"
    env |= {
        "GITHUB_ACTIONS": "true",
        "GITHUB_OUTPUT": str(outputs),
        "GITHUB_STEP_SUMMARY": str(summary),
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    done = subprocess.run(["bash", "-e", "-c", step["run"]], env={**os.environ, **env}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = outputs.read_text().splitlines() if outputs.exists() else []
    found = {lines[i].split("<<")[0]: lines[i + 1] for i in range(0, len(lines), 3)}
    return done, found


@pytest.mark.slow
@pytest.mark.parametrize(("margin", "code", "passed"), [("1%", 0, "true"), ("0.9", 1, "false")])
def test_the_gate_step_under_a_simulated_runner(
    tmp_path: Path, margin: str, code: int, passed: str
) -> None:
    inputs = {
        "checkpoints": f"{EXAMPLE / 'bs10.safetensors'} {EXAMPLE / 'bs50.safetensors'}",
        "data": str(EXAMPLE / "train.csv"),
        "baseline": str(EXAMPLE / "barely.safetensors"),
        "min-improvement": margin,
        "require-significant": "true",
        "args": "--no-hash --batch-size 512",
    }
    done, outputs = _run_gate(tmp_path, inputs)
    assert done.returncode == code, done.stderr
    assert outputs == {"passed": passed, "winner": str(EXAMPLE / "bs10.safetensors"),
                       "report": "evalloss-report.json"}  # fmt: skip
    kind = "notice" if code == 0 else "error"
    assert f"::{kind} title=evalloss::" in done.stderr
    assert (tmp_path / "evalloss-report.json").is_file() and "rank" in (
        tmp_path / "summary"
    ).read_text()


@pytest.mark.parametrize(
    ("extras", "spec"), [("", "{path}"), ("mlflow,plot", "{path}[mlflow,plot]")]
)
def test_the_install_step_adds_the_extras(tmp_path: Path, extras: str, spec: str) -> None:
    """The install step, with a stand-in ``python`` that prints what pip would be asked."""
    step = next(s for s in ACTION["runs"]["steps"] if s.get("name") == "Install evalloss")
    fake = tmp_path / "bin" / "python"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    env = {"TORCH_VERSION": "2.13.0", "ACTION_PATH": "/action path", "EXTRAS": extras,
           "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}  # fmt: skip
    assert set(step["env"]) == set(env) - {"PATH"}
    done = subprocess.run(["bash", "-e", "-c", step["run"]], env={**os.environ, **env},
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert done.stdout.splitlines() == [
        "-m",
        "pip",
        "install",
        "torch==2.13.0",
        spec.format(path="/action path"),
    ]
