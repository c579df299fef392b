"""``--plot``: the per-item loss distribution of each model, and with a baseline the
distribution of paired differences with the exact mean and its 95% CI marked; beside them,
for two or more Trainer checkpoints, the run's exact curve against its logged one (`curve`).

Needs the optional extra (``pip install 'evalloss[plot]'``: matplotlib). Drawn with the Agg
canvas on a `Figure` object (no pyplot, no global state, no display needed), returned as the
file's bytes (the caller writes them: `run.observers.Taps`). The histograms come from
`run.observers.Sample` (up to 200,000 items, the same items for every model, so differences
stay paired); the means, CIs and p-values printed on the figure are the report's exact
figures over all items.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from evalloss.report import ModelResult, Report



def draw(
    report: Report,
    names: Sequence[str],
    values: npt.NDArray[np.float64],
    seen: int,
    fmt: str = "png",
) -> bytes:
    """``values`` (kept items, one column per name in ``names``) drawn as a ``fmt`` file
    (``png``, ``svg`` or ``pdf``)."""
    from matplotlib.figure import Figure

    order = [names.index(m.name) for m in report.models]  # rank order
    baseline = next((m for m in report.models if m.is_baseline), None)
    rivals = [m for m in report.models if baseline is not None and not m.is_baseline]
    paired = baseline is not None and bool(rivals)
    from evalloss.render import curve, sliceplot

    sliced = paired and sliceplot.wanted(report)
    stepped = curve.drawn(report)  # a Trainer run's exact curve against its logged one
    width = (19 if sliced else 13 if paired else 8) + (6 if stepped else 0)
    fig = Figure(figsize=(width, 5.2), layout="constrained")
    grid = fig.add_gridspec(2, (2 + sliced if paired else 1) + stepped, height_ratios=(3, 1.1))
    if stepped:
        curve.axes(fig.add_subplot(grid[:, -1]), report)
    if paired:
        if sliced:
            sliceplot.draw(fig.add_subplot(grid[:, 2]), report, colours(report)[rivals[0].name])
        _losses(fig.add_subplot(grid[:, 0]), report, names, values, order)
        assert baseline is not None
        base = values[:, names.index(baseline.name)]
        diffs = {m.name: values[:, names.index(m.name)] - base for m in rivals}
        _differences(fig.add_subplot(grid[0, 1]), rivals, baseline, diffs, report)
        _intervals(fig.add_subplot(grid[1, 1]), rivals, report)
    else:
        _losses(fig.add_subplot(grid[:, 0]), report, names, values, order)
    kept = len(values)
    items = f"{_item(report)}s"
    sampled = (
        f"a sample of {kept:,} of {seen:,} {items}" if kept < seen else f"all {seen:,} {items}"
    )
    fig.suptitle(
        f"evalloss: {report.loss} loss per {_per(report)} on {Path(report.data.path).name} "
        f"({sampled})",
        fontsize=12,
    )
    return _saved(fig, fmt)


def _per(report: Report) -> str:
    """What the figure is per: ``token`` for a token loss, else ``item``."""
    return "token" if report.unit == "token" else "item"


def _item(report: Report) -> str:
    """What one sampled value is: a document's (loss per token) for a token loss."""
    return "document" if report.unit == "token" else "item"


def colours(report: Report) -> dict[str, Any]:
    palette = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd",
        "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f",
    ]  # fmt: skip
    chosen: dict[str, Any] = {}
    for i, m in enumerate(report.models):
        chosen[m.name] = "#444444" if m.is_baseline else palette[i % len(palette)]
    return chosen


def _losses(
    ax: Any,
    report: Report,
    names: Sequence[str],
    values: npt.NDArray[np.float64],
    order: Sequence[int],
) -> None:
    """Step histograms of each model's per-item loss (log x when the losses span decades)."""
    import numpy as np

    colour = colours(report)
    finite = values[np.isfinite(values).all(axis=1)]
    log, bins = bin_edges(finite)
    for index, model in zip(order, report.models, strict=True):
        column = finite[:, index]
        weights = np.full(len(column), 100.0 / max(len(column), 1))
        mean = "-" if model.figure is None else f"{model.figure:.4g}"
        label = f"#{model.rank} {model.name}{' (baseline)' if model.is_baseline else ''}: {mean}"
        label += off_axis(column, bins)
        ax.hist(
            column, bins=bins, weights=weights, histtype="step", linewidth=1.8,
            color=colour[model.name], label=label,
        )  # fmt: skip
        if model.figure is not None:
            ax.axvline(model.figure, color=colour[model.name], linestyle="--", linewidth=1)
    if log:
        ax.set_xscale("log")
    per, item = _per(report), _item(report)
    what = f"loss per token of one {item}" if per == "token" else "loss of one item"
    ax.set_xlabel(f"{report.loss} {what}" + (" (log scale)" if log else ""))
    ax.set_ylabel(f"% of {item}s")
    ax.set_title(f"per-{item} loss; dashed: the exact loss per {per}", fontsize=10)
    ax.legend(title=f"rank, model: loss per {per}", fontsize=8, title_fontsize=8, frameon=False)
    ax.grid(alpha=0.25)


