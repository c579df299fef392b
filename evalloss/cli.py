"""The command line: parse, call the library, render, exit. Exit codes are mapped once, here.

0 report produced (gate passed or none) · 1 gate failed · 2 usage or input error (one line on
stderr) · 3 internal error (traceback) · 130/143 SIGINT/SIGTERM · 141 stdout closed early.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import click

from . import __version__
from .errors import EvallossError
from .gate import Threshold, parse_threshold

F = TypeVar("F", bound=Callable[..., Any])

EXIT_OK, EXIT_GATE, EXIT_USAGE, EXIT_BUG = 0, 1, 2, 3
EXIT_SIGINT, EXIT_SIGTERM, EXIT_PIPE = 130, 143, 141
LOSSES = ("cross-entropy", "nll", "bce-logits", "bce", "mse", "l1", "smooth-l1", "huber")
FORMATS = ("table", "json", "markdown", "csv")


class GateFailed(Exception):  # noqa: N818 - a verdict, not an error
    """Raised by a command after printing its report when the promotion gate failed."""


class _Terminated(BaseException):  # like KeyboardInterrupt: no `except Exception` catches it
    """SIGTERM arrived."""


class _Interrupted(BaseException):
    """SIGINT (KeyboardInterrupt) arrived while a command ran."""


class _PipeClosed(BaseException):
    """stdout's reader went away (EPIPE)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated


def _error(message: str) -> None:
    with contextlib.suppress(OSError):  # stderr closed too (`2>&1 | head`): the code still holds
        click.echo(f"evalloss: error: {message}", err=True)


@contextlib.contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Print each `EvallossWarning` as one stderr line, ``evalloss: warning: <what>``."""
    from .errors import EvallossWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", EvallossWarning)
        shown = warnings.showwarning

        def show(message: Warning | str, category: type[Warning], *args: Any, **kw: Any) -> None:
            if issubclass(category, EvallossWarning):
                click.echo(f"evalloss: warning: {str(message).replace(chr(10), ' ')}", err=True)
            else:
                shown(message, category, *args, **kw)

        warnings.showwarning = show
        yield


class EvallossGroup(click.Group):
    """Maps every outcome to the documented exit code, so CliRunner sees the real codes."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command. Ctrl-C and a closed pipe leave as our own exceptions, past click's
        handlers (which would print a blank line for Ctrl-C and exit 1 on EPIPE)."""
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            raise _PipeClosed from exc
        except KeyboardInterrupt as exc:
            raise _Interrupted from exc

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        """Parse the top-level arguments; ``--help | head`` is a closed pipe like any other."""
        try:
            return super().make_context(*args, **kwargs)
        except BrokenPipeError as exc:
            raise _PipeClosed from exc

    def main(self, args: Sequence[str] | None = None, **extra: Any) -> Any:  # type: ignore[override]
        if extra.get("standalone_mode") is False:  # a caller that wants exceptions back
            return super().main(args, **extra)
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _on_sigterm) if main_thread else None
        try:
            super().main(args, standalone_mode=False, **extra)
            code = EXIT_OK
        except EvallossError as exc:
            if not getattr(exc, "quiet", False):  # under torchrun, rank 0 alone reports it
                _error(str(exc))
            code = exc.exit_code
        except click.UsageError as exc:
            _error(exc.format_message().replace("\n", " "))
            code = EXIT_USAGE
        except click.ClickException as exc:  # e.g. a missing file for click.Path
            _error(exc.format_message().replace("\n", " "))
            code = EXIT_USAGE
        except GateFailed:
            code = EXIT_GATE
        except (click.Abort, KeyboardInterrupt, _Interrupted):
            _error("interrupted (SIGINT); no report written")
            code = EXIT_SIGINT
        except _Terminated:
            _error("terminated (SIGTERM); no report written")
            code = EXIT_SIGTERM
        except (BrokenPipeError, _PipeClosed):
            _quiet_stdout()
            code = EXIT_PIPE
        except click.exceptions.Exit as exc:  # --help, --version
            code = exc.exit_code
        except Exception:
            traceback.print_exc()
            _error(f"internal error in evalloss {__version__}: please report it with the above")
            code = EXIT_BUG
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
        sys.exit(code)


def _quiet_stdout() -> None:
    """After EPIPE, point stdout at devnull so the interpreter's final flush stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


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
                "difference must lie below -margin (the --min-improvement, else 0).",
            ),
        ]
    ):
        f = option(f)
    return f


