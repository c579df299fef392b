"""Paired statistics (`PairedSum`, `vs_baseline`) against independent computations.

Oracles: a hand-worked 3-item example (Student's t with 2 degrees of freedom has a closed
form), the textbook formula written here with `statistics` (exact rational arithmetic), and
scipy.stats.ttest_rel on the per-item losses.
"""

from __future__ import annotations

import math
import statistics
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

import evalloss
from evalloss.report import Comparison
from evalloss.stats.paired import PairedSum, _squares
from tests import nets, oracles
from tests.conftest import data_set, seeded_mlps, xy_csv


def _paired(losses: list[float], baseline: list[float], chunk: int = 1000) -> PairedSum:
    paired = PairedSum()
    for i in range(0, len(losses), chunk):
        paired.add(np.array(losses[i : i + chunk]), np.array(baseline[i : i + chunk]))
    return paired


def _textbook(losses: list[float], baseline: list[float]) -> Comparison:
    """The paired t interval and test as a statistics textbook writes them."""
    d = [a - b for a, b in zip(losses, baseline, strict=True)]
    n = len(d)
    mean = statistics.fmean(d)
    se = statistics.stdev(d) / math.sqrt(n)
    t = mean / se
    crit = stats.t.ppf(0.975, n - 1)
    return Comparison(
        delta=mean,
        relative=mean / statistics.fmean(baseline),
        ci95=(mean - crit * se, mean + crit * se),
        p_value=2 * stats.t.sf(abs(t), n - 1),
        wins=sum(x < 0 for x in d) / n,
    )


def _close(got: Comparison, want: Comparison, rel: float = 1e-9) -> None:
    assert got.delta == pytest.approx(want.delta, rel=rel)
    assert got.relative == pytest.approx(want.relative, rel=rel)
    assert got.ci95 is not None and want.ci95 is not None
    assert got.ci95 == pytest.approx(want.ci95, rel=rel)
    assert got.p_value == pytest.approx(want.p_value, rel=1e-6)
    assert got.wins == want.wins


def test_hand_worked_three_items() -> None:
    # d = (1-2, 2-2, 3-5) = (-1, 0, -2): mean -1, squared deviations 0+1+1 -> sd 1,
    # se 1/sqrt(3), t = -sqrt(3), 2 degrees of freedom. For df = 2, the t CDF is
    # 1/2 + t / (2 sqrt(2 + t^2)) and its 0.975 quantile is 0.95 * sqrt(2 / (1 - 0.95^2)).
    got = _paired([1.0, 2.0, 3.0], [2.0, 2.0, 5.0]).comparison(3.0)
    crit = 0.95 * math.sqrt(2 / (1 - 0.95**2))  # 4.302652...
    assert got.delta == -1.0
    assert got.relative == pytest.approx(-1 / 3, rel=1e-15)
    assert got.ci95 == pytest.approx((-1 - crit / math.sqrt(3), -1 + crit / math.sqrt(3)))
    assert got.p_value == pytest.approx(1 - math.sqrt(3) / math.sqrt(5), rel=1e-12)  # 0.2254
    assert got.wins == pytest.approx(2 / 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk", [1, 7, 1000])
def test_matches_scipy_ttest_rel_and_the_textbook(seed: int, chunk: int) -> None:
    rng = np.random.default_rng(seed)
    baseline = rng.gamma(2.0, 0.5, 200)
    losses = baseline + rng.normal(-0.02 * seed, 0.1, 200)
    got = _paired(losses.tolist(), baseline.tolist(), chunk).comparison(float(baseline.mean()))
    _close(got, _textbook(losses.tolist(), baseline.tolist()))
    scipy_result = stats.ttest_rel(losses, baseline)
    interval = scipy_result.confidence_interval(0.95)
    assert got.p_value == pytest.approx(scipy_result.pvalue, rel=1e-9)
    assert got.ci95 == pytest.approx((interval.low, interval.high), rel=1e-9)


def test_spread_is_exact_where_the_naive_formula_cancels() -> None:
    # Differences of about 1e6 that vary by about 1e-4: sum(d^2) - sum(d)^2/n in floats
    # loses every digit; statistics.stdev works in exact fractions.
    rng = np.random.default_rng(3)
    baseline = np.full(500, 1e6)
    losses = 2e6 + np.round(rng.normal(0, 1e-4, 500), 10)
    got = _paired(losses.tolist(), baseline.tolist(), 64).comparison(1e6)
    _close(got, _textbook(losses.tolist(), baseline.tolist()), rel=1e-12)
    naive = (np.sum((losses - baseline) ** 2) - np.sum(losses - baseline) ** 2 / 500) / 499
    assert naive != pytest.approx(statistics.variance((losses - baseline).tolist()), rel=0.1)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=60), st.integers(1, 9))
def test_merge_and_state_give_the_same_figures_as_one_pass(values: list[float], k: int) -> None:
    baseline = [abs(v) / 3 + 1 for v in values]
    whole = _paired(values, baseline).comparison(1.0)
    shards = [_paired(values[i::k] or [], baseline[i::k] or []) for i in range(k)]
    merged = PairedSum()
    for shard in reversed(shards):
        merged.merge(shard)  # through its plain `state`
    assert merged.comparison(1.0) == whole


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.lists(st.floats(-1e150, 1e150), max_size=40))
def test_squares_are_split_exactly(values: list[float]) -> None:
    hi, lo = _squares(np.array(values, dtype=np.float64))
    for h, low, d in zip(hi.tolist(), lo.tolist(), values, strict=True):
        if abs(d) > 1e-140:  # the low part of a tinier square underflows
            assert Fraction(h) + Fraction(low) == Fraction(d) ** 2


