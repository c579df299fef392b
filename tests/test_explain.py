"""`explain`: the seed article's worked table, an independent row oracle, and the CLI."""

from __future__ import annotations

import json
import math
import random
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import evalloss
from evalloss.explainer.grouping import BatchGrouping
from evalloss.render import explain as render_explain
from evalloss.render.explain import EXPLAIN_NOTE
from evalloss.run import plan as run_plan
from evalloss.sources import chunks
from evalloss.stats.paired import relative_error
from tests import nets
from tests.conftest import net, run
from tests.oracles import assert_same_text

ARTICLE = [4.0, 5.0, 2.0, 4.0, 3.0, 2.0, 3.0, 1.0]  # the seed's item losses
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "checkpoints"


def oracle_row(values: Sequence[float], size: int) -> dict[str, float | int | None]:
    """Plain Python: cut the list into consecutive batches, average each, add with fsum."""
    batches = [values[i : i + size] for i in range(0, len(values), size)]
    means = [math.fsum(b) / len(b) for b in batches]
    total = math.fsum(means)
    return {
        "batches": len(batches),
        "last_batch": len(batches[-1]) if batches else 0,
        "sum_of_averages": total,
        "normalized_sum": total * size,
        "average_of_averages": total / len(batches) if batches else None,
    }


def grouped(values: Sequence[float], size: int, chunk: int) -> BatchGrouping:
    grouping = BatchGrouping(size)
    for i in range(0, len(values), chunk):
        grouping.add(values[i : i + chunk])
    return grouping


def figures(g: BatchGrouping) -> dict[str, float | int | None]:
    return {k: getattr(g, k) for k in ("batches", "last_batch", "sum_of_averages",
                                       "normalized_sum", "average_of_averages")}  # fmt: skip


# -- the row arithmetic, without torch --------------------------------------------------------


@pytest.mark.parametrize("chunk", [1, 3, 8])
def test_the_article_table(chunk: int) -> None:
    two, four = grouped(ARTICLE, 2, chunk), grouped(ARTICLE, 4, chunk)
    assert (two.sum_of_averages, four.sum_of_averages) == (12.0, 6.0)
    assert (two.normalized_sum, four.normalized_sum) == (24.0, 24.0)  # the article's (23.0)
    assert (two.average_of_averages, four.average_of_averages) == (3.0, 3.0)
    assert (two.batches, two.last_batch, four.batches, four.last_batch) == (4, 2, 2, 4)


@pytest.mark.parametrize("chunk", [1, 2, 4, 5, 9])
def test_a_smaller_last_batch_breaks_the_average_of_averages(chunk: int) -> None:
    g = grouped([*ARTICLE, 6.0], 4, chunk)  # batch means 3.75, 2.25, 6.0
    assert (g.batches, g.last_batch) == (3, 1)
    assert g.sum_of_averages == 12.0
    assert g.average_of_averages == 4.0  # while the true loss per item is 30 / 9 = 3.333...
    assert g.normalized_sum == 48.0  # while the true loss sum is 30


def test_nothing_added() -> None:
    g = BatchGrouping(4)
    assert (g.batches, g.last_batch, g.sum_of_averages, g.average_of_averages) == (0, 0, 0.0, None)
    with pytest.raises(ValueError, match="positive"):
        BatchGrouping(0)


losses = st.lists(
    st.floats(min_value=0, max_value=1e6, allow_nan=False, allow_infinity=False), max_size=200
)


@settings(max_examples=150, deadline=None, derandomize=True)
@given(losses, st.integers(1, 40), st.integers(1, 50))
def test_rows_equal_the_plain_python_oracle_for_any_chunking(
    values: list[float], size: int, chunk: int
) -> None:
    assert figures(grouped(values, size, chunk)) == oracle_row(values, size)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.integers(1, 30), st.integers(1, 12), st.integers(1, 64), st.data())
def test_normalized_sum_is_exact_when_the_batch_size_divides_the_items(
    size: int, batches: int, chunk: int, data: st.DataObject
) -> None:
    # losses are >= 0; subnormals are left out: dividing one by the batch size loses its digits
    item = st.floats(min_value=0, max_value=1e6, allow_subnormal=False)
    n = size * batches
    values = data.draw(st.lists(item, min_size=n, max_size=n), label="item losses")
    g = grouped(values, size, chunk)
    per_item = math.fsum(values) / len(values)
    assert g.last_batch == size
    assert math.isclose(g.normalized_sum / len(values), per_item, rel_tol=1e-12)
    assert math.isclose(g.average_of_averages or 0.0, per_item, rel_tol=1e-12)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.integers(2, 30), st.integers(1, 12), st.data(), st.randoms(use_true_random=False))
