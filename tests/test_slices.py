"""Slices (``--slice``): per-slice figures against independent oracles, Holm by hand, the
slice gate on constructed data, every format, and bad input as one exit-2 line."""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from scipy import stats

import evalloss
from evalloss import render
from evalloss.render import junit
from evalloss.slices.sums import holm
from tests import nets
from tests.conftest import run

N = 400


def _data(tmp_path: Path, n: int = N, seed: int = 0) -> tuple[Path, dict[str, np.ndarray]]:
    """Features f0..f2, a string column with missing values (empty cells) and one value
    that holds an escape character, an integer column, a float column, and the label."""
    g = np.random.default_rng(seed)
    cols = {
        "f0": np.round(g.normal(size=n), 4), "f1": np.round(g.normal(size=n), 4),
        "f2": np.round(g.normal(size=n), 4),
        "region": g.choice(["eu", "us", "", "a\x1b[31mb"], n),
        "tier": g.integers(0, 3, n), "length": np.round(g.gamma(2.0, size=n), 3),
        "label": g.integers(0, 3, n),
    }  # fmt: skip
    path = tmp_path / "d.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(list(cols))
        for i in range(n):
            writer.writerow([cols[c][i] for c in cols])
    return path, cols


def _models(tmp_path: Path, count: int = 2) -> tuple[list[torch.nn.Module], list[str]]:
    models, paths = [], []
    for seed in range(count):
        torch.manual_seed(seed)
        models.append(nets.mlp())
        paths.append(str(tmp_path / f"m{seed}.safetensors"))
        evalloss.save(models[-1], paths[-1], loss="cross-entropy", target="label")
    return models, paths


def _item_losses(model: torch.nn.Module, cols: dict[str, np.ndarray]) -> np.ndarray:
    """The oracle: each row's cross-entropy in float64 from the model's float64 outputs."""
    x = torch.tensor(np.stack([cols["f0"], cols["f1"], cols["f2"]], axis=1), dtype=torch.float64)
    with torch.no_grad():
        out = model.double()(x)
    y = torch.tensor(cols["label"])
    return torch.nn.functional.cross_entropy(out, y, reduction="none").numpy(), (
        out.argmax(1) == y
    ).numpy()


FEATURES = ["f0", "f1", "f2"]


def test_per_slice_figures_equal_a_float64_group_by(tmp_path: Path) -> None:
    path, cols = _data(tmp_path)
    models, paths = _models(tmp_path)
    report = evalloss.compare(paths[:1], baseline=paths[1], data=path, feature=FEATURES,
                              slice=["region", "tier"], precision="float64",
                              batch_size=37)  # fmt: skip
    losses = [_item_losses(m, cols) for m in models]
    region = np.where(cols["region"] == "", None, cols["region"]).tolist()
    keys = {"region": region, "tier": [str(t) for t in cols["tier"]]}  # CSV: values are text
    for model in report.models:
        i = paths.index(model.path)
        loss, hits = losses[i]
        other = losses[1 - i][0]
        assert {s.column for s in model.slices} == {"region", "tier"}
        for piece in model.slices:
            mask = np.array([v == piece.value for v in keys[piece.column]])
            assert piece.items == int(mask.sum()) == piece.weight
            assert piece.loss_sum == pytest.approx(math.fsum(loss[mask]), rel=1e-12)
            assert piece.loss_per_item == pytest.approx(loss[mask].mean(), rel=1e-12)
            assert piece.accuracy == pytest.approx(hits[mask].mean(), rel=1e-12)
            if model.is_baseline:
                assert piece.vs_baseline is None
                continue
            d = loss[mask] - other[mask]
            assert piece.vs_baseline is not None
            assert piece.vs_baseline.delta == pytest.approx(d.mean(), rel=1e-9)
            assert piece.vs_baseline.wins == pytest.approx((d < 0).mean())
            test = stats.ttest_rel(loss[mask], other[mask])
            assert piece.vs_baseline.p_value == pytest.approx(test.pvalue, rel=1e-6)
        for column in ("region", "tier"):  # the slices of a column add up to the whole
            pieces = [s for s in model.slices if s.column == column]
            assert sum(s.items for s in pieces) == model.items == N
            assert model.loss_sum is not None
            total = math.fsum(s.loss_sum or 0.0 for s in pieces)
            assert total == pytest.approx(model.loss_sum, rel=1e-12)
    values = [s.value for s in report.models[0].slices if s.column == "region"]
    assert values[-1] is None  # missing: its own slice, last
    assert set(values) == {"eu", "us", "a\x1b[31mb", None}


