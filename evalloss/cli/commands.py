"""The commands: parse, call the library, render, write. No figure is computed here."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import Any

import click

from evalloss.cli import github, tracking
from evalloss.cli.cachecmd import cache_options
from evalloss.cli.exits import GateFailed, error_line
from evalloss.cli.options import data_options, gate_options
from evalloss.cli.progress import progress_bar


@click.command()
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
    "--junit-xml",
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="Also write the gate as a JUnit XML report to PATH: one test case per gate rule, "
    "a failure for each rule that failed (GitLab artifacts:reports:junit, Jenkins).",
)
@click.option(
    "--mlflow",
    is_flag=True,
    help="Also log the report to the MLflow tracking server of MLFLOW_TRACKING_URI: into the "
    "run of MLFLOW_RUN_ID if set, else a new run. Every model's figures as metrics "
    "(<model>.loss_per_item, ...), options and sha256 as params, the verdict as a tag, the "
    "JSON report (and --plot, an HTML -o) as artifacts. A server that is down is one warning; "
    "the exit code stands. Needs: pip install 'evalloss[mlflow]'.",
)
@click.option(
    "--mlflow-experiment",
    metavar="NAME",
    help="The MLflow experiment of the new run (created if missing; implies --mlflow). "
    "Default: MLFLOW_EXPERIMENT_NAME, else MLflow's default experiment.",
)
@click.option(
    "--one-at-a-time",
    is_flag=True,
    help="Evaluate the models one after another, each built just before its pass and freed "
    "after (the data read, and text tokenized, once where it fits in 1 GiB; the report is "
    "the same). Chosen on its own when the models' weights would take over half the memory "
    "available, and for text when the models' tokenizers differ.",
)
@cache_options
@click.option(
    "--no-hash",
    is_flag=True,
    help="Leave the sha256 of the checkpoints and data file out of the report's provenance. "
    "sha256 takes about 0.8 s of CPU per GB, on a thread beside the pass: negligible beside "
    "a real model, about 10% of a run that only streams a large CSV through a tiny one.",
)
def compare(
    checkpoints: tuple[str, ...],
    fmt: str,
    output: str | None,
    no_progress: bool,
    junit_xml: str | None,
    mlflow: bool,
    mlflow_experiment: str | None,
    **options: Any,
) -> None:
    """Rank checkpoints by exact loss per item over the whole data set.

    A CHECKPOINT is a safetensors file, a Hugging Face model folder, or a file in object
    storage (s3://bucket/m.safetensors, gs://..., hf://...: its header is checked before
    any tensor is fetched).

    A Trainer run folder (its output_dir) stands for its checkpoint-N folders in step order;
    each gets its step and the eval_loss the run logged there.

    Under torchrun (torchrun --nproc_per_node=K -m evalloss compare ...) each process reads
    and evaluates its share of the rows; rank 0 writes the same report as one process.

    With --baseline and a gate (--min-improvement, --max-loss, --require-significant), exit 1
    when the gate fails: the winner is the best-ranked model that is not the baseline.
    """
    _hash_ahead(checkpoints, options)  # before torch is imported: the hashes overlap with it
    from evalloss import api, render
    from evalloss.io import files
    from evalloss.run import distributed

    extra = {"--per-item": options.get("per_item"), "--plot": options.get("plot"),
             "--junit-xml": junit_xml}  # fmt: skip
    files.check_outputs({"--output": output, **extra}, _inputs(checkpoints, options))
    track = mlflow or mlflow_experiment is not None
    if track:
        tracking.check()
    main = distributed.is_main()
    with (progress_bar(no_progress or not main) as progress, _prints_to_stderr(),
          distributed.reporting(lambda exc: error_line(str(exc)))):  # fmt: skip
        report = api.compare(checkpoints, progress=progress, sample=fmt == "html", **options)
    if not main:  # under torchrun, rank 0 alone writes the report
        if report.gate is not None and not report.gate.passed:
            raise GateFailed
        return
    files.write(render.render(report, fmt), output, _inputs(checkpoints, options))
    if junit_xml is not None:
        from evalloss.render import junit

        files.write(junit.render(report), junit_xml, _inputs(checkpoints, options))
    if track:
        logged = [p for p in (options.get("plot"), output if fmt == "html" else None) if p]
        tracking.log(report, experiment=mlflow_experiment, options=_given(options),
                     artifacts=logged)  # fmt: skip
    cached = [m.name for m in report.models if m.cached]
    if cached:
        click.echo(f"evalloss: read from the cache: {', '.join(cached)}", err=True)
    if github.active():
        github.publish(report, output)
    if report.gate is not None and (fmt != "table" or output is not None):
        from evalloss.render.cells import displayable, verdict  # imports tabulate: only now

        line = verdict(displayable(report))  # the table ends with it; others: on stderr
        if line is not None:
            click.echo(line, err=True)
    if report.gate is not None and not report.gate.passed:
        raise GateFailed


@click.command()
@click.argument("checkpoint", metavar="CHECKPOINT")
@data_options
@cache_options
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
    if options.get("cache"):  # the cache key's hashes, while torch imports
        _hash_ahead([checkpoint], options)
    from evalloss import explainer
    from evalloss.io import files
    from evalloss.render import explain as render_explain

    files.check_output(output, _inputs([checkpoint], options))
    with progress_bar(no_progress) as progress, _prints_to_stderr():
        report = explainer.explain(checkpoint, progress=progress, **options)
    files.write(render_explain.render(report, fmt), output, _inputs([checkpoint], options))


def _prints_to_stderr() -> contextlib.AbstractContextManager[Any]:
    """While models run, a ``print`` in the user's code goes to stderr: stdout carries the
    report alone, so ``--format json | jq`` never sees debug output."""
    return contextlib.redirect_stdout(sys.stderr)


def _given(options: dict[str, Any]) -> dict[str, Any]:
    """The options the user set (command line, config file, environment): not the defaults."""
    ctx = click.get_current_context()
    default = (None, click.core.ParameterSource.DEFAULT)
    return {k: v for k, v in options.items() if ctx.get_parameter_source(k) not in default}


def _hash_ahead(checkpoints: Sequence[str], options: dict[str, Any]) -> None:
    """Start hashing what the run will hash (the data, every checkpoint file) on a thread
    before torch is imported, one process: the hashes overlap with the import and the pass.
    A folder's JSON and safetensors files only (a Trainer checkpoint's pickles are never
    opened); a Trainer run folder's checkpoints."""
    import os
    from pathlib import Path

    from evalloss.io.hashing import hash_ahead
    from evalloss.models import trainerrun

    under_launcher = os.environ.get("WORLD_SIZE", "1") != "1"  # checked later, by distributed
    if under_launcher or (options.get("no_hash") and not options.get("cache")):
        return
    data = [str(options["data"])] if options.get("data") else []
    with contextlib.suppress(OSError):  # a bad path is for the run to name, not for this
        listed = trainerrun.expand(checkpoints)
        folders = [*listed, *([options["base"]] if options.get("base") else [])]
        files = [str(f) for c in folders if Path(c).is_dir() for f in Path(c).iterdir()
                 if f.suffix in (".json", ".safetensors")]  # fmt: skip
        hash_ahead(data + files + [os.fspath(c) for c in listed])


def _inputs(checkpoints: Sequence[str], options: dict[str, Any]) -> list[str | None]:
    """Every file a command reads, so that ``--output`` can never overwrite one of them: the
    user's model and Dataset sources too, however ``--model`` and ``--data`` named them."""
    from evalloss.models.user import source_file

    model, dataset = source_file(options.get("model")), source_file(options.get("data"))
    return [*checkpoints, options.get("baseline"), options.get("data"), model, dataset]
