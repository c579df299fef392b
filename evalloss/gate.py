"""The promotion gate: rules checked against a ranked report, returned as data (`GateResult`).

The winner is the best-ranked model that is not the baseline. A non-finite loss never wins and
never passes; a non-finite baseline counts as +infinity (any finite winner beats it, by any
margin, significantly). Rules, each a `GateCheck` with a human-readable detail:

- ``min-improvement X``: the winner beats the baseline by more than X, strictly (``0`` fails a
  tie; a negative X tolerates a regression of up to -X). X is absolute (``0.01``) or a
  percentage of the baseline's loss per item (``2%``). The improvement is ``-delta``, the mean
  over items of (baseline loss - winner loss).
- ``max-loss X``: the winner's loss per item is at most X.
- ``require-significant``: the upper end of the winner's paired 95% interval for ``delta`` lies
  below ``-margin``, where margin is the min-improvement in absolute terms (0 without one).

Syntax (``parse_threshold``) and meaning (``rules``) are checked here, so API callers get the
same errors as the command line (``OptionError``, exit 2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from evalloss.errors import OptionError
from evalloss.report import GateCheck, GateResult, ModelResult

MIN_IMPROVEMENT = "min-improvement"
MAX_LOSS = "max-loss"
REQUIRE_SIGNIFICANT = "require-significant"
_INFINITE_BASELINE = "the baseline's loss is not finite: it counts as +infinity"


@dataclass(frozen=True)
class Threshold:
    """A finite threshold: absolute, or ``percent`` of the baseline's loss per item."""

    value: float
    percent: bool = False

    def margin(self, baseline_loss: float) -> float:
        """In absolute terms, given the baseline's (finite) loss per item."""
        return self.value * abs(baseline_loss) / 100.0 if self.percent else self.value

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.percent else f"{self.value:g}"


@dataclass(frozen=True)
class Rules:
    """The gate rules asked for; at least one is set."""

    min_improvement: Threshold | None = None
    max_loss: float | None = None
    require_significant: bool = False
    max_slice_regression: Threshold | None = None  # no slice may regress by more
    min_slice_items: int = 30  # slices with fewer items are not judged


def parse_threshold(text: str, *, percent: bool = True) -> Threshold:
    """``"0.01"`` -> absolute, ``"2%"`` -> relative. ValueError (with the message) otherwise."""
    body = text.strip()
    is_percent = body.endswith("%")
    if is_percent:
        if not percent:
            raise ValueError(f"{text!r} is a percentage; give an absolute number")
        body = body[:-1].strip()
    try:
        value = float(body)
    except ValueError:
        kind = "a number or a percentage such as 2%" if percent else "a number"
        raise ValueError(f"{text!r} is not {kind}") from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not a finite number")
    return Threshold(value, is_percent)


def rules(
    *,
    baseline: bool,
    min_improvement: float | str | Threshold | None = None,
    max_loss: float | str | Threshold | None = None,
    require_significant: bool = False,
    max_slice_regression: float | str | Threshold | None = None,
    min_slice_items: int = 30,
) -> Rules | None:
    """The gate asked for, checked for meaning; None when no rule is given."""
    improvement = _threshold(min_improvement, "--min-improvement", percent=True)
    limit = _threshold(max_loss, "--max-loss", percent=False)
    per_slice = _threshold(max_slice_regression, "--max-slice-regression", percent=True)
    for key, given in (
        ("--min-improvement", improvement is not None),
        ("--require-significant", require_significant),
        ("--max-slice-regression", per_slice is not None),
    ):
        if given and not baseline:
            raise OptionError("needs --baseline (the model in production)", key=key)
    if isinstance(min_slice_items, bool) or not isinstance(min_slice_items, int) or (
        min_slice_items < 1
    ):
        raise OptionError("must be a positive whole number", key="--min-slice-items")
    if improvement is None and limit is None and not require_significant and per_slice is None:
        return None
    return Rules(improvement, None if limit is None else limit.value, require_significant,
                 per_slice, min_slice_items)  # fmt: skip


def _threshold(
    value: float | str | Threshold | None, key: str, *, percent: bool
) -> Threshold | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return parse_threshold(value, percent=percent)
        except ValueError as exc:
            raise OptionError(str(exc), key=key) from None
    if isinstance(value, Threshold):
        if value.percent and not percent:
            raise OptionError(f"{value} is a percentage; give an absolute number", key=key)
        number = value.value
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise OptionError(f"expected a number, got {type(value).__name__}", key=key)
    else:
        number = float(value)
        value = Threshold(number)
    if not math.isfinite(number):
        raise OptionError(f"{number} is not a finite number", key=key)
    return value