def test_bins_are_the_exact_quantiles_of_the_whole_column(tmp_path: Path) -> None:
    path, cols = _data(tmp_path)
    _, paths = _models(tmp_path, 1)
    for data in (path, _as_parquet(path, tmp_path)):
        report = evalloss.compare(paths, data=data, feature=FEATURES, slice=["length"],
                                  slice_bins=4)  # fmt: skip
        x = np.sort(cols["length"])
        edges = np.quantile(x, [0, 0.25, 0.5, 0.75, 1], method="inverted_cdf")
        assert report.slicing[0].edges == pytest.approx(tuple(edges), abs=0)
        pieces = report.models[0].slices
        counts = [int((((x > lo) | (k == 0)) & (x <= hi)).sum())
                  for k, (lo, hi) in enumerate(itertools.pairwise(edges))]  # fmt: skip
        assert [s.items for s in pieces] == counts
        assert [s.range for s in pieces] == list(itertools.pairwise(edges))
        assert pieces[0].value == f"[{float(edges[0])!r}, {float(edges[1])!r}]"


def _as_parquet(path: Path, tmp_path: Path) -> Path:
    from pyarrow import csv as pacsv

    table = pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(strings_can_be_null=True))
    out = tmp_path / "d.parquet"
    pq.write_table(table, out, row_group_size=150)
    return out


def test_holm_against_a_hand_worked_example() -> None:
    # sorted: 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> 0.06)
    assert holm([0.01, 0.04, 0.03, None, 0.005]) == pytest.approx(
        [0.03, 0.06, 0.06, None, 0.02]  # type: ignore[list-item]
    )
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # capped at 1
    assert holm([]) == []


def _gate_data(tmp_path: Path, b_shift: float, seed: int = 1) -> Path:
    """y = 0; the baseline predicts b, the candidate a (mse: losses b**2 and a**2). Group A
    (300 rows): a is small noise, b about 1: the candidate wins. Group B (60 rows): a about
    1 + b_shift, b about 1: the candidate loses by about 2 b_shift, plus noise."""
    g = np.random.default_rng(seed)
    rows = [(g.normal(0, 0.1), 1 + g.normal(0, 0.1), "A") for _ in range(300)]
    rows += [(1 + b_shift + g.normal(0, 0.3), 1 + g.normal(0, 0.3), "B") for _ in range(60)]
    path = tmp_path / "gate.csv"
    path.write_text("a,b,group,y\n" + "".join(f"{a:.5f},{b:.5f},{s},0\n" for a, b, s in rows))
    return path


def _linear(tmp_path: Path, name: str, weights: list[float]) -> str:
    model = torch.nn.Sequential(torch.nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([weights]))
        model[0].bias.zero_()
    path = str(tmp_path / f"{name}.safetensors")
    evalloss.save(model, path, loss="mse", target="y")
    return path


def test_gate_fails_when_the_winner_loses_one_slice(tmp_path: Path) -> None:
    data = _gate_data(tmp_path, b_shift=0.5)
    candidate = _linear(tmp_path, "candidate", [1.0, 0.0])
    baseline = _linear(tmp_path, "baseline", [0.0, 1.0])
    args = ["compare", candidate, "--baseline", baseline, "--data", data, "--feature", "a",
            "--feature", "b", "--slice", "group", "--max-slice-regression", "0.1"]  # fmt: skip
    result = run(*args, "--min-improvement", "0", "--require-significant")
    assert result.exit_code == 1, result.stderr
    line = result.stdout.strip().splitlines()[-1]  # the verdict ends the table
    assert "max-slice-regression failed: group=B: regression" in line
    assert "group=A" not in line.split("max-slice-regression failed")[1]
    assert "min-improvement" not in line.split("failed")[0]  # the average improves
    report = evalloss.compare([candidate], baseline=baseline, data=data, feature=["a", "b"],
                              slice=["group"], max_slice_regression="10%")  # fmt: skip
    assert report.gate is not None and not report.gate.passed
    winner = report.models[0]
    assert winner.path == candidate and winner.vs_baseline is not None
    assert winner.vs_baseline.delta is not None and winner.vs_baseline.delta < 0
    (check,) = report.gate.checks
    assert check.rule == "max-slice-regression" and "group=B" in check.detail
    # a slice under --min-slice-items is not judged
    small = evalloss.compare([candidate], baseline=baseline, data=data, feature=["a", "b"],
                             slice=["group"], max_slice_regression=0.1,
                             min_slice_items=61)  # fmt: skip
    assert small.gate is not None and small.gate.passed
    assert "1 smaller not judged" in small.gate.checks[0].detail


