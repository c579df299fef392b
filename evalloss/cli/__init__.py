"""The command line: a thin click layer over the library (`evalloss.api`).

`exits` maps every outcome to its exit code, once; `options` holds the shared option
decorators; `commands` the commands; `progress` the bar. Only this package imports click.
"""

from __future__ import annotations

import json

import click

from evalloss._version import __version__
from evalloss.cli.cachecmd import cache_command
from evalloss.cli.commands import compare, explain
from evalloss.cli.config import default_map, settings
from evalloss.cli.exits import EvallossGroup, warnings_as_lines

__all__ = ["cli", "main"]


@click.group(cls=EvallossGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="evalloss")
@click.option(
    "--config",
    metavar="FILE",
    help="Defaults from this TOML file instead of [tool.evalloss] in the nearest pyproject.toml "
    "(keys: options' long names; tables [compare], [explain] for one command).",
)
def cli(config: str | None) -> None:
    """Exact per-item loss of PyTorch checkpoints over a whole data set.

    A training log's `epoch_loss += loss.item()` is a sum of batch averages: it depends on
    the batch size. evalloss runs each model, without gradients, over every item, sums the
    un-averaged losses and divides by the item count: the one figure that compares models
    trained with different batch sizes.
    """
    ctx = click.get_current_context()
    ctx.with_resource(warnings_as_lines())
    found = settings(EVALUATING, config)
    ctx.default_map = default_map(found)
    ctx.meta[SETTINGS] = found


@cli.command("config")
def show_config() -> None:
    """Print the defaults in force (from [tool.evalloss] or --config, then EVALLOSS_<OPTION>
    variables) and where each came from. The command line overrides them all."""
    found = click.get_current_context().meta[SETTINGS]
    if not found:
        click.echo("no defaults: no [tool.evalloss] table found and no EVALLOSS_<OPTION> set")
    for setting in found:
        given = json.dumps(setting.given)
        click.echo(f"{setting.command} {setting.option} {given}  ({setting.source})")


EVALUATING = {"compare": compare, "explain": explain}
SETTINGS = "evalloss.settings"
cli.add_command(compare)
cli.add_command(explain)
cli.add_command(cache_command)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="evalloss")
