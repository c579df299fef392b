"""The promotion gate: its truth table end to end, thresholds, verdict line and exit codes.

The models output a constant c (a Linear layer with zero weight and bias c), so with the L1
loss item i costs exactly |y_i - c| and every figure below is worked out by hand.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import evalloss
from evalloss import gate
from evalloss.gate import Threshold, parse_threshold
from evalloss.render.cells import verdict
from evalloss.report import Report
from tests import nets
from tests.conftest import net, run

# y = 1, 2, 3, 4: the baseline (c = 0) costs 2.5 per item; c = 0.5 costs 2.0 on every
# item 0.5 less (improvement 0.5 = 20% of 2.5); c = -0.25 costs 2.75 (0.25 = 10% worse).
TARGETS = [1, 2, 3, 4]


@pytest.fixture
def constant(save) -> Callable[[float, str], Path]:  # type: ignore[no-untyped-def]
    def make(c: float, name: str) -> Path:
        model = nets.linear(features=1, outputs=1)
        with torch.no_grad():
            model.weight.zero_()
            model.bias.fill_(c)
        return save(model, name, loss="l1")  # type: ignore[no-any-return]

    return make


@pytest.fixture
def targets(write_csv) -> Callable[[list[float]], Path]:  # type: ignore[no-untyped-def]
    return lambda ys: write_csv([[0, y] for y in ys], ["x", "y"], name=f"d{len(ys)}.csv")  # type: ignore[no-any-return]


def _compare(checkpoints: list[Path], data: Path, **options: Any) -> Report:
    return evalloss.compare(
        checkpoints, data=data, model=net("linear"), model_kwargs={"features": 1}, **options
    )


def _checks(report: Report) -> dict[str, bool]:
    assert report.gate is not None
    return {c.rule: c.passed for c in report.gate.checks}


@pytest.mark.parametrize(
    ("candidate", "threshold", "passed"),
    [
        (0.5, 0.4, True),  # improvement 0.5 above the margin
        (0.5, 0.5, False),  # equal: strictly better is needed
        (0.5, 0.6, False),  # below
        (0.5, "19%", True),  # 19% of 2.5 = 0.475
        (0.5, "20%", False),  # 20% of 2.5 = 0.5, equal
        (0.5, "21%", False),
        (0.5, 0, True),  # strictly lower
        (0.0, 0, False),  # a tie fails
        (0.0, "0%", False),
        (-0.25, -0.3, True),  # a regression of 0.25 tolerated up to 0.3
        (-0.25, -0.25, False),  # ... but not up to exactly 0.25
        (-0.25, "-11%", True),  # -11% of 2.5 = -0.275
        (-0.25, "-10%", False),  # -0.25, equal
        (-0.25, -0.2, False),
    ],
)
def test_min_improvement_truth_table(constant, targets, candidate, threshold, passed) -> None:  # type: ignore[no-untyped-def]
    base, cand = constant(0.0, "base"), constant(candidate, "cand")
    report = _compare([cand], targets(TARGETS), baseline=base, min_improvement=threshold)
    assert report.gate is not None
    assert report.gate.passed is passed
    assert _checks(report) == {"min-improvement": passed}
    assert report.gate.winner == str(cand) and report.gate.baseline == str(base)
    by_name = {m.name: m for m in report.models}
    assert by_name["base"].loss_per_item == 2.5
    assert by_name["cand"].vs_baseline is not None
    assert by_name["cand"].vs_baseline.delta == -candidate  # y > c: every item gains c


def test_nan_candidate_never_wins_or_passes(constant, targets) -> None:  # type: ignore[no-untyped-def]
    base, nan = constant(0.0, "base"), constant(float("nan"), "nan")
    data = targets(TARGETS)
    with pytest.warns(evalloss.EvallossWarning, match="NaN or Inf weights"):
        alone = _compare([nan], data, baseline=base, min_improvement=-100, max_loss=1e9)
    assert alone.gate is not None and not alone.gate.passed and alone.gate.winner is None
    assert _checks(alone) == {"min-improvement": False, "max-loss": False}
    assert "no model besides the baseline has a finite loss" in alone.gate.checks[0].detail
    assert verdict(alone) == "FAIL  no model besides the baseline has a finite loss"
    # next to a finite candidate, the finite one wins (NaN ranks last)
    good = constant(0.5, "good")
    with pytest.warns(evalloss.EvallossWarning, match="NaN or Inf weights"):
        both = _compare([nan, good], data, baseline=base, min_improvement=0.4)
    assert both.gate is not None and both.gate.passed and both.gate.winner == str(good)
    assert [m.name for m in both.models] == ["good", "base", "nan"]


def test_nan_baseline_counts_as_infinity(constant, targets) -> None:  # type: ignore[no-untyped-def]
    base, cand = constant(float("nan"), "base"), constant(-0.25, "cand")
    with pytest.warns(evalloss.EvallossWarning, match="NaN or Inf weights"):
        report = _compare(
            [cand],
            targets(TARGETS),
            baseline=base,
            min_improvement="50%",
            require_significant=True,
            max_loss=2.5,
        )
    assert report.gate is not None
    assert _checks(report) == {
        "min-improvement": True,
        "max-loss": False,  # 2.75 > 2.5: the winner's own loss still counts
        "require-significant": True,
    }
    assert report.models[-1].name == "base" and report.models[-1].loss_per_item is None
    line = verdict(report)
    assert line is not None and line.startswith("FAIL  cand beats baseline base, whose loss")


def test_three_candidates_only_the_winner_is_gated(constant, targets) -> None:  # type: ignore[no-untyped-def]
    base = constant(0.0, "base")
    best, second, worst = constant(0.5, "best"), constant(0.25, "second"), constant(-1.0, "worst")
    data = targets(TARGETS)
    report = _compare([worst, second, best], data, baseline=base, min_improvement=0.4)
    assert report.gate is not None and report.gate.passed
    assert report.gate.winner == str(best)
    # the second-best alone would fail the same gate
    alone = _compare([second], data, baseline=base, min_improvement=0.4)
    assert alone.gate is not None and not alone.gate.passed


@pytest.mark.parametrize(("limit", "passed"), [(2.0, True), (2.1, True), (1.99, False)])
def test_max_loss_without_a_baseline(constant, targets, limit: float, passed: bool) -> None:  # type: ignore[no-untyped-def]
    data = targets(TARGETS)
    report = _compare([constant(0.0, "a"), constant(0.5, "b")], data, max_loss=limit)
    assert report.gate is not None and report.gate.baseline is None
    assert report.gate.winner is not None and report.gate.winner.endswith("b.safetensors")
    assert _checks(report) == {"max-loss": passed}
    assert all(m.vs_baseline is None and not m.is_baseline for m in report.models)
    assert "vs_baseline" not in report.to_dict()["models"][0]


def test_max_loss_with_a_baseline_judges_the_winner_not_the_baseline(constant, targets) -> None:  # type: ignore[no-untyped-def]
    base, cand = constant(0.0, "base"), constant(-0.25, "cand")  # 2.5 and 2.75
    report = _compare([cand], targets(TARGETS), baseline=base, max_loss=2.6)
    assert report.gate is not None and report.gate.winner == str(cand)
    assert [m.name for m in report.models] == ["base", "cand"]  # the baseline ranks first
    assert _checks(report) == {"max-loss": False}
    report = _compare([cand], targets(TARGETS), baseline=base, max_loss=2.75)
    assert _checks(report) == {"max-loss": True}


# c = 0.5 against c = 0 on y = 1, 2, -1: differences -0.5, -0.5, +0.5 (mean -1/6). Three items
# leave the interval wide; the same pattern 300 times makes it narrow.
@pytest.mark.parametrize(("repeat", "passed"), [(1, False), (300, True)])
def test_require_significant_needs_enough_items(constant, targets, repeat, passed) -> None:  # type: ignore[no-untyped-def]
    base, cand = constant(0.0, "base"), constant(0.5, "cand")
    report = _compare([cand], targets([1, 2, -1] * repeat), baseline=base, require_significant=True)
    assert _checks(report) == {"require-significant": passed}
    vs = report.models[0].vs_baseline
    assert vs is not None and vs.ci95 is not None
    assert vs.delta == pytest.approx(-1 / 6, rel=1e-12)
    assert (vs.ci95[1] < 0) is passed
    assert vs.wins == pytest.approx(2 / 3)


def test_require_significant_uses_the_min_improvement_as_margin(constant, targets) -> None:  # type: ignore[no-untyped-def]
    base, cand = constant(0.0, "base"), constant(0.5, "cand")
    data = targets([1, 2, -1] * 300)  # upper end of the interval about -0.13
    report = _compare([cand], data, baseline=base, require_significant=True, min_improvement=0.1)
    assert _checks(report) == {"min-improvement": True, "require-significant": True}
    report = _compare([cand], data, baseline=base, require_significant=True, min_improvement=0.15)
    assert _checks(report) == {"min-improvement": True, "require-significant": False}


def test_require_significant_with_one_item_fails(constant, targets) -> None:  # type: ignore[no-untyped-def]
    base, cand = constant(0.0, "base"), constant(0.5, "cand")
    report = _compare([cand], targets([3]), baseline=base, require_significant=True)
    assert report.gate is not None and not report.gate.passed
    assert report.gate.checks[0].detail == "no 95% CI (only 1 item)"


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("0.01", Threshold(0.01)),
        ("2%", Threshold(2.0, percent=True)),
        (" -1.5 % ", Threshold(-1.5, percent=True)),
        ("0", Threshold(0.0)),
        ("1e-3", Threshold(0.001)),
    ],
)
def test_parse_threshold(text: str, want: Threshold) -> None:
    assert parse_threshold(text) == want


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "%", "2%%", "abc", "", "1,5", "NaN%"])
def test_parse_threshold_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="is not"):
        parse_threshold(text)


def test_meaning_checks_are_option_errors_for_api_callers() -> None:
    with pytest.raises(evalloss.OptionError, match="needs --baseline") as info:
        gate.rules(baseline=False, min_improvement=0.1)
    assert info.value.key == "--min-improvement" and info.value.exit_code == 2
    with pytest.raises(evalloss.OptionError, match="needs --baseline"):
        gate.rules(baseline=False, require_significant=True)
    with pytest.raises(evalloss.OptionError, match="not a finite number"):
        gate.rules(baseline=True, min_improvement=float("nan"))
    with pytest.raises(evalloss.OptionError, match="percentage"):
        gate.rules(baseline=False, max_loss="5%")
    with pytest.raises(evalloss.OptionError, match="expected a number"):
        gate.rules(baseline=True, min_improvement=True)  # type: ignore[arg-type]
    assert gate.rules(baseline=True) is None
    assert gate.rules(baseline=False, max_loss="0.5") == gate.Rules(max_loss=0.5)


def test_baseline_only_with_a_gate_is_a_usage_error(constant, targets) -> None:  # type: ignore[no-untyped-def]
    base = constant(0.0, "base")
    with pytest.raises(evalloss.OptionError, match="the baseline is the only checkpoint"):
        _compare([base], targets(TARGETS), baseline=base, max_loss=3)


def test_verdict_lines(constant, targets) -> None:  # type: ignore[no-untyped-def]
    base, cand = constant(0.0, "base"), constant(0.5, "cand")
    data = targets([1, 2, -1] * 300)
    passed = _compare([cand], data, baseline=base, min_improvement="5%", require_significant=True)
    line = verdict(passed)
    assert line is not None
    vs = passed.models[0].vs_baseline
    assert vs is not None and vs.ci95 is not None and vs.p_value is not None
    # baseline loss per item (1 + 2 + 1) / 3 = 4/3, so 5% is 0.0667; delta -1/6 = -0.167
    assert line.startswith("PASS  cand beats baseline base by 0.167 (12.5%), 95% CI [")
    assert f"p = {vs.p_value:.0e}" in line
    assert "; improvement 0.167 > 0.0667 (5% of 1.33); 95% CI upper end " in line
    failed = _compare([cand], data, baseline=base, min_improvement="20%")
    assert verdict(failed) == (
        "FAIL  cand beats baseline base by 0.167 (12.5%), "
        f"95% CI [{failed.models[0].vs_baseline.ci95[0]:.3g}, "  # type: ignore[union-attr, index]
        f"{failed.models[0].vs_baseline.ci95[1]:.3g}], "  # type: ignore[union-attr, index]
        f"p = {failed.models[0].vs_baseline.p_value:.0e}; "  # type: ignore[union-attr]
        "min-improvement failed: improvement 0.167 is not > 0.267 (20% of 1.33)"
    )
    no_gate = _compare([cand], data, baseline=base)
    assert no_gate.gate is None
    assert (verdict(no_gate) or "").startswith("cand beats baseline base by 0.167")
    assert verdict(_compare([cand], data)) is None


def _cli(*args: object) -> Any:
    return run("compare", *args, "--model", net("linear"), "--model-kwargs", '{"features": 1}')


def test_exit_codes_through_the_cli(constant, targets, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base, cand, data = constant(0.0, "base"), constant(0.5, "cand"), targets(TARGETS)
    ok = _cli(cand, "--data", data, "--baseline", base, "--min-improvement", "19%")
    assert ok.exit_code == 0, ok.stderr
    assert ok.stderr == ""
    lines = ok.stdout.splitlines()
    top = next(i for i, line in enumerate(lines) if line.split()[:2] == ["rank", "model"]) + 2
    assert lines[top].split() == ["1", "cand", "2", "8", "4", "-"]
    assert lines[top + 1].split() == ["2", "base", "(baseline)", "2.5", "10", "4", "-"]
    assert ["cand", "-0.5", "-20.00%", "[-0.5,", "-0.5]", "0", "100.0%"] in [
        line.split() for line in lines
    ]
    assert lines[-1] == (
        "PASS  cand beats baseline base by 0.5 (20.0%), 95% CI [-0.5, -0.5], p = 0; "
        "improvement 0.5 > 0.475 (19% of 2.5)"
    )
    assert max(len(line) for line in lines[2:-2]) <= 80  # the tables, not title and verdict

    failed = _cli(cand, "--data", data, "--baseline", base, "--min-improvement", "20%")
    assert failed.exit_code == 1
    assert failed.stderr == ""
    assert failed.stdout.splitlines()[-1].startswith("FAIL  ")

    out = tmp_path / "report.json"
    as_json = _cli(cand, "--data", data, "--baseline", base, "--max-loss", "1", "-o", out,
                   "--format", "json")  # fmt: skip
    assert as_json.exit_code == 1 and as_json.stdout == ""
    assert as_json.stderr.startswith("FAIL  ") and "max-loss failed" in as_json.stderr
    assert '"passed": false' in out.read_text()

    negative = _cli(cand, "--data", data, "--baseline", base, "--min-improvement", "-1%")
    assert negative.exit_code == 0, negative.stderr


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--min-improvement", "0.1"], "--min-improvement: needs --baseline"),
        (["--require-significant"], "--require-significant: needs --baseline"),
        (["--baseline", "B", "--min-improvement", "nan"], "'nan' is not a finite number"),
        (["--baseline", "B", "--min-improvement", "inf"], "'inf' is not a finite number"),
        (["--baseline", "B", "--min-improvement", "2%%"], "is not a number or a percentage"),
        (["--baseline", "B", "--min-improvement", "two%"], "is not a number or a percentage"),
        (["--max-loss", "5%"], "'5%' is a percentage; give an absolute number"),
        (["--max-loss", "-inf"], "'-inf' is not a finite number"),
    ],
)
def test_usage_errors_are_exit_2(constant, targets, options: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    base, cand, data = constant(0.0, "base"), constant(0.5, "cand"), targets(TARGETS)
    args = [str(base) if a == "B" else a for a in options]
    result = _cli(cand, "--data", data, *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("evalloss: error: ") and message in result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_docs_example_verdict_is_a_real_run() -> None:
    """docs/gating.md shows the verdict of a run on the shipped example: it stays true."""
    root = Path(__file__).resolve().parents[1]
    example = root / "checkpoints"
    shown = [
        line
        for line in (root / "docs" / "gating.md").read_text(encoding="utf-8").splitlines()
        if line.startswith(("PASS  ", "FAIL  "))
    ]
    report = evalloss.compare(
        [example / "bs10.safetensors"],
        data=example / "train.csv",
        baseline=example / "bs50.safetensors",
        min_improvement="1%",
        require_significant=True,
    )
    assert shown == [verdict(report)]