def test_state_is_plain_data() -> None:
    state = _paired([1.0, 2.5], [2.0, 2.0]).state()

    def plain(value: object) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return isinstance(value, (int, float, bool))

    assert plain(state)


def test_degenerate_cases() -> None:
    nothing = Comparison(delta=None, relative=None, ci95=None, p_value=None, wins=None)
    assert PairedSum().comparison(1.0) == nothing  # no items
    one = _paired([1.0], [3.0]).comparison(3.0)
    assert one == Comparison(delta=-2.0, relative=-2 / 3, ci95=None, p_value=None, wins=1.0)
    # the same difference on every item: the t-test's limit, an interval of width zero
    shifted = _paired([0.5, 1.5, 2.5], [1.0, 2.0, 3.0]).comparison(2.0)
    assert shifted == Comparison(
        delta=-0.5, relative=-0.25, ci95=(-0.5, -0.5), p_value=0.0, wins=1.0
    )
    same = _paired([0.1, 0.7], [0.1, 0.7]).comparison(0.4)
    assert same == Comparison(delta=0.0, relative=0.0, ci95=(0.0, 0.0), p_value=1.0, wins=0.0)
    # a non-finite loss on either side, on any item: nothing is known
    assert _paired([1.0, math.nan], [1.0, 2.0]).comparison(1.5) == nothing
    assert _paired([1.0, 2.0], [math.inf, 2.0]).comparison(None) == nothing
    # relative needs a finite, non-zero baseline loss
    assert _paired([1.0, 2.0], [0.0, 0.0]).comparison(0.0).relative is None


def _per_item(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    with torch.no_grad():
        outputs = model.double()(x.double()).tolist()
    return [
        oracles.item_loss("cross-entropy", o, [t]) for o, t in zip(outputs, y.tolist(), strict=True)
    ]


@pytest.mark.parametrize("listed", [True, False])
def test_compare_vs_baseline_matches_scipy_on_the_oracle_losses(
    write_csv, save, listed: bool
) -> None:  # type: ignore[no-untyped-def]
    x, y = data_set(97)
    path = xy_csv(write_csv, x, y)
    models, ckpts = seeded_mlps(save)
    per_item = [_per_item(m, x, y) for m in models]
    report = evalloss.compare(
        ckpts if listed else ckpts[1:],
        data=path,
        loss="cross-entropy",
        batch_size=10,
        precision="float64",
        baseline=ckpts[0],
    )
    assert len(report.models) == 3
    by_name = {m.name: m for m in report.models}
    assert by_name["m0"].is_baseline and by_name["m0"].vs_baseline is None
    assert (
        report.to_dict()["models"][[m.name for m in report.models].index("m0")]["vs_baseline"]
        is None
    )
    for i in (1, 2):
        got = by_name[f"m{i}"].vs_baseline
        assert got is not None and not by_name[f"m{i}"].is_baseline
        _close(got, _textbook(per_item[i], per_item[0]), rel=1e-9)
        scipy_result = stats.ttest_rel(per_item[i], per_item[0])
        assert got.p_value == pytest.approx(scipy_result.pvalue, rel=1e-6)
        assert got.delta == pytest.approx(
            (by_name[f"m{i}"].loss_per_item or 0) - (by_name["m0"].loss_per_item or 0), rel=1e-12
        )


def test_baseline_listed_under_another_spelling_is_not_added_twice(
    write_csv, save, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    x, y = data_set(8)
    path = xy_csv(write_csv, x, y)
    a, b = save(nets.mlp(), "a"), save(nets.mlp(), "b")
    monkeypatch.chdir(a.parent)
    report = evalloss.compare(["a.safetensors", b], data=path, loss="cross-entropy", baseline=a)
    assert len(report.models) == 2
    assert [m.path for m in report.models if m.is_baseline] == ["a.safetensors"]


def test_nonfinite_baseline_gives_null_comparisons(write_csv, save) -> None:  # type: ignore[no-untyped-def]
    x, y = data_set(12)
    path = xy_csv(write_csv, x, y)
    bad = nets.mlp()
    with torch.no_grad():
        bad[2].bias.fill_(float("nan"))
    with pytest.warns(evalloss.EvallossWarning, match="NaN or Inf weights"):
        report = evalloss.compare(
            [save(nets.mlp(), "good")],
            data=path,
            loss="cross-entropy",
            baseline=save(bad, "bad"),
        )
    good = report.to_dict()["models"][0]
    assert good["name"] == "good"
    assert good["vs_baseline"] == {
        "delta": None,
        "relative": None,
        "ci95": None,
        "p_value": None,
        "wins": None,
    }


def test_the_t_interval_does_not_import_scipy_stats() -> None:
    """scipy.stats takes about a second to import: start-up every gated run would pay."""
    code = ("import sys; from evalloss.stats.paired import t_interval; t_interval(1.0, 0.5, 10);"
            "assert 'scipy.stats' not in sys.modules, 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
