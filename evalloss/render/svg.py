"""The HTML report's charts as inline SVG: no script, no font or file from the network.

Three charts, each scaled to the page's width (``viewBox``) and drawn in ``currentColor`` where
they are not a model's colour (so they print and follow a dark theme):

- `intervals`: each model's mean paired difference from the baseline with its 95% CI, one
  row per model, the zero line marked;
- `histograms`: one small histogram per model on a shared x axis (log when ``log``), the
  exact figure marked by a dashed line;
- `curves`: lines of points on shared axes (a Trainer run's exact and logged curves).

Callers give plain numbers and already-escaped labels (`escape`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape as _html_escape

from evalloss.errors import one_line

WIDTH = 640  # viewBox units; the SVG scales to the page
LEFT, RIGHT = 12, 12


def escape(text: str) -> str:
    """Untrusted text (a model name, a path) safe in HTML and SVG: control characters made
    visible (`errors.one_line`), then ``&<>"'`` escaped."""
    return _html_escape(one_line(str(text)), quote=True)


@dataclass(frozen=True)
class Interval:
    label: str  # escaped
    delta: float
    low: float
    high: float
    colour: str
    note: str  # escaped: what to print beside the label


@dataclass(frozen=True)
class Histogram:
    label: str  # escaped
    percents: Sequence[float]  # % of items in each bin
    colour: str
    mark: float | None  # the exact figure, drawn dashed


def intervals(rows: Sequence[Interval], axis: str) -> str:
    """Each row: its label and note, then the interval under it (phone-width friendly)."""
    values = [v for r in rows for v in (r.low, r.high, r.delta)] + [0.0]
    scale = _Scale(min(values), max(values), log=False)
    step, top = 46, 10
    height = top + step * len(rows) + 44
    parts = [_svg_open(height, "paired differences from the baseline with 95% CIs")]
    zero = scale.x(0.0)
    parts.append(_line(zero, top, zero, top + step * len(rows), "currentColor", dash="4 3"))
    for i, r in enumerate(rows):
        y = top + step * i
        parts.append(_text(LEFT, y + 14, f"<tspan font-weight='600'>{r.label}</tspan> {r.note}"))
        mid = y + 30
        low, high, point = scale.x(r.low), scale.x(r.high), scale.x(r.delta)
        parts.append(_line(low, mid, high, mid, r.colour, width=3))
        for end in (low, high):
            parts.append(_line(end, mid - 6, end, mid + 6, r.colour, width=2))
        parts.append(f"<circle cx='{point:.1f}' cy='{mid}' r='5' fill='{r.colour}'/>")
    parts += _axis(scale, top + step * len(rows) + 4, axis)
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True)
class Series:
    label: str  # escaped
    points: Sequence[tuple[float, float]]  # (x, y), in x order
    colour: str
    dash: str  # "" for a solid line


def curves(series: Sequence[Series], axis: str, title: str) -> str:
    """Lines of (x, y) points on shared axes (each series' points marked), a legend above."""
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points]
    across = _Scale(min(xs), max(xs), log=False)
    top, bottom = 20 + 20 * len(series), 20 + 20 * len(series) + 180
    low, high = min(ys), max(ys)
    if not high > low:
        low, high = low - 1.0, high + 1.0
    low, high = low - 0.08 * (high - low), high + 0.08 * (high - low)

    def y(v: float) -> float:
        return bottom - (bottom - top) * (v - low) / (high - low)

    parts = [_svg_open(bottom + 48, title)]
    for tick in _nice(low, high, 4):
        parts.append(_line(LEFT, y(tick), WIDTH - RIGHT, y(tick), "currentColor", opacity=0.2))
        parts.append(_text(LEFT, y(tick) - 3, f"{tick:.4g}", size=11))
    for i, s in enumerate(series):
        drawn = " ".join(f"{across.x(a):.1f},{y(b):.1f}" for a, b in s.points)
        dash = f" stroke-dasharray='{s.dash}'" if s.dash else ""
        parts.append(f"<polyline points='{drawn}' fill='none' stroke='{s.colour}' "
                     f"stroke-width='2'{dash}/>")  # fmt: skip
        parts += [f"<circle cx='{across.x(a):.1f}' cy='{y(b):.1f}' r='3.5' fill='{s.colour}'/>"
                  for a, b in s.points]  # fmt: skip
        parts.append(_line(LEFT, 12 + 20 * i, LEFT + 28, 12 + 20 * i, s.colour, width=2,
                           dash=s.dash))  # fmt: skip
        parts.append(_text(LEFT + 36, 16 + 20 * i, s.label, size=13))
    parts += _axis(across, bottom + 4, axis)
    parts.append("</svg>")
    return "".join(parts)