def data_options(f: F) -> F:
    """Options shared by every command that evaluates models over a data set."""
    for option in reversed(
        [
            click.option(
                "--data",
                "data",
                required=True,
                metavar="PATH",
                help="CSV, TSV (.tsv/.tab or tab-separated) or Parquet (.parquet/.pq).",
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
                "--loss",
                type=click.Choice(LOSSES),
                help="Loss; default: the checkpoints' evalloss.loss metadata.",
            ),
            click.option(
                "--target",
                multiple=True,
                metavar="COL",
                help="Target column (repeatable). Default: evalloss.target metadata, "
                "else the last column.",
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
                type=click.Choice(("float32", "float64")),
                default="float32",
                show_default=True,
                help="float64 runs model and inputs in float64 (reference grade).",
            ),
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
                help="Write the report to PATH (atomically) instead of stdout.",
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


def _stderr_is_tty() -> bool:
    return sys.stderr.isatty()


@contextlib.contextmanager
def _progress(disabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A rows-per-second bar on stderr, only when stderr is a terminal; gone when done.

    One bar per pass over the data (every model sees each batch), fed the rows of each batch.
    Coloured unless NO_COLOR is set (https://no-color.org).
    """
    if disabled or not _stderr_is_tty() or os.environ.get("RANK", "0") != "0":
        yield None  # under torchrun only rank 0 draws (its own shard's rows)
        return
    from tqdm import tqdm

    colour = None if os.environ.get("NO_COLOR") else "green"
    bar = tqdm(
        desc="evalloss", unit=" rows", unit_scale=True, file=sys.stderr, leave=False,
        dynamic_ncols=True, colour=colour,
    )  # fmt: skip

    def update(rows: int) -> None:
        bar.update(rows)

    try:
        yield update
    finally:
        bar.close()


@click.group(cls=EvallossGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="evalloss")
def cli() -> None:
    """Exact per-item loss of PyTorch checkpoints over a whole data set.

    A training log's `epoch_loss += loss.item()` is a sum of batch averages: it depends on
    the batch size. evalloss runs each model, without gradients, over every item, sums the
    un-averaged losses and divides by the item count: the one figure that compares models
    trained with different batch sizes.
    """
    click.get_current_context().with_resource(_warnings_as_lines())


@cli.command()
@click.argument("checkpoints", nargs=-1, required=True, metavar="CHECKPOINT...")
@data_options
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    metavar="N",
    help="Rows per forward pass (throughput only; the figure does not depend on it). "
    "Default: 2048 on the CPU, 4096 on a GPU.",
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    metavar="N",
    help="torch intra-op threads. Default: the cores (divided by the processes per node under "
    "torchrun). Try 1 on a busy shared machine.",
)
@gate_options
@click.option(
    "--per-item",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="Also write every item's loss under every model to PATH (.parquet, .pq, .csv or "
    ".tsv): row, target(s), one column per model. Streamed; written atomically; one "
    "process only (refused under torchrun).",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="Also draw the per-item loss distributions (and, with a baseline, the paired "
    "differences with their 95% CI) to PATH (.png, .svg, .pdf). Needs: pip install "
    "'evalloss[plot]'. One process only (refused under torchrun).",
)
@click.option(
    "--no-hash",
    is_flag=True,
    help="Leave the sha256 of the checkpoints and data file out of the report's provenance. "
    "sha256 runs at about 0.5 GB/s: negligible beside a real model, but up to ~20% of a run "
    "that only streams a large CSV through a tiny one.",
)
def compare(
    checkpoints: tuple[str, ...],
    fmt: str,
    output: str | None,
    no_progress: bool,
    **options: Any,
) -> None:
    """Rank checkpoints by exact loss per item over the whole data set.

    Under torchrun (torchrun --nproc_per_node=K -m evalloss compare ...) each process reads
    and evaluates its share of the rows; rank 0 writes the same report as one process.

    With --baseline and a gate (--min-improvement, --max-loss, --require-significant), exit 1
    when the gate fails: the winner is the best-ranked model that is not the baseline.
    """
    from . import api, distributed, render
    from . import output as files

    extra = {"--per-item": options.get("per_item"), "--plot": options.get("plot")}
    files.check_outputs({"--output": output, **extra}, _inputs(checkpoints, options))
    distributed.reporter = lambda exc: _error(str(exc))
    main = distributed.is_main()
    with _progress(no_progress or not main) as progress, _prints_to_stderr():
        report = api.compare(checkpoints, progress=progress, **options)
    if not main:  # under torchrun, rank 0 alone writes the report
        if report.gate is not None and not report.gate.passed:
            raise GateFailed
        return
    files.write(render.render(report, fmt), output)
    line = render.verdict(report) if report.gate is not None else None
    if line is not None and (fmt != "table" or output is not None):
        click.echo(line, err=True)  # the table ends with it; other reports get it on stderr
    if report.gate is not None and not report.gate.passed:
        raise GateFailed


@cli.command()
@click.argument("checkpoint", metavar="CHECKPOINT")
@data_options
@click.option(
    "--batch-size",
    "batch_sizes",
    type=click.IntRange(min=1),
    multiple=True,
    metavar="N",
    help="A batch size to show (repeatable). Default: 1, 10, 32, 64, 256.",
)
def explain(
    checkpoint: str,
    fmt: str,
    output: str | None,
    no_progress: bool,
    **options: Any,
) -> None:
    """Show what a training log prints at each batch size, against the exact loss.

    The model is evaluated once over the whole data set; each row groups the same item
    losses into consecutive batches of one size and replays the usual recipes: the sum of
    batch averages (`epoch_loss += loss.item()`), that sum times the batch size, and that
    sum over the number of batches, each with its error against the exact figure.
    """
    from . import explainer, render_explain
    from . import output as files

    files.check_output(output, _inputs([checkpoint], options))
    with _progress(no_progress) as progress, _prints_to_stderr():
        report = explainer.explain(checkpoint, progress=progress, **options)
    files.write(render_explain.render(report, fmt), output)


def _prints_to_stderr() -> contextlib.AbstractContextManager[Any]:
    """While models run, a ``print`` in the user's code goes to stderr: stdout carries the
    report alone, so ``--format json | jq`` never sees debug output."""
    return contextlib.redirect_stdout(sys.stderr)


def _inputs(checkpoints: Sequence[str], options: dict[str, Any]) -> list[str | None]:
    """Every file a command reads, so that ``--output`` can never overwrite one of them."""
    model = options.get("model")
    model_file = model.rpartition(":")[0] if model else None
    return [*checkpoints, options.get("baseline"), options.get("data"), model_file]


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="evalloss")
