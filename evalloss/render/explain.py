"""The `explain` report -> text: the seed article's table of what a training log prints at each
batch size against the exact figures (table, markdown, csv, json, html).
"""

from __future__ import annotations

import csv
import io
import textwrap
from collections.abc import Sequence
from pathlib import Path

from evalloss.render.cells import cell, displayable_explain, md, pipe_table, raw, to_json
from evalloss.render.html import page
from evalloss.render.svg import escape
from evalloss.render.table import WIDTH
from evalloss.report import ExplainReport
from evalloss.stats.paired import relative_error

_EXPLAIN_COLUMNS = (
    "batch_size",
    "batches",
    "last_batch",
    "sum_of_averages",
    "normalized_sum",
    "normalized_sum_error",
    "average_of_averages",
    "average_of_averages_error",
)
_EXPLAIN_HEADERS = (
    ("batch", "size"),
    ("", "batches"),
    ("last", "batch"),
    ("sum of", "averages"),
    ("normalized", "sum"),
    ("", "error"),
    ("average of", "averages"),
    ("", "error"),
)
_TOKEN_COLUMNS = (
    "batch_size",
    "batches",
    "last_batch",
    "sum_of_averages",
    "average_of_averages",
    "average_of_averages_error",
    "sequence_weighted_average",
    "sequence_weighted_average_error",
)
_TOKEN_HEADERS = (
    ("batch", "size"),
    ("", "batches"),
    ("last", "batch"),
    ("sum of", "averages"),
    ("average of", "averages"),
    ("", "error"),
    ("sequence-", "weighted"),
    ("", "error"),
)
TOKEN_NOTE = (
    "This is the seed article's table for language models. Each batch's loss is a mean over "
    "its tokens; the sum of those means (`epoch_loss += loss.item()`) grows with the number of "
    "batches, their average weights a batch of short documents like one of long ones, and the "
    "sequence-weighted average (transformers' Trainer.evaluate `eval_loss`, Lightning's "
    "`self.log(on_epoch=True)`) weights each batch's token mean by its number of documents.",
    "None of them is the loss per token unless every batch has the same number of tokens: only "
    "the exact loss per token (every token's loss added up, then divided by the tokens) does not "
    "move with the batch size. 'per document' is the mean of each document's own mean.",
)
LABELS_NOTE = (
    "For this folder the installed transformers' Trainer divides each batch's summed loss by "
    "its labels, every document's first token counted though it is never scored (the model's "
    "loss_type is unset): the sequence-weighted row does too, as Trainer.evaluate prints it; "
    "Lightning's self.log would divide by the scored tokens."
)
EXPLAIN_NOTE = (
    "Only the exact loss sum and loss per item can be compared across batch sizes: they add up "
    "every item's own loss, however the items are batched.",
    "The sum of averages (`epoch_loss += loss.item()`) shrinks as the batch size grows, so it "
    "cannot; the normalized sum and the average of averages equal the exact figures only when "
    "every batch, the last included, has the same size.",
)


def render(report: ExplainReport, fmt: str) -> str:
    """The `explain` report as one string in format ``fmt`` (names escaped in the text
    formats, as `render.render` does)."""
    if fmt == "json":
        return to_json(report.to_dict())
    if fmt == "csv":
        return _explain_csv(report)
    report = displayable_explain(report)
    token = report.tokens is not None
    columns, headers = (
        (_TOKEN_COLUMNS, _TOKEN_HEADERS) if token else (_EXPLAIN_COLUMNS, _EXPLAIN_HEADERS)
    )
    rows = [
        [_error(getattr(r, c)) if c.endswith("_error") else cell(getattr(r, c)) for c in columns]
        for r in report.rows
    ]
    if token:
        rows.append(["exact", "", "", "", cell(report.loss_per_token), "", "", ""])
        rows.append(["per document", "", "", "", cell(report.average_of_item_averages),
                     _error(relative_error(report.average_of_item_averages, report.loss_per_token)),
                     "", ""])  # fmt: skip
    else:
        rows.append(["exact", "", "", "", cell(report.loss_sum), "", cell(report.per_item), ""])
    note = list(TOKEN_NOTE if token else EXPLAIN_NOTE)
    if report.trainer_divisor == "labels":
        note.append(LABELS_NOTE)
    if report.nonfinite_items:
        note.insert(0, f"{report.nonfinite_items} items have a non-finite loss: no figure exists.")
    if fmt == "markdown":
        return _explain_markdown(report, rows, note, headers)
    if fmt == "html":
        return _explain_html(report, rows, note, headers)
    what = f"{report.tokens} tokens of " if token else ""
    title = (
        f"{report.loss} loss of {report.checkpoint} over {what}{report.items} items of "
        f"{report.data.path} ({report.precision}, {report.device}): what "
        f"{'an evaluation loop' if token else 'a training log'} prints at each batch size"
    )
    parts = [_wrap(title), _aligned([*zip(*headers, strict=True)], rows)]
    return "\n\n".join(parts) + "\n\n" + "".join(f"{_wrap(line)}\n" for line in note)