def test_a_smaller_last_batch_makes_both_estimates_differ(
    size: int, full: int, data: st.DataObject, rnd: random.Random
) -> None:
    last = data.draw(st.integers(1, size - 1), label="last batch")
    values = [rnd.uniform(0.5, 10) for _ in range(size * full + last)]
    g = grouped(values, size, rnd.randint(1, 64))
    n, k = len(values), full + 1
    m_full = math.fsum(values[: size * full]) / (size * full)  # mean over the full batches' items
    m_last = math.fsum(values[size * full :]) / last
    truth = math.fsum(values)
    assert (g.batches, g.last_batch) == (k, last)
    # normalized_sum counts the last batch's mean (size - last) times too often
    assert math.isclose(g.normalized_sum - truth, (size - last) * m_last, rel_tol=1e-9)
    assert g.normalized_sum > truth
    # the average of averages weighs the last batch 1/k instead of last/n
    expected = (m_last - m_full) * (1 / k - last / n)
    assert math.isclose((g.average_of_averages or 0.0) - truth / n, expected, abs_tol=1e-9)
    if abs(m_last - m_full) > 1e-6:
        assert g.average_of_averages != pytest.approx(truth / n, rel=1e-12)


def test_relative_error() -> None:
    assert relative_error(48.0, 30.0) == pytest.approx(0.6)
    assert relative_error(4.0, 10 / 3) == pytest.approx(0.2)
    assert relative_error(0.0, 0.0) == 0.0
    assert relative_error(1.0, 0.0) is None
    assert relative_error(None, 1.0) is None
    assert relative_error(math.inf, 1.0) is None


# -- the API and the CLI on a real model --------------------------------------------------------


@pytest.fixture
def article(write_csv: Callable[..., Path]) -> Callable[..., Path]:
    """A CSV whose L1 losses under the Zero model are the given item losses."""

    def make(values: Sequence[float] = ARTICLE) -> Path:
        return write_csv([[0, v] for v in values], ["x", "y"])

    return make


def _zero(save: Callable[..., Path]) -> Path:
    return save(nets.Zero(), "zero", loss="l1")


def test_api_reproduces_the_article(article, save) -> None:  # type: ignore[no-untyped-def]
    report = evalloss.explain(_zero(save), data=article(), batch_sizes=[2, 4], model=net("Zero"))
    assert isinstance(report, evalloss.ExplainReport)
    assert (report.loss_sum, report.per_item, report.items) == (24.0, 3.0, 8)
    assert [r.sum_of_averages for r in report.rows] == [12.0, 6.0]
    assert [r.normalized_sum for r in report.rows] == [24.0, 24.0]
    assert [r.average_of_averages for r in report.rows] == [3.0, 3.0]
    assert [r.normalized_sum_error for r in report.rows] == [0.0, 0.0]
    assert [r.average_of_averages_error for r in report.rows] == [0.0, 0.0]


def test_api_ninth_item(article, save) -> None:  # type: ignore[no-untyped-def]
    report = evalloss.explain(
        _zero(save), data=article([*ARTICLE, 6.0]), batch_sizes=4, model=net("Zero")
    )
    (row,) = report.rows
    assert report.per_item == pytest.approx(10 / 3, rel=1e-15)
    assert (row.batches, row.last_batch, row.average_of_averages) == (3, 1, 4.0)
    assert row.average_of_averages_error == pytest.approx((4.0 - 10 / 3) / (10 / 3))
    assert row.normalized_sum_error == pytest.approx((48.0 - 30.0) / 30.0)


