"""The docs stay in step with the code: docs/cli.md is the live --help, every option is documented."""

from __future__ import annotations

import importlib.util
import json
import math
import re
from pathlib import Path
from types import ModuleType

import click
import pytest
import torch
from click.testing import CliRunner

from evalloss import losses
from evalloss.cli import cli
from tests.oracles import assert_same_text

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


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def test_the_training_script_in_api_md_runs_and_prints_the_exact_loss(
    tmp_path, monkeypatch, capsys
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(_python_blocks((DOCS / "api.md").read_text())[0], namespace)
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in printed] == ["epoch 0", "epoch 1", "epoch 2"]
    model, holdout = namespace["model"], namespace["holdout"]
    assert isinstance(model, torch.nn.Module)
    with torch.no_grad():  # independent: float64 per-item losses, summed with fsum
        losses = [
            v
            for inputs, targets in holdout  # type: ignore[attr-defined]
            for v in torch.nn.functional.cross_entropy(
                model.double()(inputs.double()), targets, reduction="none"
            ).tolist()
        ]
    assert f"holdout loss per item {math.fsum(losses) / len(losses):.4f}" in printed[-1]
    assert "over 200 items" in printed[-1]
    assert (tmp_path / "run1.safetensors").is_file()


def test_relative_links_in_the_docs_resolve() -> None:
    for page in [*DOCS.glob("*.md"), DOCS.parent / "README.md"]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_readme_commands_and_example_output_are_live(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's first command (less its install) prints the table the README shows; its
    second command is the one .ci/run runs."""
    root = DOCS.parent
    monkeypatch.chdir(root)
    readme = (root / "README.md").read_text(encoding="utf-8")
    commands = [line.strip() for line in readme.splitlines() if line.startswith("    python3 -m venv")]
    assert len(commands) == 2
    assert commands[1] in (root / ".ci" / "run").read_text(encoding="utf-8")
    args = commands[0].split(".venv/bin/evalloss ", 1)[1].split()
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    shown = readme.split("`evalloss compare` tells the truth:\n\n```\n", 1)[1].split("```", 1)[0]
    assert_same_text(shown, result.stdout)


def test_readme_language_model_example_is_live(monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's language-model table is what its command prints (float32: to tolerance)."""
    root = DOCS.parent
    monkeypatch.chdir(root)
    readme = (root / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Language models\n", 1)[1]
    command = next(line.strip() for line in section.splitlines() if "evalloss compare" in line)
    shown = section.split("```\n", 1)[1].split("```", 1)[0]
    result = CliRunner().invoke(cli, command.split()[1:], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    assert_same_text(shown, result.stdout)
    log = json.loads((root / "checkpoints" / "lm" / "training_log.json").read_text())
    for name, run in log.items():
        assert f"| {name}" in section and str(run["epoch_loss"]) in section


def _named(text: str) -> list[str]:
    """The loss names written in ``text``, as code (`mse`), in order."""
    return [n for n in re.findall(r"`([a-z0-9-]+)`", text) if n in losses.ROWS]


def test_the_docs_list_the_loss_table() -> None:
    """Where the docs list the losses, they list the table's rows: every per-item loss (a
    checkpoint's ``evalloss.loss``, `evaluate`'s names), and each target kind's in tensors.md."""
    per_item = [r.name for r in losses.ROWS.values() if not r.per_token]
    api = (DOCS / "api.md").read_text(encoding="utf-8")
    assert _named(api.split("Loss names: ", 1)[1].split(".\n", 1)[0]) == per_item
    checkpoints = (DOCS / "checkpoints.md").read_text(encoding="utf-8")
    assert _named(checkpoints.split("| `evalloss.loss` |", 1)[1].split("\n", 1)[0]) == per_item
    tensors = (DOCS / "tensors.md").read_text(encoding="utf-8")
    for kind in (losses.Target.CLASSES, losses.Target.BINARY, losses.Target.VALUES):
        names = [f"`{r.name}`" for r in losses.ROWS.values() if r.target is kind]
        assert f"| {', '.join(names)} |" in tensors, kind