def _explain_markdown(
    report: ExplainReport,
    rows: list[list[str]],
    note: list[str],
    head: Sequence[Sequence[str]] = _EXPLAIN_HEADERS,
) -> str:
    headers = [" ".join(h).strip() for h in head]
    align = ["left"] + ["right"] * (len(headers) - 1)
    rows = [list(r) for r in rows]
    rows[-1][0] = "**exact**"
    table = pipe_table(rows, headers, align)
    lines = [
        f"### evalloss explain: {report.loss} loss of `{md(report.checkpoint)}`",
        "",
        f"{report.items} items of `{md(report.data.path)}`, {report.precision}, "
        f"{report.device}: what a training log prints at each batch size.",
        "",
        table,
        "",
        " ".join(note),
    ]
    return "\n".join(lines) + "\n"


def _aligned(head: Sequence[Sequence[str]], rows: Sequence[Sequence[str]]) -> str:
    """A plain table: header lines, a dashed rule, rows; first column left, the rest right."""
    widths = [max(len(r[i]) for r in [*head, *rows]) for i in range(len(rows[0]))]

    def line(cells: Sequence[str], fill: str = " ") -> str:
        first = cells[0].ljust(widths[0], fill)
        rest = [c.rjust(w, fill) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first, *rest]).rstrip()

    rule = line([""] * len(widths), "-")
    return "\n".join([*(line(h) for h in head), rule, *(line(r) for r in rows)])


def _wrap(text: str) -> str:
    return textwrap.fill(text, WIDTH, break_long_words=False, break_on_hyphens=False)


def _explain_csv(report: ExplainReport) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    token = report.tokens is not None
    columns = _TOKEN_COLUMNS if token else _EXPLAIN_COLUMNS
    exact = ("loss_sum", "loss_per_token", "tokens") if token else ("loss_sum", "per_item")
    writer.writerow([*columns, *exact, "items"])
    values = [getattr(report, "per_item" if e == "per_item" else e) for e in exact]
    for r in report.rows:
        writer.writerow([raw(getattr(r, c)) for c in columns] + [raw(v) for v in values]
                        + [raw(report.items)])  # fmt: skip
    return out.getvalue()


def _error(value: float | None) -> str:
    """A relative error as a signed percentage: 0% exact, 0.00% below half a basis point."""
    if value is None:
        return "-"
    if value == 0:
        return "0%"
    return "0.00%" if abs(value) < 5e-5 else f"{value:+.2%}"


def _explain_html(
    report: ExplainReport, rows: Sequence[Sequence[str]], note: Sequence[str],
    headers: Sequence[Sequence[str]],
) -> str:  # fmt: skip
    """``explain --format html``: the table of what a training log prints at each batch size."""
    title = f"evalloss explain: {report.loss} loss of {Path(report.checkpoint).name}"
    th = "".join(
        f"<th{' class=l' if i == 0 else ''}>{escape(' '.join(h).strip())}</th>"
        for i, h in enumerate(headers)
    )
    body = "".join(
        "<tr>" + "".join(f"<td{' class=l' if i == 0 else ''}>{escape(c)}</td>"
                         for i, c in enumerate(r)) + "</tr>"
        for r in rows
    )  # fmt: skip
    sections = [
        f"<h1>{escape(title)}</h1><p class='sub'>{report.items:,} items of "
        f"<code>{escape(report.data.path)}</code> · {escape(report.precision)} on "
        f"{escape(report.device)} · <code>{escape(report.checkpoint)}</code></p>",
        f"<section><div class='scroll'><table><thead><tr>{th}</tr></thead><tbody>{body}"
        f"</tbody></table></div><p class='note'>{escape(' '.join(note))}</p></section>",
    ]
    return page(title, sections, report.evalloss_version)