def test_a_regression_within_noise_passes_with_require_significant(tmp_path: Path) -> None:
    data = _gate_data(tmp_path, b_shift=0.03, seed=4)
    candidate = _linear(tmp_path, "candidate", [1.0, 0.0])
    baseline = _linear(tmp_path, "baseline", [0.0, 1.0])
    common = {"baseline": baseline, "data": data, "feature": ["a", "b"], "slice": ["group"],
              "max_slice_regression": 0.0}  # fmt: skip
    plain = evalloss.compare([candidate], **common)  # type: ignore[arg-type]
    assert plain.gate is not None and not plain.gate.passed  # B regresses a little
    piece = next(s for s in plain.models[0].slices if s.value == "B")
    assert piece.vs_baseline is not None and piece.vs_baseline.delta is not None
    assert piece.vs_baseline.delta > 0
    assert piece.p_holm is not None and piece.p_holm >= 0.05
    significant = evalloss.compare([candidate], require_significant=True, **common)  # type: ignore[arg-type]
    assert significant.gate is not None and significant.gate.passed, significant.gate


def test_documents_slices_equal_runs_over_each_slice_alone(tmp_path: Path) -> None:
    """Token documents with a metadata column: each slice's figures are those of a run over
    that slice's documents alone (an independent computation), and the slices add up."""
    from tests import lm

    g = np.random.default_rng(3)
    docs = [g.integers(0, lm.VOCAB, int(g.choice([1, 3, 9, 40]))).tolist() for _ in range(120)]
    source = [str(g.choice(["web", "code"])) if i % 7 else None for i in range(120)]
    pq.write_table(pa.table({"input_ids": docs, "src": source}), tmp_path / "d.parquet",
                   row_group_size=50)  # fmt: skip
    ckpts = []
    for i in range(2):
        torch.manual_seed(i)
        ckpts.append(str(tmp_path / f"lm{i}.safetensors"))
        evalloss.save(lm.Causal(), ckpts[-1], loss="causal-lm")
    model = f"{Path(lm.__file__)}:Causal"
    report = evalloss.compare(ckpts[:1], baseline=ckpts[1], data=tmp_path / "d.parquet",
                              model=model, slice=["src"], context=8, batch_tokens=64,
                              precision="float64")  # fmt: skip
    for value in ("web", "code", None):
        keep = [d for d, s in zip(docs, source, strict=True) if s == value]
        part = tmp_path / f"part-{value}.parquet"
        pq.write_table(pa.table({"input_ids": keep}), part)
        alone = evalloss.compare(ckpts[:1], baseline=ckpts[1], data=part, model=model,
                                 context=8, precision="float64")  # fmt: skip
        for model_alone in alone.models:
            mine = next(m for m in report.models if m.path == model_alone.path)
            piece = next(s for s in mine.slices if s.value == value)
            assert piece.items == model_alone.items
            assert piece.weight == model_alone.tokens
            assert piece.loss_sum == pytest.approx(model_alone.loss_sum, rel=1e-12)
            assert piece.loss_per_token == pytest.approx(model_alone.loss_per_token, rel=1e-12)
            if model_alone.vs_baseline is not None:
                assert piece.vs_baseline is not None
                assert piece.vs_baseline.delta == pytest.approx(
                    model_alone.vs_baseline.delta, rel=1e-9
                )
    json.dumps(report.to_dict(), allow_nan=False)


