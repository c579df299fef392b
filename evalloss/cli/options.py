"""Option decorators shared by the commands, and the click types that check syntax only.

Choices come from the registries (`losses.NAMES`, `render.FORMATS`), never copied; each
option's destination is the API keyword it mirrors (a test checks both).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from evalloss.gate import Threshold, parse_threshold
from evalloss.losses import NAMES as LOSSES
from evalloss.options import PRECISIONS, SCORES, TOKEN_DTYPES
from evalloss.render import FORMATS

F = TypeVar("F", bound=Callable[..., Any])


class ThresholdType(click.ParamType):  # type: ignore[type-arg, unused-ignore]
    """A finite number, or with ``percent`` also ``N%``: syntax only (meaning: `gate.rules`)."""

    def __init__(self, *, percent: bool) -> None:
        self.percent = percent
        self.name = "number or percentage" if percent else "number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, Threshold):
            return value
        try:
            return parse_threshold(str(value), percent=self.percent)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def gate_options(f: F) -> F:
    """The baseline and the promotion gate (compare only)."""
    for option in reversed(
        [
            click.option(
                "--baseline",
                metavar="CHECKPOINT",
                help="The model in production; added to the run if not listed. Every other "
                "model gets paired statistics against it (delta, relative, 95% CI, p, wins).",
            ),
            click.option(
                "--min-improvement",
                type=ThresholdType(percent=True),
                metavar="X",
                help="Gate: the winner must beat the baseline by more than X (0.01 absolute, "
                "2% of the baseline's loss). Needs --baseline. 0: strictly lower (a tie "
                "fails); negative: tolerate a regression.",
            ),
            click.option(
                "--max-loss",
                type=ThresholdType(percent=False),
                metavar="X",
                help="Gate: the winner's loss per item must be at most X.",
            ),
            click.option(
                "--require-significant",
                is_flag=True,
                help="Gate: also the upper end of the winner's 95% CI for the paired "
                "difference must lie below -margin (the --min-improvement, else 0); with "
                "--max-slice-regression, a slice fails only when its regression is "
                "significant after Holm's adjustment.",
            ),
            click.option(
                "--slice",
                multiple=True,
                metavar="COL",
                help="Also report every model's figures per value of COL (repeatable): a "
                "category column (missing values are a slice of their own), or with "
                "--slice-bins a numeric one. With --baseline, paired statistics per slice, "
                "Holm-adjusted over each column. Slice columns are not features unless "
                "named with --feature.",
            ),
            click.option(
                "--slice-bins",
                type=click.IntRange(min=2, max=1000),
                metavar="K",
                help="Cut every --slice column (numeric) into K bins at its exact quantiles "
                "over the whole data set (one column read before the pass); equal edges merge.",
            ),
            click.option(
                "--max-slice-regression",
                type=ThresholdType(percent=True),
                metavar="X",
                help="Gate: on every slice of at least --min-slice-items items, the winner may "
                "not be worse than the baseline by more than X (0.01 absolute, or 5% of the "
                "baseline's loss on that slice). Needs --baseline and --slice.",
            ),
            click.option(
                "--min-slice-items",
                type=click.IntRange(min=1),
                default=30,
                show_default=True,
                metavar="N",
                help="Slices with fewer items are reported but not judged by "
                "--max-slice-regression.",
            ),
        ]
    ):
        f = option(f)
    return f


sequence_options = [
    click.option(
        "--context",
        type=click.IntRange(min=1),
        metavar="L",
        help="causal-lm: the longest input the model is given; longer sequences are scored "
        "in windows (required for a .bin token stream).",
    ),
    click.option(
        "--stride",
        type=click.IntRange(min=1),
        metavar="S",
        help="causal-lm: new targets per window (default: the context; at most the context).",
    ),
    click.option(
        "--token-dtype",
        type=click.Choice(TOKEN_DTYPES),
        default="uint16",
        show_default=True,
        help="The element type of a .bin token stream (nanoGPT's: uint16).",
    ),
    click.option(
        "--tokens-column",
        default="input_ids",
        show_default=True,
        metavar="COL",
        help="Documents (Parquet, JSON Lines): the list-of-token-ids column; an optional "
        "'labels' list column masks tokens with -100.",
    ),
    click.option(
        "--text-column",
        metavar="COL",
        help="Text (JSON Lines, Parquet, CSV), tokenized with the model folders' "
        "tokenizer.json: the column of documents. A .txt file is one document per line. "
        "An encoder-decoder folder (seq2seq-lm): the encoder's input column, beside the "
        "--target column. Default: text (input for seq2seq-lm).",
    ),
    click.option(
        "--score",
        type=click.Choice(SCORES),
        help="Chat and instruction data (docs/chat-data.md): the tokens scored. assistant: "
        "the chat template's {% generation %} blocks (default for a messages column); "
        "completion: past the prompt (default for prompt/completion pairs); all: every token.",
    ),
    click.option(
        "--batch-tokens",
        type=click.IntRange(min=1),
        metavar="N",
        help="causal-lm: tokens per forward pass, padding included (throughput only; the "
        "figure does not depend on it). Default: 4096.",
    ),
    click.option(
        "--prefix-token",
        metavar="auto|bos|eos|ID",
        help="causal-lm on documents or text: give each document this token first and score "
        "every token of it, the first included (lm-evaluation-harness's loglikelihood_rolling; "
        "auto: the tokenizer's BOS, else its EOS). Default: none, the first token unscored.",
    ),
]


tensor_options = [
    click.option(
        "--inputs-key",
        default="inputs",
        show_default=True,
        metavar="KEY",
        help="Tensor data (.npz, .safetensors): the array of inputs, items first (N, ...).",
    ),
    click.option(
        "--targets-key",
        default="targets",
        show_default=True,
        metavar="KEY",
        help="Tensor data: the array of targets, items first (N, ...).",
    ),
    click.option(
        "--ignore-index",
        type=int,
        metavar="ID",
        help="cross-entropy/nll: a class id that is never scored (e.g. 255 in segmentation "
        "masks); an item's weight is then its counted elements.",
    ),
    click.option(
        "--workers",
        type=click.IntRange(min=0, max=256),
        metavar="N",
        help="--data file.py:Name: DataLoader worker processes for a map-style Dataset "
        "(0: read in this process). Default: the cores less two, at most 4.",
    ),
]


def data_options(f: F) -> F:
    """Options shared by every command that evaluates models over a data set."""
    for option in reversed(
        [
            click.option(
                "--data",
                "data",
                required=True,
                metavar="PATH",
                help="CSV, TSV (.tsv/.tab or tab-separated), Parquet (.parquet/.pq), token ids "
                "(.bin, .jsonl), tensors (.npz, .safetensors: --inputs-key, --targets-key), or "
                "your own Dataset: path/to/file.py:Name or package.module:Name, a factory "
                "called with no arguments. CSV, Parquet, .bin also at s3://, gs://, hf:// URIs.",
            ),
            click.option(
                "--model",
                metavar="SPEC",
                help="Architecture from your code: path/to/file.py:Name or "
                "package.module:Name (a class or factory returning an nn.Module), for "
                "checkpoints without an evalloss.layers spec.",
            ),
            click.option(
                "--model-kwargs",
                metavar="JSON",
                help="Keyword arguments for --model, as a JSON object.",
            ),
            click.option(
                "--base",
                metavar="FOLDER",
                help="The base model folder of every adapter folder (adapter_config.json) "
                "here. Default: each adapter's base_model_name_or_path, where that is a local "
                "folder. Refused when no checkpoint is an adapter folder.",
            ),
            click.option(
                "--loss",
                type=click.Choice(LOSSES),
                help="Loss; default: the checkpoints' evalloss.loss metadata.",
            ),
            click.option(
                "--target",
                multiple=True,
                metavar="COL",
                help="Target column (repeatable). Default: evalloss.target metadata, "
                "else the last column (seq2seq-lm: the target text column, target).",
            ),
            click.option(
                "--feature",
                multiple=True,
                metavar="COL",
                help="Feature column (repeatable). Default: every non-target column.",
            ),
            click.option(
                "--no-header",
                is_flag=True,
                help="The first line is data; columns are named 0, 1, ...",
            ),
            click.option(
                "--device",
                default="auto",
                show_default=True,
                help="auto (CUDA when available), cpu, cuda, cuda:1, mps.",
            ),
            click.option(
                "--precision",
                type=click.Choice(PRECISIONS),
                default="float32",
                show_default=True,
                help="The dtype of weights, inputs and activations: float64 is reference grade; "
                "bfloat16 and float16 run large models as they are served (the loss is computed "
                "in float32 from the outputs, the sums in float64).",
            ),
            *sequence_options,
            *tensor_options,
            click.option(
                "--format",
                "fmt",
                type=click.Choice(FORMATS),
                default="table",
                show_default=True,
                help="Report format.",
            ),
            click.option(
                "-o",
                "--output",
                type=click.Path(dir_okay=False),
                metavar="PATH",
                help="Write the report to PATH (atomically) instead of stdout. A local "
                "path: a URI (s3://...) is refused.",
            ),
            click.option(
                "--no-progress",
                is_flag=True,
                help="No progress bar (drawn on stderr only when it is a terminal).",
            ),
        ]
    ):
        f = option(f)
    return f