def test_rows_do_not_depend_on_the_forward_batch_size(article, save, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    rnd = random.Random(7)
    path, ckpt = article([rnd.uniform(0, 5) for _ in range(203)]), _zero(save)
    options = {"batch_sizes": [1, 3, 10, 64, 250], "model": net("Zero"), "precision": "float64"}
    first = evalloss.explain(ckpt, data=path, **options)
    monkeypatch.setattr(run_plan, "fitted_batch_size", lambda plan, wanted: 7)
    second = evalloss.explain(ckpt, data=path, **options)
    assert first == second
    monkeypatch.setattr(chunks, "RANGE_BYTES", 300)  # the file is read in many blocks
    third = evalloss.explain(ckpt, data=path, **options)
    assert third == first
    read = [float(line.split(",")[1]) for line in path.read_text().splitlines()[1:]]
    for row, size in zip(first.rows, options["batch_sizes"], strict=True):
        expected = oracle_row(read, size)
        assert {k: getattr(row, k) for k in expected} == expected
    assert first.loss_sum == math.fsum(read)


def test_default_batch_sizes_and_duplicates(article, save) -> None:  # type: ignore[no-untyped-def]
    ckpt = _zero(save)
    report = evalloss.explain(ckpt, data=article(), model=net("Zero"))
    assert [r.batch_size for r in report.rows] == [1, 10, 32, 64, 256]
    assert report.rows[-1].last_batch == 8 and report.rows[-1].batches == 1
    report = evalloss.explain(ckpt, data=article(), batch_sizes=[4, 2, 4], model=net("Zero"))
    assert [r.batch_size for r in report.rows] == [4, 2]
    with pytest.raises(evalloss.OptionError, match="--batch-size"):
        evalloss.explain(ckpt, data=article(), batch_sizes=[2, 0], model=net("Zero"))


def test_a_non_finite_item_leaves_no_figure(write_csv, save, tmp_path) -> None:  # type: ignore[no-untyped-def]
    model = tmp_path / "ratio.py"
    model.write_text(
        "from torch import nn\n"
        "class Ratio(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x / x  # 0/0 is nan\n"
    )
    path = write_csv([[1, 1], [0, 1], [2, 1]], ["x", "y"])
    report = evalloss.explain(
        _zero(save), data=path, batch_sizes=[2], model=f"{model}:Ratio", loss="l1"
    )
    assert (report.items, report.nonfinite_items, report.loss_sum, report.per_item) == (
        3, 1, None, None,
    )  # fmt: skip
    (row,) = report.rows
    assert (row.batches, row.last_batch) == (2, 1)
    assert row.sum_of_averages is None and row.average_of_averages_error is None
    result = run("explain", _zero(save), "--data", path, "--model", f"{model}:Ratio")
    assert result.exit_code == 0
    assert "1 items have a non-finite loss" in result.stdout


def test_cli_json_reproduces_the_article(article, save) -> None:  # type: ignore[no-untyped-def]
    ckpt = _zero(save)
    args = ["--data", article(), "--model", net("Zero"), "--batch-size", "2"]
    result = run("explain", ckpt, *args, "--batch-size", "4", "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    doc = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"token {c}"))
    assert list(doc) == sorted(doc)
    assert (doc["per_item"], doc["loss_sum"], doc["items"]) == (3.0, 24.0, 8)
    assert doc["loss"] == "l1" and doc["checkpoint"] == str(ckpt)
    assert doc["rows"] == [
        {"batch_size": 2, "batches": 4, "last_batch": 2, "sum_of_averages": 12.0,
         "normalized_sum": 24.0, "average_of_averages": 3.0,
         "normalized_sum_error": 0.0, "average_of_averages_error": 0.0},
        {"batch_size": 4, "batches": 2, "last_batch": 4, "sum_of_averages": 6.0,
         "normalized_sum": 24.0, "average_of_averages": 3.0,
         "normalized_sum_error": 0.0, "average_of_averages_error": 0.0},
    ]  # fmt: skip


def test_cli_table_ends_with_the_two_sentences(article, save) -> None:  # type: ignore[no-untyped-def]
    path = article([*ARTICLE, 6.0])
    result = run("explain", _zero(save), "--data", path, "--model", net("Zero"), "--batch-size", 4)
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    words = " ".join(result.stdout.split())
    assert words.startswith("l1 loss of ") and " over 9 items of " in words
    _title, table, note = result.stdout.split("\n\n")
    assert " ".join(note.split()) == " ".join(" ".join(EXPLAIN_NOTE).split())
    lines = table.splitlines()
    assert [line.split() for line in lines[:2]] == [
        ["batch", "last", "sum", "of", "normalized", "average", "of"],
        ["size", "batches", "batch", "averages", "sum", "error", "averages", "error"],
    ]
    assert set(lines[2]) == {"-", " "}
    assert lines[3].split() == ["4", "3", "1", "12", "48", "+60.00%", "4", "+20.00%"]
    assert lines[4].split() == ["exact", "30", "3.33333"]
    assert all(len(line) <= 80 for line in result.stdout.splitlines() if "/" not in line)


def test_cli_markdown_and_output_file(article, save, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "explain.md"
    args = ["--data", article(), "--model", net("Zero"), "--batch-size", "2"]
    result = run("explain", _zero(save), *args, "--format", "markdown", "-o", out)
    assert result.exit_code == 0 and result.stdout == "" and result.stderr == ""
    text = out.read_text()
    assert text.startswith("### evalloss explain: l1 loss of `")
    table = [line for line in text.splitlines() if line.startswith("|")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    assert cells[0][:3] == ["batch size", "batches", "last batch"]
    assert cells[2] == ["2", "4", "2", "12", "24", "0%", "3", "0%"]
    assert cells[3] == ["**exact**", "", "", "", "24", "", "3", ""]
    assert text.rstrip().endswith(EXPLAIN_NOTE[1])


def test_cli_csv(article, save) -> None:  # type: ignore[no-untyped-def]
    args = ["--data", article(), "--model", net("Zero"), "--batch-size", "2"]
    result = run("explain", _zero(save), *args, "--format", "csv")
    assert result.exit_code == 0
    header, row = result.stdout.splitlines()
    assert dict(zip(header.split(","), row.split(","), strict=True)) == {
        "batch_size": "2", "batches": "4", "last_batch": "2", "sum_of_averages": "12.0",
        "normalized_sum": "24.0", "normalized_sum_error": "0.0", "average_of_averages": "3.0",
        "average_of_averages_error": "0.0", "loss_sum": "24.0", "per_item": "3.0", "items": "8",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--batch-size", "0"], "--batch-size"),
        (["--batch-size", "two"], "--batch-size"),
        (["--device", "nonsense"], "--device: unknown device 'nonsense'"),
    ],
)
def test_cli_bad_options_are_exit_2(article, save, tmp_path, args, message) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "never.json"
    result = run(
        "explain", _zero(save), "--data", article(), "--model", net("Zero"), *args, "-o", out
    )
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith("evalloss: error: ") and message in result.stderr
    assert not out.exists()


def test_cli_bad_target_names_its_line(write_csv, save) -> None:  # type: ignore[no-untyped-def]
    path = write_csv([[0, 1], [0, 2], [0, 7], [0, 0]], ["x", "y"])
    result = run(
        "explain", save(nets.Zero(3)), "--data", path, "--model", net("Zero"),
        "--model-kwargs", '{"outputs": 3}', "--loss", "cross-entropy",
    )  # fmt: skip
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (
        f"evalloss: error: {path}:4: y: class label must be an integer in [0, 3): '7'\n"
    )


def test_cli_explain_takes_one_checkpoint(article, save) -> None:  # type: ignore[no-untyped-def]
    ckpt = _zero(save)
    result = run("explain", ckpt, ckpt, "--data", article(), "--model", net("Zero"))
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1


def test_cli_on_the_shipped_example() -> None:
    ckpt, data = EXAMPLE / "bs10.safetensors", EXAMPLE / "train.csv"
    result = run("explain", ckpt, "--data", data, "--format", "json")  # no --model: self-described
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    report = evalloss.compare([ckpt], data=data)
    assert doc["loss_sum"] == report.models[0].loss_sum and doc["items"] == 600
    rows = {r["batch_size"]: r for r in doc["rows"]}
    assert set(rows) == {1, 10, 32, 64, 256}
    assert rows[10]["normalized_sum_error"] == pytest.approx(0, abs=1e-12)  # 600 = 60 x 10
    assert rows[256]["last_batch"] == 88 and rows[256]["normalized_sum_error"] > 0.1


def test_explain_help_loads_no_heavy_module() -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "evalloss", "explain", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--batch-size N" in proc.stdout and "repeatable" in proc.stdout
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if "|" in line
    }
    assert not imported & {"torch", "pyarrow", "numpy", "scipy", "safetensors", "tabulate"}


def test_error_cells() -> None:
    assert [render_explain._error(v) for v in (None, 0.0, 1e-17, -3e-5, 0.6, -0.0014)] == [
        "-", "0%", "0.00%", "0.00%", "+60.00%", "-0.14%",
    ]  # fmt: skip


def test_docs_why_shows_the_real_output(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """docs/why.md pastes `explain` runs on the shipped example: they must stay true."""
    text = (ROOT / "docs" / "why.md").read_text()
    runs = re.findall(r"\n    (evalloss explain [^\n]*)\n\n```\n(.*?)```\n", text, re.S)
    runs += re.findall(r"\n`(evalloss explain [^`]*)`:\n\n```json\n(.*?)```\n", text, re.S)
    assert len(runs) == 2
    monkeypatch.chdir(ROOT)
    for command, pasted in runs:
        result = run(*shlex.split(command)[1:])
        assert result.exit_code == 0, result.stderr
        assert_same_text(pasted, result.stdout)  # else paste the output of `command` again


@pytest.mark.parametrize(("rank", "lines"), [("0", 1), ("1", 0)])
def test_explain_refuses_torchrun_with_one_line_from_rank_0(
    monkeypatch: pytest.MonkeyPatch, rank: str, lines: int
) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", rank)
    result = run("explain", "nothing.safetensors", "--data", "nothing.csv")
    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == lines
    if lines:
        assert "explain: not supported under torchrun (WORLD_SIZE=2): it runs in one process" in result.stderr
