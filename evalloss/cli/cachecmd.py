"""The result cache on the command line: ``--cache`` and ``--cache-max-size`` (compare,
explain), and ``evalloss cache list|clear``: what the cache holds, and emptying it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

import click

from evalloss.errors import OptionError

F = TypeVar("F", bound=Callable[..., Any])


class SizeType(click.ParamType):  # type: ignore[type-arg, unused-ignore]
    """A size in bytes: ``1000000``, ``500M``, ``2G`` (`disk.parse_size`)."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from evalloss.cache.disk import parse_size

        try:
            return parse_size(value)
        except OptionError as exc:
            self.fail(exc.message, param, ctx)


def cache_options(f: F) -> F:
    """--cache and --cache-max-size (compare, explain)."""
    f = click.option(
        "--cache-max-size",
        type=SizeType(),
        metavar="SIZE",
        help="With --cache: evict the least recently used entries past SIZE (bytes, or 500M, "
        "2G).",
    )(f)
    return click.option(
        "--cache",
        metavar="DIR",
        help="Keep each model's per-item results over the data in DIR, keyed by the sha256 of "
        "its files and of the data and every option that can change a figure; a model found "
        "there is read, not evaluated (same figures, bit for bit). See docs/cache.md. One "
        "process only.",
    )(f)



@click.command("cache")
@click.argument("action", type=click.Choice(["list", "clear"]), metavar="ACTION")
@click.option(
    "--cache",
    "folder",
    metavar="DIR",
    help="The cache folder. Default: compare's --cache from [tool.evalloss] or EVALLOSS_CACHE.",
)
def cache_command(action: str, folder: str | None) -> None:
    """ACTION: list the result cache's entries (name, size, last use, loss, precision,
    device, the first checkpoint file's and the data's sha256), or clear: remove them all.
    See docs/cache.md."""
    from evalloss.cache import disk
    from evalloss.io.files import local_only

    if folder is None:
        defaults = click.get_current_context().find_root().default_map or {}
        folder = defaults.get("compare", {}).get("cache")
    if folder is None:
        raise OptionError("give the folder: --cache DIR, EVALLOSS_CACHE, or cache in "
                          "[tool.evalloss]", key="--cache")  # fmt: skip
    local_only(folder, "--cache")
    if action == "clear":
        click.echo(f"removed {disk.clear(folder)} entries")
        return
    found = disk.entries(folder, keys=True)
    for e in found:
        used = dt.datetime.fromtimestamp(e.used, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{e.path.name[:16]}  {e.size:>10}  {used}  {_summary(e.key)}")
    total = sum(e.size for e in found)
    click.echo(f"{len(found)} entries, {total} bytes")


def _summary(key: dict[str, object] | None) -> str:
    if key is None:
        return "(unreadable: ignored and rewritten on use)"
    files = key.get("checkpoint")
    first = files[0][1][:12] if isinstance(files, list) and files else "?"
    data = key.get("data")
    data_sha = data[0][:12] if isinstance(data, list) and data else "?"
    return f"{key.get('loss')} {key.get('precision')} {key.get('device')} " \
           f"checkpoint {first} data {data_sha}"
