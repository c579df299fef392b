"""Write docs/cli.md from the live ``--help`` of every command: ``python docs/gen_cli.py``.

``tests/test_docs.py`` fails when docs/cli.md differs from what this would write now, so
after adding or changing an option, run this script and commit docs/cli.md with the change.
``python docs/gen_cli.py --check`` exits 1 instead of writing when the file is stale.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from evalloss.cli import cli

OUT = Path(__file__).with_name("cli.md")
WIDTH = 88  # fixed, so the text does not depend on the terminal that ran the script

HEADER = """\
# Command-line reference

<!-- Generated from the live --help by `python docs/gen_cli.py`; do not edit by hand.
     After changing a command or option, run `python docs/gen_cli.py` and commit this file:
     tests/test_docs.py fails when the two drift apart. -->

Every command and option, exactly as `--help` prints them. Exit codes: 0 report produced (gate
passed or none), 1 gate failed, 2 usage or input error (one line on stderr), 3 internal error,
130/143 interrupted, 141 stdout closed early.
"""


def commands() -> list[tuple[str, click.Command]]:
    """(``evalloss sub``, command) for the group and every subcommand, in name order."""
    found: list[tuple[str, click.Command]] = [("evalloss", cli)]
    assert isinstance(cli, click.Group)
    for name in sorted(cli.commands):
        found.append((f"evalloss {name}", cli.commands[name]))
    return found


def help_text(name: str, command: click.Command) -> str:
    """What ``NAME --help`` prints on a WIDTH-column terminal."""
    size = {"terminal_width": WIDTH, "max_content_width": WIDTH}
    ctx = root = click.Context(cli, info_name="evalloss", **cli.context_settings, **size)
    if command is not cli:
        ctx = click.Context(
            command, parent=root, info_name=name.split()[-1], **command.context_settings, **size
        )
    return command.get_help(ctx)


def generate() -> str:
    parts = [HEADER]
    for name, command in commands():
        parts.append(f"## `{name}`\n\n```\n{help_text(name, command)}\n```\n")
    return "\n".join(parts)


def main(argv: list[str]) -> int:
    text = generate()
    if "--check" in argv:
        if OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is stale: run python docs/gen_cli.py", file=sys.stderr)
            return 1
        return 0
    OUT.write_text(text, encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