def test_every_format_shows_slices_escaped(tmp_path: Path) -> None:
    path, _ = _data(tmp_path)
    _, paths = _models(tmp_path)
    report = evalloss.compare(paths[:1], baseline=paths[1], data=path, feature=FEATURES,
                              slice=["region"], max_slice_regression="1%",
                              min_slice_items=1)  # fmt: skip
    table = render.render(report, "table")
    assert "slices of region" in table and "\x1b" not in table and "a\\x1b[31mb" in table
    markdown = render.render(report, "markdown")
    assert "<details><summary>slices of region</summary>" in markdown
    assert "\x1b" not in markdown
    page = render.render(report, "html")
    assert "<h2>Slices</h2>" in page and "\x1b" not in page and "(missing)" in page
    rows = list(csv.DictReader(render.render(report, "csv").splitlines()))
    assert len(rows) == 2 + 2 * 4  # the models, then one row per model and slice
    assert {r["slice.value"] for r in rows[2:]} == {"eu", "us", "a\x1b[31mb", ""}
    document = json.loads(render.render(report, "json"))
    assert {s["column"] for s in document["models"][0]["slices"]} == {"region"}
    assert document["slicing"] == [{"column": "region", "edges": None}]
    xml = junit.render(report)
    assert "max-slice-regression" in xml and "\x1b" not in xml