def histograms(panels: Sequence[Histogram], edges: Sequence[float], log: bool, axis: str) -> str:
    """One histogram per panel, stacked, sharing ``edges`` (bin edges) and one x axis."""
    scale = _Scale(edges[0], edges[-1], log=log)
    step, inner = 64, 42
    height = step * len(panels) + 50
    parts = [_svg_open(height, "per-item loss distributions")]
    for i, panel in enumerate(panels):
        top = step * i + 16
        base = top + inner
        peak = max(panel.percents, default=0.0) or 1.0
        points = [f"{scale.x(edges[0]):.1f},{base}"]
        for j, share in enumerate(panel.percents):
            y = base - inner * share / peak
            points += [f"{scale.x(edges[j]):.1f},{y:.1f}", f"{scale.x(edges[j + 1]):.1f},{y:.1f}"]
        points.append(f"{scale.x(edges[-1]):.1f},{base}")
        parts.append(
            f"<polygon points='{' '.join(points)}' fill='{panel.colour}' fill-opacity='0.35' "
            f"stroke='{panel.colour}' stroke-width='1.5'/>"
        )
        parts.append(_line(LEFT, base, WIDTH - RIGHT, base, "currentColor", opacity=0.3))
        if panel.mark is not None and scale.low <= panel.mark <= scale.high:
            x = scale.x(panel.mark)
            parts.append(_line(x, top, x, base, panel.colour, width=2, dash="5 3"))
        parts.append(_text(LEFT, top - 3, panel.label))
    parts += _axis(scale, step * len(panels) + 8, axis)
    parts.append("</svg>")
    return "".join(parts)


class _Scale:
    """Data -> x in the viewBox, linear or log, with a little room at both ends."""

    def __init__(self, low: float, high: float, *, log: bool) -> None:
        if not high > low:
            low, high = low - 1.0, high + 1.0
        self.log = log and low > 0
        self.low, self.high = low, high
        a, b = self._t(low), self._t(high)
        pad = (b - a) * (0.0 if self.log else 0.06)
        self.a, self.b = a - pad, b + pad

    def _t(self, v: float) -> float:
        return math.log10(v) if self.log else v

    def x(self, v: float) -> float:
        if self.log and v <= 0:
            return float(LEFT)
        return LEFT + (WIDTH - LEFT - RIGHT) * (self._t(v) - self.a) / (self.b - self.a)

    def ticks(self) -> list[float]:
        if self.log:
            first, last = math.floor(self.a), math.ceil(self.b)
            ticks = [10.0**k * m for k in range(first, last + 1) for m in (1, 2, 5)]
            inside = [t for t in ticks if self.a <= math.log10(t) <= self.b]
            decades = [t for t in inside if math.log10(t) == round(math.log10(t))]
            return decades if len(decades) >= 2 else inside
        return _nice(self.a, self.b)


def _nice(low: float, high: float, count: int = 6) -> list[float]:
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    start = math.ceil(low / step) * step
    return [start + k * step for k in range(int((high - start) / step) + 1)]


def _axis(scale: _Scale, y: float, label: str) -> list[str]:
    parts = [_line(LEFT, y, WIDTH - RIGHT, y, "currentColor")]
    for t in scale.ticks():
        x = scale.x(t)
        parts.append(_line(x, y, x, y + 5, "currentColor"))
        parts.append(_text(x, y + 18, f"{t:.3g}", anchor="middle", size=12))
    parts.append(_text(WIDTH / 2, y + 36, label, anchor="middle", size=13))
    return parts


def _svg_open(height: float, title: str) -> str:
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {WIDTH} {height:.0f}' "
        f"role='img' aria-label='{title}' class='chart'><title>{title}</title>"
    )


def _line(  # noqa: PLR0913 - an SVG line's attributes
    x1: float, y1: float, x2: float, y2: float, colour: str, *,
    width: float = 1, dash: str = "", opacity: float = 1.0,
) -> str:  # fmt: skip
    extra = f" stroke-dasharray='{dash}'" if dash else ""
    extra += f" stroke-opacity='{opacity}'" if opacity != 1.0 else ""
    return (
        f"<line x1='{x1:.1f}' y1='{y1:.1f}' x2='{x2:.1f}' y2='{y2:.1f}' stroke='{colour}' "
        f"stroke-width='{width}'{extra}/>"
    )


def _text(x: float, y: float, body: str, *, anchor: str = "start", size: int = 14) -> str:
    return (
        f"<text x='{x:.1f}' y='{y:.1f}' font-size='{size}' text-anchor='{anchor}' "
        f"fill='currentColor'>{body}</text>"
    )
