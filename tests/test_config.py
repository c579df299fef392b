"""[tool.evalloss] in pyproject.toml, --config FILE and EVALLOSS_<OPTION>: defaults for any
option by its long name; the command line overrides the environment, which overrides the
file; a command's table overrides the file's keys for every command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import run

EXAMPLE = Path(__file__).parents[1] / "checkpoints"
CKPT = EXAMPLE / "bs10.safetensors"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with a pyproject.toml, the working directory one level below it."""
    (tmp_path / "pyproject.toml").write_text(
        f'[project]\nname = "x"\n\n[tool.evalloss]\ndata = "{EXAMPLE / "train.csv"}"\n'
        'format = "json"\n\n[tool.evalloss.compare]\nbaseline = '
        f'"{EXAMPLE / "barely.safetensors"}"\nmin-improvement = "1%"\n'
    )
    (tmp_path / "src").mkdir()
    monkeypatch.chdir(tmp_path / "src")
    for name in ("EVALLOSS_FORMAT", "EVALLOSS_LOSS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_the_nearest_pyproject_gives_the_defaults(project: Path) -> None:
    result = run("compare", CKPT)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["data"]["path"] == str(EXAMPLE / "train.csv")
    assert report["gate"]["checks"][0]["detail"].endswith("(1% of 1.11)")


def test_environment_then_command_line_override(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVALLOSS_FORMAT", "csv")
    assert run("compare", CKPT).stdout.startswith("rank,")
    result = run("compare", CKPT, "--format", "markdown", "--min-improvement", "0.9")
    assert result.stdout.startswith("### evalloss") and result.exit_code == 1


def test_config_says_what_is_in_force_and_where_from(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVALLOSS_LOSS", "cross-entropy")
    lines = run("config").stdout.splitlines()
    source = f"({project / 'pyproject.toml'})"
    assert f'compare --format "json"  {source}' in lines
    assert f'compare --min-improvement "1%"  {source}' in lines
    assert 'explain --loss "cross-entropy"  (EVALLOSS_LOSS)' in lines


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('bogus = 1\n', ":2: bogus: unknown option; known:"),
        ('batch-size = "big"\n', ":2: batch-size: 'big' is not a valid integer"),
        ('[compare]\nno-hash = "yes"\n', ":3: no-hash: expected true or false, got 'yes'"),
        ('target = ["a", "b"]\nformat = ["json"]\n', ":3: format: expected one value, not a list"),
        ('format = "json\n', ": --config: cannot read it as TOML (Illegal character"),
    ],
)  # fmt: skip
def test_a_bad_config_is_one_line_naming_file_key_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    config = tmp_path / "evalloss.toml"
    config.write_text("# defaults\n" + text)
    result = run("--config", config, "compare", CKPT, "--data", EXAMPLE / "train.csv")
    assert result.exit_code == 2 and result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"evalloss: error: {config}{message}"), result.stderr
