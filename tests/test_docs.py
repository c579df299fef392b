"""The docs stay in step with the code: docs/cli.md is the live --help, every option is documented."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import click
import pytest
from click.testing import CliRunner

from evalloss.cli import cli

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _gen_cli() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli", DOCS / "gen_cli.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_cli = _gen_cli()


def _commands() -> list[tuple[str, click.Command]]:
    assert isinstance(cli, click.Group)
    return [("evalloss", cli)] + [(f"evalloss {n}", c) for n, c in sorted(cli.commands.items())]


def test_cli_md_is_what_gen_cli_writes_now() -> None:
    written = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert written == gen_cli.generate(), (
        "docs/cli.md is stale: run `python docs/gen_cli.py` and commit docs/cli.md"
    )


@pytest.mark.parametrize(("name", "command"), _commands(), ids=lambda v: str(v))
def test_generated_help_is_the_live_help(name: str, command: click.Command) -> None:
    """The generator's text is byte for byte what a user's `--help` prints at that width."""
    args = [*name.split()[1:], "--help"]
    result = CliRunner().invoke(cli, args, terminal_width=gen_cli.WIDTH, prog_name="evalloss")
    assert result.exit_code == 0, result.output
    assert result.stdout == gen_cli.help_text(name, command) + "\n"


@pytest.mark.parametrize(("name", "command"), _commands(), ids=lambda v: str(v))
def test_every_command_and_option_is_documented(name: str, command: click.Command) -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    assert f"## `{name}`" in text, f"{name} has no section in docs/cli.md"
    assert (command.help or "").strip(), f"{name} has no help text"
    section = text.split(f"## `{name}`", 1)[1].split("\n## ", 1)[0]
    for param in command.params:
        if isinstance(param, click.Option) and not param.hidden:
            assert (param.help or "").strip(), f"{name} {param.opts[-1]} has no help text"
            for opt in param.opts:
                assert opt in section, f"{name} {opt} is not in docs/cli.md"
        elif isinstance(param, click.Argument):
            assert (param.metavar or param.name or "").upper() in section


def test_the_contract_options_are_all_there() -> None:
    """The options the contract promises exist (a removed option is a documented break)."""
    assert isinstance(cli, click.Group)
    compare = {o for p in cli.commands["compare"].params for o in p.opts}
    promised = {
        "--data", "--model", "--model-kwargs", "--loss", "--target", "--feature",
        "--no-header", "--batch-size", "--device", "--precision", "--format", "-o",
        "--output", "--no-progress",
    }  # fmt: skip
    assert promised <= compare


def test_the_check_mode_reports_a_stale_file(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    stale = tmp_path / "cli.md"
    stale.write_text("# old\n", encoding="utf-8")
    monkeypatch.setattr(gen_cli, "OUT", stale)
    assert gen_cli.main(["--check"]) == 1
    assert gen_cli.main([]) == 0
    assert gen_cli.main(["--check"]) == 0
