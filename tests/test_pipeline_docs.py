"""docs/pipelines.md's examples are meant to be copied: every YAML, TOML and Python block
parses, every shell block passes ``bash -n``, every ``evalloss`` command in them uses options
that exist, and the action is given only inputs it declares."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import click
import pytest
import tomllib
import yaml

from evalloss.cli import cli

ROOT = Path(__file__).parents[1]
PAGE = (ROOT / "docs" / "pipelines.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", PAGE, flags=re.S | re.M)
ACTION = yaml.safe_load((ROOT / "action.yml").read_text(encoding="utf-8"))


def _blocks(*languages: str) -> list[str]:
    found = [body for language, body in BLOCKS if language in languages]
    assert found, languages
    return found


def _commands(text: str) -> list[str]:
    """Every ``evalloss <command> ...`` in ``text``, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return re.findall(r"\bevalloss (?:compare|explain)\b[^\n\"]*", joined)


def _check_options(command: str) -> None:
    name = command.split()[1]
    known = {
        opt
        for p in cli.commands[name].params  # type: ignore[union-attr]
        if isinstance(p, click.Option)
        for opt in p.opts
    }
    used = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", command))
    assert used <= known, (command, used - known)


def test_the_page_has_every_example() -> None:
    languages = [language for language, _ in BLOCKS]
    assert {"yaml", "bash", "python", "toml"} <= set(languages)
    assert languages.count("yaml") >= 2  # GitHub Actions and GitLab CI


@pytest.mark.parametrize("body", _blocks("yaml"))
def test_yaml_blocks_parse_and_use_real_options(body: str) -> None:
    document = yaml.safe_load(body)
    assert document
    text = body.replace("\n        ", " ")  # GitLab's folded script lines
    commands = _commands(text)
    for command in commands:
        _check_options(command)
    if isinstance(document, list):  # a workflow's steps alone
        steps = document
    else:
        steps = [step for job in document.get("jobs", {}).values() for step in job["steps"]]
    for step in steps:
        if str(step.get("uses", "")).startswith("OWNER/evalloss"):
            given = step["with"]
            assert set(given) <= set(ACTION["inputs"]), set(given) - set(ACTION["inputs"])
            _check_options(f"evalloss compare {given.get('args', '')}")
            commands.append("the action")
    assert commands, body


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("body", _blocks("bash", "sh"))
def test_shell_blocks_pass_bash_n(body: str) -> None:
    proc = subprocess.run(["bash", "-n"], input=body, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    for command in _commands(body):
        _check_options(command)


@pytest.mark.parametrize("body", _blocks("toml"))
def test_toml_blocks_parse(body: str) -> None:
    assert tomllib.loads(body)


@pytest.mark.parametrize("body", _blocks("python"))
def test_python_blocks_compile(body: str) -> None:
    compile(body, "docs/pipelines.md", "exec")
    for command in _commands(" ".join(re.findall(r'"([^"]*)"', body))):
        _check_options(command)
