"""docs/report-schema.json describes the real report: checked against reports made here."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import evalloss
from evalloss import losses
from evalloss.report import Comparison, GateCheck, GateResult
from tests.conftest import run

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "checkpoints"
CKPTS = [EXAMPLE / f"{n}.safetensors" for n in ("bs10", "bs50", "barely")]
ARGS = [*CKPTS, "--data", EXAMPLE / "train.csv"]
SCHEMA = json.loads((ROOT / "docs" / "report-schema.json").read_text())
HINT = "the report changed: update docs/report-schema.json"


def _check(document: Any) -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(document), key=str)
    assert not errors, f"{HINT}: " + "; ".join(e.message for e in errors)


@pytest.mark.parametrize("extra", [[], ["--no-hash"]])
def test_a_real_report_matches_the_schema(extra: list[str]) -> None:
    result = run("compare", *ARGS, "--format", "json", *extra)
    assert result.exit_code == 0, result.stderr
    _check(json.loads(result.stdout))


@pytest.mark.parametrize("gate", [[], ["--min-improvement", "1%", "--require-significant"]])
def test_a_real_report_with_a_baseline_matches_the_schema(gate: list[str]) -> None:
    result = run("compare", *ARGS, "--baseline", CKPTS[1], "--format", "json", *gate)
    assert result.exit_code == (1 if gate else 0), result.stderr
    document = json.loads(result.stdout)
    assert any(m.get("vs_baseline") for m in document["models"])
    assert (document["gate"] is None) == (not gate)
    _check(document)


def test_a_report_with_baseline_and_gate_fields_matches_the_schema() -> None:
    """Every optional part filled, non-finite figures included (they become null)."""
    report = evalloss.compare(CKPTS, data=EXAMPLE / "train.csv")
    vs = Comparison(-0.01, -0.02, (-0.02, 0.0), 0.04, 0.6)
    models = (
        dataclasses.replace(report.models[0], vs_baseline=vs),
        dataclasses.replace(report.models[1], is_baseline=True),
        dataclasses.replace(
            report.models[2],
            loss_per_item=float("nan"),
            vs_baseline=Comparison(None, None, None, None, None),
        ),
    )
    gate = GateResult(
        True, str(CKPTS[0]), str(CKPTS[1]), (GateCheck("min-improvement", True, "ok"),)
    )
    document = dataclasses.replace(report, models=models, has_baseline=True, gate=gate).to_dict()
    assert document["models"][2]["loss_per_item"] is None
    _check(document)


def test_the_schema_rejects_what_it_should() -> None:
    """The schema is not vacuous: an unknown key, a NaN-as-string, a missing field all fail."""
    good = json.loads(run("compare", *ARGS, "--format", "json").stdout)
    for broken in (
        {**good, "surprise": 1},
        {**good, "models": [{**good["models"][0], "loss_per_item": "NaN"}]},
        {k: v for k, v in good.items() if k != "provenance"},
        {**good, "provenance": {**good["provenance"], "sha256": {"x": "not-a-hash"}}},
    ):
        assert list(jsonschema.Draft202012Validator(SCHEMA).iter_errors(broken))


def test_a_report_with_slices_matches_the_schema(tmp_path: Path) -> None:
    """Slices (a category column, then bins), with a baseline and the slice gate."""
    data = tmp_path / "d.csv"
    lines = (EXAMPLE / "train.csv").read_text().splitlines()
    data.write_text("\n".join([lines[0] + ",group"] + [f"{row},{'ab'[i % 2] if i % 5 else ''}"
                                                      for i, row in enumerate(lines[1:])]) + "\n")
    common = [*CKPTS[:2], "--data", data, "--target", "species", "--format", "json"]
    for extra in (["--slice", "group", "--baseline", CKPTS[1], "--max-slice-regression", "5%"],
                  ["--slice", "x1", "--slice-bins", "3", "--feature", "x1", "--feature", "x2",
                   "--feature", "x3", "--feature", "x4"]):  # fmt: skip
        result = run("compare", *common, *extra)
        assert result.exit_code in (0, 1), result.stderr
        document = json.loads(result.stdout)
        assert document["models"][0]["slices"] and document["slicing"]
        _check(document)


def test_the_schema_names_the_loss_table() -> None:
    """The report's ``loss`` is one of the loss table's names, and every name is allowed."""
    assert SCHEMA["properties"]["loss"]["enum"] == list(losses.ROWS)


def test_a_text_report_with_a_prefix_token_matches_the_schema(tmp_path: Path) -> None:
    """Text (bytes, words and their figures) under --prefix-token, with a baseline."""
    from tests import hf

    folder = hf.gpt2(tmp_path / "gpt2", positions=512)
    hf.tokenizer(folder, vocab=260)
    data = hf.jsonl(tmp_path / "d.jsonl", [{"text": d} for d in hf.corpus(8)])
    other = hf.gpt2(tmp_path / "other", positions=512, seed=1)
    (other / "tokenizer.json").write_bytes((folder / "tokenizer.json").read_bytes())
    result = run("compare", folder, other, "--data", data, "--prefix-token", "0",
                 "--baseline", folder, "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["data"]["prefix_token"] == "0" and document["data"]["words"] > 0
    _check(document)
