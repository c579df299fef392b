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
        ('format = "json\n', ":2: --config: cannot read it as TOML (Illegal character"),
        ('batch-size = true\n', ":2: batch-size: expected an integer, got true"),
        ('batch-size = 2.5\n', ":2: batch-size: expected an integer, got 2.5"),
        ('max-loss = false\n', ":2: max-loss: expected a value as the command line takes it, got false"),
        ('[compare]\nthreads = true\n', ":3: threads: expected an integer, got true"),
        ('x = 1\n\n[compare\n', ":4: --config: cannot read it as TOML (Expected ']'"),
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


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (b'[tool.evalloss]\nmax-loss = 0.1\nformat = "json\n', ":3: cannot read it as TOML (Illegal character"),
        (b'[tool.evalloss]\n# caf\xe9\nmax-loss = 0.1\n', ":2: not UTF-8 text (byte 0xe9): TOML is UTF-8"),
    ],
)  # fmt: skip
def test_a_pyproject_that_names_evalloss_and_cannot_be_read_is_an_error_not_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: bytes, message: str
) -> None:
    """A typo in the project's file must not drop the gate it declares: exit 2, one line
    naming the file and the line, never a run that goes on without the file's defaults (and
    so exits 0 where the gate would fail)."""
    (tmp_path / "pyproject.toml").write_bytes(text)
    monkeypatch.chdir(tmp_path)
    result = run("compare", CKPT, "--data", EXAMPLE / "train.csv")
    assert result.exit_code == 2 and result.stdout == "", result.stderr
    assert result.stderr.splitlines() == [result.stderr.rstrip("\n")]
    assert result.stderr.startswith(f"evalloss: error: {tmp_path / 'pyproject.toml'}{message}")


def test_a_broken_pyproject_of_another_tool_is_passed_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One that does not name evalloss cannot hold its defaults: the search goes on up."""
    (tmp_path / "pyproject.toml").write_text(
        f'[tool.evalloss]\ndata = "{EXAMPLE / "train.csv"}"\nformat = "csv"\n'
    )
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "pyproject.toml").write_text('[tool.black\nline-length = 1\n')
    monkeypatch.chdir(tmp_path / "pkg")
    result = run("compare", CKPT)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("rank,")


def test_a_config_that_is_a_fifo_is_refused_unopened(tmp_path: Path) -> None:
    """Reading a FIFO blocks until a writer comes: it is refused before it is opened."""
    import os

    config = tmp_path / "evalloss.toml"
    os.mkfifo(config)
    result = run("--config", config, "compare", CKPT, "--data", EXAMPLE / "train.csv")
    assert result.exit_code == 2
    assert result.stderr == f"evalloss: error: {config}: --config: not a regular file\n"
