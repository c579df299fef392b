"""``evalloss cache list|clear``: what the result cache holds, and emptying it."""

from __future__ import annotations

import datetime as dt

import click

from evalloss.errors import OptionError


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
    from evalloss import cache

    if folder is None:
        defaults = click.get_current_context().find_root().default_map or {}
        folder = defaults.get("compare", {}).get("cache")
    if folder is None:
        raise OptionError("give the folder: --cache DIR, EVALLOSS_CACHE, or cache in "
                          "[tool.evalloss]", key="--cache")  # fmt: skip
    if action == "clear":
        click.echo(f"removed {cache.clear(folder)} entries")
        return
    found = cache.entries(folder, keys=True)
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
