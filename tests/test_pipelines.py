"""Pipelines: --junit-xml (read back by a JUnit parser), GitHub Actions (workflow
annotation, job summary, step outputs) and what --mlflow checks without a server (a missing
package, its keys), on the shipped example. tests/test_mlflow.py logs to a real server."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
from junitparser import Failure, JUnitXml

from evalloss.cli import github
from tests.conftest import run

EXAMPLE = Path(__file__).parents[1] / "checkpoints"
CKPTS = [EXAMPLE / f"{n}.safetensors" for n in ("bs10", "bs50")]
BASE = ["--baseline", EXAMPLE / "barely.safetensors", "--data", EXAMPLE / "train.csv"]


@pytest.mark.parametrize(("margin", "code"), [("0", 0), ("0.9", 1)])
def test_junit_has_one_case_per_gate_rule(tmp_path: Path, margin: str, code: int) -> None:
    out = tmp_path / "gate.xml"
    result = run("compare", *CKPTS, *BASE, "--min-improvement", margin, "--max-loss", "1",
                 "--require-significant", "--junit-xml", out)  # fmt: skip
    assert result.exit_code == code, result.stderr
    suite = next(iter(JUnitXml.fromfile(str(out))))
    cases = {case.name: case for case in suite}
    assert set(cases) == {"min-improvement", "max-loss", "require-significant"}
    assert suite.tests == 3 and suite.failures == (2 if code else 0)
    failed = [
        name for name, case in cases.items() if any(isinstance(r, Failure) for r in case.result)
    ]
    assert sorted(failed) == ([] if code == 0 else ["min-improvement", "require-significant"])
    if code:
        (failure,) = cases["min-improvement"].result
        assert "is not >" in failure.message


def test_junit_without_a_gate_is_an_empty_suite(tmp_path: Path) -> None:
    out = tmp_path / "gate.xml"
    assert (
        run("compare", *CKPTS, "--data", EXAMPLE / "train.csv", "--junit-xml", out).exit_code == 0
    )
    suite = next(iter(JUnitXml.fromfile(str(out))))
    assert suite.tests == 0 and list(suite) == []


def test_github_actions_annotation_summary_and_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    summary, outputs = tmp_path / "summary.md", tmp_path / "outputs.txt"
    summary.write_text("earlier step\n")
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    monkeypatch.setenv("GITHUB_OUTPUT", str(outputs))
    report = tmp_path / "report.json"
    result = run("compare", *CKPTS, *BASE, "--min-improvement", "0.9", "--format", "json",
                 "-o", report)  # fmt: skip
    assert result.exit_code == 1
    annotations = [line for line in result.stderr.splitlines() if line.startswith("::")]
    assert len(annotations) == 1
    assert annotations[0].startswith("::error title=evalloss::FAIL  bs10 beats baseline barely")
    text = summary.read_text()
    assert text.startswith("earlier step\n") and "rank |" in text and "**FAIL**" in text
    lines = outputs.read_text().splitlines()
    values = {lines[i].split("<<")[0]: lines[i + 1] for i in range(0, len(lines), 3)}
    assert values == {"passed": "false", "winner": str(CKPTS[0]), "report": str(report)}
    assert all(lines[i + 2] == lines[i].split("<<")[1] for i in range(0, len(lines), 3))


def test_github_notice_when_it_passes_and_the_report_stands_if_files_fail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "no-such-folder" / "summary.md"))
    monkeypatch.delenv("GITHUB_OUTPUT", raising=False)
    result = run("compare", *CKPTS, *BASE, "--min-improvement", "0")
    assert result.exit_code == 0 and "rank" in result.stdout
    lines = result.stderr.splitlines()
    assert lines[0].startswith("::notice title=evalloss::PASS  bs10 beats baseline barely")
    assert lines[1].startswith("evalloss: warning: cannot write $GITHUB_STEP_SUMMARY")
    assert len(lines) == 2


def test_annotation_text_is_escaped_as_the_runner_wants() -> None:
    assert github.escape("100% sure\r\nnext") == "100%25 sure%0D%0Anext"


def test_mlflow_missing_is_one_exit_2_line_before_any_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a)
    )
    out = tmp_path / "report.json"
    result = run("compare", *CKPTS, *BASE, "--mlflow", "-o", out)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (
        "evalloss: error: --mlflow: needs mlflow, which is not installed: "
        "pip install 'evalloss[mlflow]'\n"
    )
    assert not out.exists()


def test_mlflow_keys_are_valid_and_unique() -> None:
    from evalloss.cli.tracking import keys

    names = ["bs10", "a/b", "a:b", "a b", "..", ".", "é", "x" * 300, "a<b"]
    got = keys(names)
    assert got["bs10"] == "bs10" and got["a b"] == "a b"
    assert got["a/b"] == "a_b" and got["a:b"] == "a_b_2" and got["a<b"] == "a_b_3"
    assert got[".."] == "_.." and got["."] == "_." and got["é"] == "_"
    assert len(got["x" * 300]) == 200 and len(set(got.values())) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9_.\- ]+", k) for k in got.values())


def test_mlflow_params_name_every_hashed_file() -> None:
    """A model folder's files (issue 17) get a key each, under the model's key."""
    import dataclasses

    import evalloss
    from evalloss.cli.tracking import params_of

    report = evalloss.compare(CKPTS, data=EXAMPLE / "train.csv")
    folder = "models/bert"
    models = (dataclasses.replace(report.models[0], path=folder), *report.models[1:])
    assert report.provenance is not None
    hashes = {report.data.path: "d" * 64, f"{folder}/model.safetensors": "m" * 64,
              f"{folder}/config.json": "c" * 64, report.models[1].path: "b" * 64}  # fmt: skip
    provenance = dataclasses.replace(report.provenance, sha256=hashes)
    params = params_of(dataclasses.replace(report, models=models, provenance=provenance),
                       {"min_improvement": "2%", "model_kwargs": {"hidden": 8}})  # fmt: skip
    assert params["evalloss.sha256.data"] == "d" * 64
    assert params["evalloss.sha256.bs10.model.safetensors"] == "m" * 64
    assert params["evalloss.sha256.bs10.config.json"] == "c" * 64
    assert params["evalloss.sha256.bs50"] == "b" * 64
    assert params["evalloss.min_improvement"] == "2%"
    assert params["evalloss.model_kwargs"] == "hidden=8"
