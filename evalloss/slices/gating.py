"""The per-slice gate rule, ``max-slice-regression X`` (with ``--slice`` and ``--baseline``).

On every slice of at least ``min_slice_items`` items, the winner's regression against the
baseline is its paired ``delta`` on that slice (mean over the slice's items of loss minus
baseline loss; per token for token losses). The rule fails when any such slice regresses by
more than X: X absolute, or ``N%`` of the baseline's figure on that slice. With
``require-significant``, a slice fails only when its regression is also significant after
Holm's adjustment over the slices of its column (``p_holm < 0.05``, delta > 0). The check's
detail names every failing slice with its figures; smaller slices are counted, not judged.
"""

from __future__ import annotations

from dataclasses import replace

from evalloss.errors import one_line
from evalloss.gate import Rules, find_winner, numbers
from evalloss.report import GateCheck, GateResult, ModelResult, SliceResult

MAX_SLICE_REGRESSION = "max-slice-regression"
ALPHA = 0.05  # significance after Holm's adjustment


def extend(result: GateResult, gate: Rules, models: tuple[ModelResult, ...]) -> GateResult:
    """``result`` with the slice rule's check added (unchanged without the rule)."""
    if gate.max_slice_regression is None:
        return result
    check = _check(gate, models)
    checks = (*result.checks, check)
    return replace(result, passed=all(c.passed for c in checks), checks=checks)


def _check(gate: Rules, models: tuple[ModelResult, ...]) -> GateCheck:
    winner = find_winner(models)
    baseline = next((m for m in models if m.is_baseline), None)
    if winner is None or winner.figure is None or baseline is None:
        return GateCheck(MAX_SLICE_REGRESSION, False, "no model besides the baseline has a "
                         "finite loss")  # fmt: skip
    base = {(s.column, _key(s.value)): s for s in baseline.slices}
    failing, judged, small = [], 0, 0
    for piece in winner.slices:
        if piece.items < gate.min_slice_items:
            small += 1
            continue
        judged += 1
        why = _regressed(gate, piece, base.get((piece.column, _key(piece.value))))
        if why:
            failing.append(why)
    note = f"{judged} slices of at least {gate.min_slice_items} items judged"
    if small:
        note += f", {small} smaller not judged"
    if failing:
        return GateCheck(MAX_SLICE_REGRESSION, False, f"{'; '.join(failing)} ({note})")
    return GateCheck(MAX_SLICE_REGRESSION, True, f"no slice regresses by more than "
                     f"{gate.max_slice_regression} ({note})")  # fmt: skip


def _key(value: object) -> tuple[str, object]:
    return (type(value).__name__, value)


def _regressed(gate: Rules, piece: SliceResult, base: SliceResult | None) -> str | None:
    """Why ``piece`` fails the rule (its name and figures), or None when it passes."""
    assert gate.max_slice_regression is not None
    name = f"{one_line(piece.column)}={shown_value(piece.value)}"
    comparison = piece.vs_baseline
    base_figure = None if base is None else base.figure
    if comparison is None or comparison.delta is None or base_figure is None:
        return f"{name}: no finite paired difference"
    limit = gate.max_slice_regression.margin(base_figure)
    delta = comparison.delta
    if delta <= limit:
        return None
    if gate.require_significant and not (piece.p_holm is not None and piece.p_holm < ALPHA):
        return None
    shown = numbers(delta, limit)
    detail = f"{name}: regression {shown[0]} > {shown[1]}"
    if gate.max_slice_regression.percent:
        detail += f" ({gate.max_slice_regression} of {numbers(base_figure)[0]})"
    detail += f", {piece.items} items"
    if piece.p_holm is not None:
        detail += f", Holm p {piece.p_holm:.3g}"
    return detail


def shown_value(value: object) -> str:
    """A slice value for one line of text: ``(missing)`` for None, ``(empty)`` for the empty
    string, escaped otherwise."""
    if value is None or value == "":
        return "(missing)" if value is None else "(empty)"
    return one_line(str(value))