def test_per_item_export_has_the_slice_columns(tmp_path: Path) -> None:
    path, cols = _data(tmp_path, n=50)
    _, paths = _models(tmp_path)
    out = tmp_path / "items.csv"
    evalloss.compare(paths, data=path, feature=FEATURES, slice=["region", "tier"], per_item=out)
    with out.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["region"] for r in rows] == [v or "" for v in cols["region"].tolist()]
    assert [r["tier"] for r in rows] == [str(t) for t in cols["tier"]]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--slice", "nope"], "d.csv: nope: no such slice column; columns are: "),
        (["--slice", "region", "--slice-bins", "3"], "d.csv: region: --slice-bins needs numbers"),
        (["--slice", "f0", "--slice", "f0"], "--slice: column 'f0' is given twice"),
        (["--slice-bins", "3"], "--slice-bins: needs --slice"),
        (["--max-slice-regression", "0.1", "--baseline", "m1.safetensors"],
         "--max-slice-regression: needs --slice"),
        (["--slice", "region", "--max-slice-regression", "0.1"],
         "--max-slice-regression: needs --baseline"),
    ],
)  # fmt: skip
def test_bad_slice_options_are_one_line_and_exit_2(
    tmp_path: Path, extra: list[str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = _data(tmp_path, n=40)
    _, paths = _models(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = run("compare", paths[0], "--data", path, "--feature", "f0", "--feature", "f1",
                 "--feature", "f2", *extra)  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert expected in result.stderr


@pytest.mark.parametrize("column", ["same", "number"])
def test_all_rows_in_one_slice_is_one_line_and_exit_2(
    tmp_path: Path, column: str, write_csv: Callable[..., Path]
) -> None:
    path = write_csv([[i / 10, 0.5, 1, "x", 7, i % 3] for i in range(40)],
                     header=("f0", "f1", "f2", "same", "number", "label"))  # fmt: skip
    _, paths = _models(tmp_path)
    bins = ["--slice-bins", "4"] if column == "number" else []
    result = run("compare", paths[0], "--data", path, *(a for f in FEATURES
                 for a in ("--feature", f)), "--slice", column, *bins)  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert f"{path}: {column}: all rows in one slice" in result.stderr


def test_models_one_at_a_time_give_the_same_slices(tmp_path: Path) -> None:
    """Models evaluated one after another (their items replayed to the observers): the same
    per-slice figures, paired statistics and accuracy as one pass."""
    path, _ = _data(tmp_path)
    _, paths = _models(tmp_path, 3)
    kwargs = {"baseline": paths[2], "data": path, "feature": FEATURES, "slice": ["region"]}
    one = evalloss.compare(paths[:2], **kwargs).to_dict()  # type: ignore[arg-type]
    apart = evalloss.compare(paths[:2], one_at_a_time=True, **kwargs).to_dict()  # type: ignore[arg-type]
    for a, b in zip(one["models"], apart["models"], strict=True):
        for key in ("seconds",):
            a.pop(key), b.pop(key)
        assert a == b


def test_plot_draws_the_per_slice_deltas(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from evalloss.render import sliceplot

    path, _ = _data(tmp_path, n=80)
    _, paths = _models(tmp_path)
    report = evalloss.compare(paths[:1], baseline=paths[1], data=path, feature=FEATURES,
                              slice=["region"], plot=tmp_path / "p.png")  # fmt: skip
    assert sliceplot.wanted(report)
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.figure import Figure

    ax = Figure().add_subplot()
    sliceplot.draw(ax, report, "red")
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert len(labels) == 4 and labels[-1].startswith("region=")  # worst first, on top
    winner = next(m for m in report.models if not m.is_baseline)
    deltas = {s.value: s.vs_baseline.delta for s in winner.slices if s.vs_baseline}
    top = next(s for s in winner.slices if deltas[s.value] == max(deltas.values()))  # type: ignore[type-var]
    assert labels[-1].startswith(f"region={sliceplot.value(top)}")


REGIONS = ["eu", "", None, "NA", "null", " ", "eu", "", None, "N/A", "", "us"] * 3


def _slices(report: evalloss.Report) -> list[tuple[object, int, float | None]]:
    return sorted(((s.value, s.items, s.loss_sum) for s in report.models[0].slices),
                  key=repr)  # fmt: skip


def test_empty_strings_and_nulls_are_apart_in_every_form(tmp_path: Path) -> None:
    """The same values give the same slices in CSV, Parquet and JSON Lines: a null (in CSV
    an empty cell) is missing; an empty string (in CSV a quoted "") is a value; NA, null and
    N/A are values where they are written as strings."""
    from pyarrow import csv as pacsv

    from tests import lm

    n = len(REGIONS)
    g = np.random.default_rng(5)
    f = g.normal(size=(n, 3))
    table = pa.table({"f0": f[:, 0], "f1": f[:, 1], "f2": f[:, 2], "region": REGIONS,
                      "label": g.integers(0, 3, n)})  # fmt: skip
    pq.write_table(table, tmp_path / "t.parquet", row_group_size=5)
    pacsv.write_csv(table, tmp_path / "t.csv")  # strings quoted: "" for "", nothing for null
    assert b',"",' in (tmp_path / "t.csv").read_bytes() and b',,' in (tmp_path / "t.csv").read_bytes()
    _, paths = _models(tmp_path, 1)
    expected = {v: REGIONS.count(v) for v in REGIONS}
    found = []
    for name in ("t.parquet", "t.csv"):
        report = evalloss.compare(paths, data=tmp_path / name, feature=FEATURES, target=["label"],
                                  slice=["region"], precision="float64")  # fmt: skip
        found.append(_slices(report))
        assert {v: k for v, k, _ in found[-1]} == expected, name
    assert found[0] == found[1]
    docs = [g.integers(0, lm.VOCAB, int(k)).tolist() for k in g.integers(1, 12, n)]
    pq.write_table(pa.table({"input_ids": docs, "region": REGIONS}), tmp_path / "d.parquet",
                   row_group_size=5)  # fmt: skip
    (tmp_path / "d.jsonl").write_text("".join(
        json.dumps({"input_ids": d} | ({} if r is None else {"region": r})) + "\n"
        for d, r in zip(docs, REGIONS, strict=True)))  # fmt: skip
    torch.manual_seed(0)
    evalloss.save(lm.Causal(), tmp_path / "lm.safetensors", loss="causal-lm")
    found = []
    for name in ("d.parquet", "d.jsonl"):
        report = evalloss.compare([tmp_path / "lm.safetensors"], data=tmp_path / name,
                                  model=f"{Path(lm.__file__)}:Causal", slice=["region"],
                                  precision="float64")  # fmt: skip
        found.append(_slices(report))
        assert {v: k for v, k, _ in found[-1]} == expected, name
    assert found[0] == found[1]


def test_the_empty_string_slice_is_shown_as_empty(tmp_path: Path) -> None:
    table = pa.table({"f0": [0.5, 1.0, -1.0, 2.0], "f1": [0.0] * 4, "f2": [1.0] * 4,
                      "region": ["", None, "x", ""], "label": [0, 1, 2, 0]})  # fmt: skip
    pq.write_table(table, tmp_path / "t.parquet")
    _, paths = _models(tmp_path, 1)
    result = run("compare", *paths, "--data", tmp_path / "t.parquet", "--target", "label",
                 "--feature", "f0", "--feature", "f1", "--feature", "f2", "--slice", "region")
    assert result.exit_code == 0, result.stderr
    lines = [line.split()[0] for line in result.stdout.splitlines() if line.startswith("(")]
    assert "(empty)" in lines and "(missing)" in lines, result.stdout
