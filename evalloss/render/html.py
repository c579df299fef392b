"""``html``: the report as one self-contained page (inline CSS and SVG; no script, no font or
file from the network), readable on a phone and printed.

Sections: the verdict with its rules, the ranked table, the paired differences from the
baseline as intervals (`svg.intervals`), the per-item distributions (`svg.histograms`, from
``report.sample``: the same sample as ``--plot``, kept by ``compare(sample=True)``), slices
(a hook: the report has none yet) and provenance. Every name that came from a file is
escaped (`svg.escape`). ``explain --format html`` wraps its table in `page` too. Jupyter
shows a report as this page (`Report._repr_html_`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from evalloss.render import curve
from evalloss.render.cells import cell, columns, unit, verdict, vs_cells
from evalloss.render.svg import Histogram, Interval, Series, curves, escape, histograms, intervals
from evalloss.report import ModelResult, Report

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# nothing may load or run: a name that slipped past escaping still could not fetch or execute
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

CSS = """
:root{color-scheme:light dark;--fg:#1f2328;--muted:#59636e;--bg:#fff;--card:#f6f8fa;
--line:#d1d9e0;--pass:#1a7f37;--fail:#cf222e;--none:#59636e}
@media (prefers-color-scheme:dark){:root{--fg:#e6edf3;--muted:#9198a1;--bg:#0d1117;
--card:#151b23;--line:#3d444d;--pass:#3fb950;--fail:#f85149;--none:#9198a1}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1100px;margin:0 auto;padding:20px 16px 40px}
h1{font-size:1.5rem;margin:0 0 4px}h2{font-size:1.1rem;margin:28px 0 8px}
.sub,.note,figcaption,footer{color:var(--muted);font-size:.9rem}
code{font:.88em ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere}
.verdict{border:1px solid var(--line);border-left:6px solid var(--none);border-radius:8px;
padding:12px 16px;margin:18px 0;background:var(--card)}
.verdict.pass{border-left-color:var(--pass)}.verdict.fail{border-left-color:var(--fail)}
.badge{display:inline-block;font-weight:700;letter-spacing:.04em;padding:1px 10px;
border-radius:999px;color:#fff;background:var(--none);margin-right:8px}
.pass .badge{background:var(--pass)}.fail .badge{background:var(--fail)}
.verdict p{margin:0}.verdict ul{margin:8px 0 0;padding-left:20px}
li.failed::marker{color:var(--fail)}li.passed::marker{color:var(--pass)}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums;font-size:.93rem}
th,td{padding:6px 8px;border-bottom:1px solid var(--line);text-align:right;white-space:nowrap}
th{font-size:.85rem;color:var(--muted);font-weight:600;white-space:normal;vertical-align:bottom}
th.l,td.l{text-align:left}td.model{white-space:normal;min-width:9em}
.path{display:block;color:var(--muted);font-size:.8rem}
tr.base td{background:var(--card)}
.swatch{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:6px}
svg.chart{width:100%;min-width:540px;height:auto;display:block;font-family:inherit}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0}
dt{color:var(--muted)}dd{margin:0;overflow-wrap:anywhere}
@media (max-width:600px){body{font-size:14px}th,td{padding:5px 6px}}
@media print{body{font-size:11pt;background:#fff;color:#000}main{max-width:none;padding:0}
.scroll{overflow:visible}section{break-inside:avoid}th,td{white-space:normal}}
"""


def render(report: Report) -> str:
    per = unit(report)
    title = f"evalloss: {report.loss} loss per {per} on {Path(report.data.path).name}"
    head = (
        f"<h1>{escape(title)}</h1><p class='sub'>{report.data.items:,} items of "
        f"<code>{escape(report.data.path)}</code> · targets: "
        f"{', '.join(f'<code>{escape(t)}</code>' for t in report.data.targets)} · "
        f"{escape(report.precision)} on {escape(report.device)}</p>"
    )
    body = [head, _verdict(report), _table(report), _intervals(report)]
    body += [_curve(report), _distributions(report), _slices(report), _provenance(report)]
    return page(title, body, report.evalloss_version)


def page(title: str, sections: Sequence[str], version: str) -> str:
    """The HTML document around ``sections`` (already HTML)."""
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
        f"<meta name='generator' content='evalloss {escape(version)}'>"
        f"<title>{escape(title)}</title><style>{CSS}</style></head>\n<body><main>\n"
        + "\n".join(s for s in sections if s)
        + f"\n<footer><p>Written by evalloss {escape(version)}.</p></footer>"
        "\n</main></body></html>\n"
    )


def _verdict(report: Report) -> str:
    line = verdict(report)
    gate = report.gate
    if line is None:
        return ""
    kind, word, text = "none", "", line
    if gate is not None:
        kind = "pass" if gate.passed else "fail"
        word, _, text = line.partition("  ")
    checks = "" if gate is None else "".join(
        f"<li class='{'passed' if c.passed else 'failed'}'><b>{escape(c.rule)}</b> "
        f"{'passed' if c.passed else 'failed'}: {escape(c.detail)}</li>"
        for c in gate.checks
    )  # fmt: skip
    badge = f"<span class='badge'>{escape(word)}</span>" if word else ""
    return (
        f"<section class='verdict {kind}' aria-label='verdict'><p>{badge}{escape(text)}</p>"
        + (f"<ul>{checks}</ul>" if checks else "")
        + "</section>"
    )


def _table(report: Report) -> str:
    fields, names = columns(report)
    heads = list(names)
    if report.has_baseline:
        heads += ["Δ vs baseline", "relative", "95% CI of Δ", "p", "wins"]
    nonfinite = any(m.nonfinite_items for m in report.models)
    heads += [*(["non-finite"] if nonfinite else []), "seconds"]
    colours = _colours(report)
    rows = []
    for m in report.models:
        swatch = f"<span class='swatch' style='background:{colours[m.name]}'></span>"
        base = " (baseline)" if m.is_baseline else ""
        name = (
            f"<td class='l model'>{swatch}<b>{escape(m.name)}</b>{base}"
            f"<span class='path'>{escape(m.path)}</span></td>"
        )
        cells = [cell(getattr(m, c)) for c in fields[2:]]
        if report.has_baseline:
            cells += vs_cells(m)[1:] if m.vs_baseline is not None else ["-"] * 5
        cells += [*([cell(m.nonfinite_items)] if nonfinite else []), f"{m.seconds:.2f}"]
        tds = "".join(f"<td>{escape(c)}</td>" for c in cells)
        tr = "<tr class=base>" if m.is_baseline else "<tr>"
        rows.append(f"{tr}<td>{m.rank}</td>{name}{tds}</tr>")
    th = "".join(
        f"<th{' class=l' if i == 1 else ''} scope='col'>{escape(h)}</th>"
        for i, h in enumerate(heads)
    )
    return (
        f"<section><h2>Ranking</h2><div class='scroll'><table><thead><tr>{th}</tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table></div><p class='note'>Ranked by the exact "
        f"loss per {unit(report)} over every item (lowest first).</p></section>"
    )


def _intervals(report: Report) -> str:
    baseline = next((m for m in report.models if m.is_baseline), None)
    if baseline is None:
        return ""
    from evalloss.render.plot import p_text

    colours, item = _colours(report), _item(report)
    rows = []
    for m in report.models:
        vs = m.vs_baseline
        if m.is_baseline or vs is None or vs.delta is None:
            continue
        low, high = vs.ci95 if vs.ci95 is not None else (vs.delta, vs.delta)
        note = f"{vs.delta:+.4g} [{low:+.3g}, {high:+.3g}]"
        note += "" if vs.p_value is None else f", p {p_text(vs.p_value)}"
        note += "" if vs.wins is None else f", lower loss on {vs.wins:.0%} of {item}s"
        rows.append(Interval(escape(m.name), vs.delta, low, high, colours[m.name], escape(note)))
    if not rows:
        return ""
    axis = f"loss(model) − loss({baseline.name}), mean per {unit(report)}, with 95% CI"
    return (
        "<section><h2>Paired differences from the baseline</h2><figure style='margin:0'>"
        f"<div class='scroll'>{intervals(rows, escape(axis))}</div><figcaption>Left of the "
        f"dashed zero line: lower loss than the baseline <b>{escape(baseline.name)}</b>, item "
        "by item. Exact over all items."
        "</figcaption></figure></section>"
    )


def _curve(report: Report) -> str:
    """A Trainer run's checkpoints in step order: the table, and the two curves where two
    or more checkpoints have a step."""
    curved = curve.table(report)
    if curved is None:
        return ""
    th = "".join(f"<th scope='col'>{escape(h)}</th>" for h in curved.headers)
    rows = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>"
                   for row in curved.rows)  # fmt: skip
    chart = ""
    if curve.drawn(report):
        styles = {curve.EXACT: ("currentColor", ""), curve.LOGGED: ("#d62728", "6 4")}
        lines = [Series(escape(label), [(float(s), v) for s, v in points], *styles[label])
                 for label, points in curve.series(report).items() if points]  # fmt: skip
        chart = (f"<div class='scroll'>{curves(lines, 'step', 'the run: exact and logged')}"
                 "</div>")  # fmt: skip
    return (
        "<section><h2>The run's curve</h2><figure style='margin:0'>"
        f"{chart}<figcaption>{escape(curved.title)}. Trainer's eval_loss is a mean of batch "
        "means weighted by sequences, which moves with the eval batch size; the exact figure "
        "is over every token once.</figcaption></figure><div class='scroll'><table><thead>"
        f"<tr>{th}</tr></thead><tbody>{rows}</tbody></table></div></section>"
    )


def _distributions(report: Report) -> str:
    head = "<section><h2>Per-item loss distributions</h2>"
    sample = report.sample
    if sample is None or len(sample.values) == 0:
        return (
            f"{head}<p class='note'>No sample of the items was kept (the CLI keeps one for "
            "<code>--format html</code> in one process; the API with "
            "<code>compare(..., sample=True)</code>).</p></section>"
        )
    import numpy as np

    from evalloss.render.plot import bin_edges

    values: npt.NDArray[np.float64] = np.asarray(sample.values, dtype=np.float64)
    finite = values[np.isfinite(values).all(axis=1)]
    log, edges = bin_edges(finite)
    colours = _colours(report)
    panels = [_panel(m, finite[:, sample.names.index(m.name)], edges, colours[m.name])
              for m in report.models if m.name in sample.names]  # fmt: skip
    item = _item(report)
    kept, seen = len(values), sample.seen
    what = f"a sample of {kept:,} of {seen:,} {item}s" if kept < seen else f"all {seen:,} {item}s"
    per = " per token" if item == "document" else ""
    axis = f"{report.loss} loss{per} of one {item}" + (" (log scale)" if log else "")
    return (
        f"{head}<figure style='margin:0'><div class='scroll'>"
        f"{histograms(panels, edges.tolist(), log, escape(axis))}</div>"
        f"<figcaption>Share of {what} in each bin, per model; dashed: the exact loss per "
        f"{unit(report)} over all items.</figcaption></figure></section>"
    )


def _panel(
    model: ModelResult, column: npt.NDArray[np.float64], edges: npt.NDArray[np.float64], colour: str
) -> Histogram:
    import numpy as np

    from evalloss.render.plot import off_axis

    counts, _ = np.histogram(column, bins=edges)
    percents = (100.0 * counts / max(len(column), 1)).tolist()
    figure = "-" if model.figure is None else f"{model.figure:.4g}"
    label = f"#{model.rank} {model.name}{' (baseline)' if model.is_baseline else ''}: {figure}"
    return Histogram(escape(label + off_axis(column, edges)), percents, colour, model.figure)


def _item(report: Report) -> str:
    """What one sampled value and one paired win is: a document for a token loss."""
    return "document" if report.unit == "token" else "item"


def _slices(report: Report) -> str:
    """One table per slice column, worst regression first (`slicetable`); every slice value
    HTML-escaped."""
    from evalloss.render.slicetable import tables

    sections = []
    for sliced in tables(report):
        head = "".join(f"<th>{escape(h)}</th>" for h in sliced.headers)
        body = "".join(
            "<tr>" + "".join(f"<td class='l'>{escape(c)}</td>" if i < 2 else f"<td>{escape(c)}</td>"
                             for i, c in enumerate(row)) + "</tr>"
            for row in sliced.rows
        )  # fmt: skip
        sections.append(f"<h3 style='font-size:1rem'>{escape(sliced.title)}</h3><div "
                        f"class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}"
                        "</tbody></table></div>")  # fmt: skip
    if not sections:
        return ""
    return "<section><h2>Slices</h2>" + "".join(sections) + "</section>"


def _provenance(report: Report) -> str:
    p = report.provenance
    facts = [
        ("data", f"<code>{escape(report.data.path)}</code> ({report.data.items:,} items; "
                 f"features: {report.data.features}{_bytes(report)})"),
        ("loss", escape(report.loss)),
        ("batch size", str(report.batch_size)),
        ("processes", str(report.world_size)),
    ]  # fmt: skip
    if p is not None:
        facts += [
            ("software", escape(f"evalloss {p.evalloss}, torch {p.torch}, Python {p.python}")),
            ("machine", escape(f"{p.platform}; {p.device} ({p.device_name}), {p.threads} threads")),
        ]
    rows = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts)
    hashes = (p.sha256 or {}) if p is not None else {}
    files = "".join(
        f"<tr><td class='l'><code>{escape(path)}</code></td><td class='l'><code>{escape(h)}</code>"
        "</td></tr>"
        for path, h in hashes.items()
    )
    table = (
        "<h3 style='font-size:1rem'>sha256</h3><div class='scroll'><table><tbody>"
        f"{files}</tbody></table></div>"
        if files
        else ""
    )
    return f"<section><h2>Provenance</h2><dl>{rows}</dl>{table}</section>"


def _bytes(report: Report) -> str:
    return "" if report.data.bytes is None else f"; {report.data.bytes:,} bytes of text"


def _colours(report: Report) -> dict[str, str]:
    """`--plot`'s colours; the baseline a mid grey that shows on a light and a dark page."""
    from evalloss.render.plot import colours

    chosen = {name: str(c) for name, c in colours(report).items()}
    chosen.update({m.name: "#8c959f" for m in report.models if m.is_baseline})
    return chosen