def evaluate(gate: Rules, models: Sequence[ModelResult]) -> GateResult:
    """Check every rule against ``models`` (in rank order). A failed gate is data."""
    baseline = next((m for m in models if m.is_baseline), None)
    base_path = None if baseline is None else baseline.path
    names = [
        rule
        for rule, on in (
            (MIN_IMPROVEMENT, gate.min_improvement is not None),
            (MAX_LOSS, gate.max_loss is not None),
            (REQUIRE_SIGNIFICANT, gate.require_significant),
        )
        if on
    ]
    winner = find_winner(models)
    if winner is None or winner.figure is None:
        why = "no model besides the baseline" if baseline else "no model"
        why += " has a finite loss" if winner is not None else ""
        checks = tuple(GateCheck(rule, False, why) for rule in names)
        return GateResult(passed=False, winner=None, baseline=base_path, checks=checks)
    base_loss = None if baseline is None else baseline.figure
    infinite_base = baseline is not None and base_loss is None
    margin = 0.0
    if gate.min_improvement is not None and base_loss is not None:
        margin = gate.min_improvement.margin(base_loss)
    found: list[GateCheck] = []
    for rule in names:
        if rule == MAX_LOSS:
            found.append(_max_loss(winner.figure, gate.max_loss))
        elif infinite_base:
            found.append(GateCheck(rule, True, _INFINITE_BASELINE))
        elif rule == MIN_IMPROVEMENT:
            found.append(_min_improvement(winner, base_loss, margin, gate.min_improvement))
        else:
            found.append(_significant(winner, margin))
    return GateResult(
        passed=all(c.passed for c in found),
        winner=winner.path,
        baseline=base_path,
        checks=tuple(found),
    )


def find_winner(models: Sequence[ModelResult]) -> ModelResult | None:
    """The winner: the best-ranked model (``models`` in rank order) that is not the baseline."""
    return next((m for m in models if not m.is_baseline), None)


def improvement(winner: ModelResult, base_loss: float | None) -> float | None:
    """How much lower the winner's loss is than the baseline's: ``-delta``."""
    comparison = winner.vs_baseline
    if comparison is not None and comparison.delta is not None:
        return -comparison.delta
    if winner.figure is None or base_loss is None:
        return None
    return base_loss - winner.figure


def _min_improvement(
    winner: ModelResult, base_loss: float | None, margin: float, threshold: Threshold | None
) -> GateCheck:
    gained = improvement(winner, base_loss)
    if gained is None or base_loss is None:  # unreachable with finite winner and baseline
        return GateCheck(MIN_IMPROVEMENT, False, "no paired difference")
    passed = gained > margin
    shown = numbers(gained, margin)
    detail = f"improvement {shown[0]} {'>' if passed else 'is not >'} {shown[1]}"
    if threshold is not None and threshold.percent:
        detail += f" ({threshold} of {numbers(base_loss)[0]})"
    return GateCheck(MIN_IMPROVEMENT, passed, detail)


def _max_loss(loss: float, limit: float | None) -> GateCheck:
    limit = math.inf if limit is None else limit
    passed = loss <= limit
    shown = numbers(loss, limit)
    return GateCheck(
        MAX_LOSS, passed, f"loss/item {shown[0]} {'<=' if passed else 'is not <='} {shown[1]}"
    )


def _significant(winner: ModelResult, margin: float) -> GateCheck:
    comparison = winner.vs_baseline
    if comparison is None or comparison.ci95 is None:
        why = "only 1 item" if winner.items < 2 else "the differences are out of range"
        return GateCheck(REQUIRE_SIGNIFICANT, False, f"no 95% CI ({why})")
    upper, bound = comparison.ci95[1], 0.0 - margin  # 0.0 - 0.0 is +0.0: no "-0" shown
    passed = upper < bound
    shown = numbers(upper, bound)
    word = "<" if passed else "is not <"
    return GateCheck(REQUIRE_SIGNIFICANT, passed, f"95% CI upper end {shown[0]} {word} {shown[1]}")


def numbers(*values: float) -> list[str]:
    """``values`` with 3 significant digits, or more where needed to tell them apart."""
    for digits in range(3, 18):
        shown = [f"{v:.{digits}g}" for v in values]
        if len(set(shown)) == len(set(values)):
            return shown
    return [repr(v) for v in values]