def bin_edges(values: npt.NDArray[np.float64]) -> tuple[bool, npt.NDArray[np.float64]]:
    """(log scale?, bin edges) covering the bulk of ``values`` (the rest is counted off-axis)."""
    import numpy as np

    count = int(min(80, max(20, 3 * len(values) ** (1 / 3))))  # more items, finer bins
    if values.size == 0:
        return False, np.linspace(0.0, 1.0, count + 1)
    low, high = float(np.min(values)), float(np.quantile(values, 0.999))
    high = max(high, low + 1e-12)
    positive = values[values > 0]
    if low >= 0 and positive.size:
        floor = float(np.quantile(positive, 0.001))
        if floor > 0 and high / floor > 100:
            return True, np.geomspace(floor, high, count + 1)
    return False, np.linspace(low, high, count + 1)


def off_axis(values: npt.NDArray[np.float64], bins: npt.NDArray[np.float64]) -> str:
    """A legend note for the share of ``values`` outside the drawn range, if it shows."""
    if values.size == 0:
        return ""
    share = float(((values < bins[0]) | (values > bins[-1])).mean())
    return f" ({share:.1%} off the axis)" if share >= 0.0005 else ""


def _differences(
    ax: Any,
    rivals: Sequence[ModelResult],
    baseline: ModelResult,
    diffs: dict[str, npt.NDArray[np.float64]],
    report: Report,
) -> None:
    """Histograms of loss_i(model) - loss_i(baseline): left of 0 the model does better."""
    import numpy as np

    colour = colours(report)
    pooled = np.concatenate([d[np.isfinite(d)] for d in diffs.values()])
    if pooled.size == 0:
        pooled = np.zeros(1)
    edge = float(np.quantile(np.abs(pooled), 0.995)) or 1.0
    count = int(min(80, max(20, 3 * len(pooled) ** (1 / 3))))
    bins = np.linspace(-edge, edge, count + 1)
    for m in rivals:
        d = diffs[m.name]
        d = d[np.isfinite(d)]
        weights = np.full(len(d), 100.0 / max(len(d), 1))
        ax.hist(
            d, bins=bins, weights=weights, histtype="step", linewidth=1.8,
            color=colour[m.name], label=m.name + off_axis(d, bins),
        )  # fmt: skip
        vs = m.vs_baseline
        if vs is not None and vs.delta is not None:
            ax.axvline(vs.delta, color=colour[m.name], linestyle="--", linewidth=1)
        if vs is not None and vs.ci95 is not None:
            ax.axvspan(*vs.ci95, color=colour[m.name], alpha=0.2, linewidth=0)
    ax.axvline(0, color="black", linewidth=1)
    ax.set_title(
        f"paired difference from the baseline {baseline.name}, {_item(report)} by {_item(report)}\n"
        "left of 0: lower loss than the baseline; dashed: mean; band: its 95% CI",
        fontsize=10,
    )
    ax.set_xlabel(f"loss(model) - loss({baseline.name}) for one {_item(report)}")
    ax.set_ylabel(f"% of {_item(report)}s")
    ax.legend(fontsize=8, frameon=False)
    ax.grid(alpha=0.25)


def _intervals(ax: Any, rivals: Sequence[ModelResult], report: Report) -> None:
    """The exact mean difference of each model with its 95% CI, on a scale that shows it."""
    colour = colours(report)
    notes = []
    for y, m in enumerate(reversed(rivals)):
        vs = m.vs_baseline
        if vs is None or vs.delta is None:
            continue
        low, high = vs.ci95 if vs.ci95 is not None else (vs.delta, vs.delta)
        ax.errorbar(
            vs.delta, y, xerr=[[vs.delta - low], [high - vs.delta]], fmt="o",
            color=colour[m.name], capsize=4, markersize=5,
        )  # fmt: skip
        p = "" if vs.p_value is None else f", p {p_text(vs.p_value)}"
        wins = "" if vs.wins is None else f", lower on {vs.wins:.0%} of {_item(report)}s"
        notes.append((vs.delta, y, f"{vs.delta:+.4g} [{low:+.3g}, {high:+.3g}]{p}{wins}"))
    ax.axvline(0, color="black", linewidth=1)
    ax.set_yticks(range(len(rivals)), [m.name for m in reversed(rivals)], fontsize=9)
    ax.set_ylim(-0.6, len(rivals) - 0.1)
    lo, hi = ax.get_xlim()
    for x, y, text in notes:  # above each point, leaning inwards so it stays inside
        inside = "left" if x < (lo + hi) / 2 else "right"
        ax.annotate(text, (x, y), xytext=(0, 7), textcoords="offset points", ha=inside, fontsize=8)
    ax.set_xlabel(
        f"mean difference in loss per {_per(report)} with its 95% CI (exact, all {_item(report)}s)"
    )
    ax.grid(alpha=0.25, axis="x")


def p_text(value: float) -> str:
    """``= 0.03``; below double precision's resolution, ``< 1e-15`` (not a misleading 0)."""
    return "< 1e-15" if value < 1e-15 else f"= {value:.2g}"


def _saved(fig: Any, fmt: str) -> bytes:
    """The figure as the bytes of a ``fmt`` file."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    out = io.BytesIO()
    fig.savefig(out, dpi=120, format=fmt)
    return out.getvalue()
