"""Report formats: table (80 columns), markdown (GitHub), csv (flattened JSON), through render."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evalloss import render
from evalloss.render.cells import verdict
from evalloss.render.names import shorten
from evalloss.report import Comparison, DataInfo, GateCheck, GateResult, ModelResult, Report
from tests.conftest import run

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "checkpoints"
LONG = "experiment-2026-11-24-resnet-tiny-lr0.001-wd0.05-warmup500-{}-epoch40-final"


def _model(rank: int, name: str, loss: float | None, **kw: object) -> ModelResult:
    fields: dict[str, object] = {
        "rank": rank,
        "name": name,
        "path": f"runs/{name}.safetensors",
        "loss_per_item": loss,
        "loss_sum": None if loss is None else loss * 4,
        "items": 4,
        "accuracy": 0.75,
        "nonfinite_items": 0 if loss is not None else 1,
        "is_baseline": False,
        "seconds": 0.5,
    }
    fields.update(kw)
    return ModelResult(**fields)  # type: ignore[arg-type]


def _report(models: tuple[ModelResult, ...], **kw: object) -> Report:
    fields: dict[str, object] = {
        "evalloss_version": "1.0.0",
        "data": DataInfo("data/train.csv", 4, ("y",), 3),
        "loss": "mse",
        "device": "cpu",
        "precision": "float32",
        "batch_size": 4096,
        "world_size": 1,
        "models": models,
    }
    fields.update(kw)
    return Report(**fields)  # type: ignore[arg-type]


def _with_baseline() -> Report:
    vs = Comparison(delta=-0.125, relative=-0.2, ci95=(-0.25, -0.0625), p_value=0.03, wins=0.75)
    return _report(
        (
            _model(1, "new|one", 0.5, vs_baseline=vs),
            _model(2, "prod", 0.625, is_baseline=True),
            _model(3, "broken", None, vs_baseline=Comparison(None, None, None, None, None)),
        ),
        has_baseline=True,
        gate=GateResult(
            passed=True,
            winner="runs/new|one.safetensors",
            baseline="runs/prod.safetensors",
            checks=(GateCheck("min-improvement", True, "delta -0.125 < -0.01"),),
        ),
    )


def _read_csv(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_csv_is_one_row_per_model_with_the_json_fields_flattened() -> None:
    report = _with_baseline()
    rows = _read_csv(render.render(report, "csv"))
    document = report.to_dict()
    assert [r["name"] for r in rows] == ["new|one", "prod", "broken"]
    first, baseline, broken = rows
    # every float reads back exactly as the JSON report has it
    for row, model in zip(rows, document["models"], strict=True):
        for key in ("loss_per_item", "loss_sum", "accuracy", "seconds"):
            assert (float(row[key]) if row[key] else None) == model[key]
        assert int(row["rank"]) == model["rank"] and row["path"] == model["path"]
    assert float(first["vs_baseline.delta"]) == -0.125
    assert float(first["vs_baseline.relative"]) == -0.2
    assert (float(first["vs_baseline.ci95.low"]), float(first["vs_baseline.ci95.high"])) == (
        -0.25,
        -0.0625,
    )
    assert float(first["vs_baseline.p_value"]) == 0.03 and float(first["vs_baseline.wins"]) == 0.75
    assert first["is_baseline"] == "false" and baseline["is_baseline"] == "true"
    assert all(baseline[k] == "" for k in baseline if k.startswith("vs_baseline."))
    assert broken["loss_per_item"] == "" and broken["vs_baseline.delta"] == ""


def test_csv_without_baseline_has_no_comparison_columns() -> None:
    text = render.render(_report((_model(1, "a", 0.5), _model(2, "b", 0.75))), "csv")
    header = text.splitlines()[0].split(",")
    assert header[:4] == ["rank", "name", "path", "loss_per_item"]
    assert not any(h.startswith("vs_baseline") for h in header)
    assert len(_read_csv(text)) == 2


def test_markdown_is_a_github_table_with_the_gate_verdict() -> None:
    text = render.render(_with_baseline(), "markdown")
    lines = text.splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + 3  # header, alignment row, one row per model
    cells = [c.strip() for c in table[0].strip("|").split("|")]
    assert cells[:3] == ["rank", "model", "loss/item"] and "delta vs baseline" in cells
    align = [c.strip() for c in table[1].strip("|").split("|")]
    assert align[0].endswith(":") and not align[1].endswith(":")  # numbers right, names left
    # the pipe in a name is escaped, so every row has the same number of cells
    assert all(len(row.replace("\\|", "").split("|")) == len(table[0].split("|")) for row in table)
    assert "`new\\|one`" in table[2] and "-0.125" in table[2] and "[-0.25, -0.0625]" in table[2]
    assert "`prod (baseline)`" in table[3]
    assert "**PASS** new\\|one beats baseline prod" in text and "- pass min-improvement" in text
    assert text.isascii()


def test_markdown_without_gate_or_baseline() -> None:
    text = render.render(_report((_model(1, "a", 0.5),)), "markdown")
    assert "gate" not in text and "baseline" not in text
    assert text.startswith("### evalloss: mse loss per item")


def test_failed_gate_is_visible_in_markdown_and_table() -> None:
    report = _report(
        (_model(1, "a", 0.5),),
        gate=GateResult(False, "runs/a.safetensors", None, (GateCheck("max-loss", False, "x"),)),
    )
    assert "**FAIL**" in render.render(report, "markdown")
    assert render.render(report, "table").endswith("\nFAIL  best model a; max-loss failed: x\n")


def test_table_fits_80_columns_with_long_names_and_keeps_them_apart() -> None:
    names = [LONG.format(k) for k in ("bs10", "bs50", "barely")]
    vs = Comparison(-0.0123456, -0.0234567, (-0.0345678, -0.00123456), 1.23456e-05, 0.612345)
    models = (
        _model(1, names[0], 0.488170496, vs_baseline=vs),
        _model(2, names[1], 0.498752049, is_baseline=True),
        _model(3, names[2], 1.110221472, vs_baseline=vs),
    )
    long_data = "/very/long/directory/structure/for/experiments/2026-11-24/shards/train.csv"
    report = _report(
        models, has_baseline=True, data=DataInfo(long_data, 600, ("y",), 4), loss="cross-entropy"
    )
    text = render.render(report, "table")
    lines = text.splitlines()
    assert lines[-1] == verdict(report)  # one line for a CI log, names in full
    assert max(map(len, lines[:-1])) <= 80, text
    assert lines[:2] == ["cross-entropy loss per item over 600 items (float32, cpu)", f"of {long_data}"]
    ranked = [line.split()[1] for line in lines[5:8]]
    assert len(set(ranked)) == 3
    assert [k in r for k, r in zip(("bs10", "bs50", "barely"), ranked, strict=True)] == [True] * 3
    assert "(baseline)" in lines[6]


def test_title_keeps_the_file_name_of_a_path_longer_than_a_line() -> None:
    path = "/" + "x" * 120 + "/train.csv"
    report = _report((_model(1, "a", 0.5),), data=DataInfo(path, 600, ("y",), 4))
    title, second = render.render(report, "table").splitlines()[:2]
    assert len(second) == 80 and second.endswith("xx/train.csv") and second.startswith("of ")
    assert title.endswith("over 600 items (float32, cpu)")


def test_short_names_are_left_alone() -> None:
    text = render.render(_report((_model(1, "a", 0.5), _model(2, "b", 0.75))), "table")
    assert [line.split()[1] for line in text.splitlines()[4:]] == ["a", "b"]


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    st.lists(st.text("ab-_.x0123456789", min_size=1, max_size=70), min_size=1, max_size=5),
    st.integers(12, 40),
)
def test_shorten_respects_the_limit_and_leaves_short_names_alone(
    names: list[str], limit: int
) -> None:
    short = shorten(names, limit)
    assert all(len(s) <= limit for s in short)
    assert [s for s, n in zip(short, names, strict=True) if len(n) <= limit] == [
        n for n in names if len(n) <= limit
    ]


@settings(derandomize=True, max_examples=60, deadline=None)
@given(
    st.text("abcxyz-0123456789", min_size=0, max_size=40),
    st.lists(st.text("abcdef0123", min_size=1, max_size=6), min_size=2, max_size=5, unique=True),
    st.text("abcxyz-0123456789", min_size=0, max_size=40),
    st.integers(14, 30),
)
def test_shorten_keeps_the_part_that_tells_names_apart(
    prefix: str, cores: list[str], suffix: str, limit: int
) -> None:
    names = [f"{prefix}-{core}-{suffix}" for core in cores]
    short = shorten(names, limit)
    assert all(len(s) <= limit for s in short)
    assert all(core in s for core, s in zip(cores, short, strict=True))
    assert len(set(short)) == len(names)


def test_cli_table_with_long_checkpoint_paths_fits_80_columns(tmp_path: Path) -> None:
    folder = tmp_path / "some" / "very" / "long" / "directory" / "for" / "experiments" / "today"
    folder.mkdir(parents=True)
    ckpts = []
    for k in ("bs10", "bs50", "barely"):
        ckpts.append(folder / f"{LONG.format(k)}.safetensors")
        shutil.copy(EXAMPLE / f"{k}.safetensors", ckpts[-1])
    shutil.copy(EXAMPLE / "train.csv", folder / "train.csv")
    args = [*ckpts, "--data", folder / "train.csv"]
    result = run("compare", *args)
    assert result.exit_code == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= 80, result.stdout
    as_json = json.loads(run("compare", *args, "--format", "json").stdout)
    rows = _read_csv(run("compare", *args, "--format", "csv").stdout)
    assert [r["name"] for r in rows] == [m["name"] for m in as_json["models"]]
    assert [float(r["loss_sum"]) for r in rows] == [m["loss_sum"] for m in as_json["models"]]
    markdown = run("compare", *args, "--format", "markdown").stdout
    assert all(m["name"] in markdown for m in as_json["models"])


@pytest.mark.parametrize("fmt", render.FORMATS)
def test_every_format_ends_with_one_newline(fmt: str) -> None:
    text = render.render(_with_baseline(), fmt)
    assert text.endswith("\n") and not text.endswith("\n\n")
