"""The command line: a thin click layer over the library (`evalloss.api`).

`exits` maps every outcome to its exit code, once; `options` holds the shared option
decorators; `commands` the commands; `progress` the bar. Only this package imports click.
"""

from __future__ import annotations

import click

from evalloss._version import __version__

from .commands import compare, explain
from .exits import EvallossGroup, warnings_as_lines

__all__ = ["cli", "main"]


@click.group(cls=EvallossGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="evalloss")
def cli() -> None:
    """Exact per-item loss of PyTorch checkpoints over a whole data set.

    A training log's `epoch_loss += loss.item()` is a sum of batch averages: it depends on
    the batch size. evalloss runs each model, without gradients, over every item, sums the
    un-averaged losses and divides by the item count: the one figure that compares models
    trained with different batch sizes.
    """
    click.get_current_context().with_resource(warnings_as_lines())


cli.add_command(compare)
cli.add_command(explain)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="evalloss")
