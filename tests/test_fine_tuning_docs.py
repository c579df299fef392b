"""docs/fine-tuning.md's commands are meant to be copied: each one runs here, as written, on
tiny folders named as the page names them (a base, three LoRA adapters, valid.jsonl)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from tests import hf  # first: skips without the hf extra
from tests import peft_folders as pf
from tests.conftest import run

PAGE = (Path(__file__).parents[1] / "docs" / "fine-tuning.md").read_text(encoding="utf-8")
COMMANDS = [line for body in re.findall(r"^```bash\n(.*?)^```", PAGE, flags=re.S | re.M)
            for line in body.splitlines() if line.startswith("evalloss ")]  # fmt: skip


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fine-tuning")
    base = hf.gpt2(root / "base", positions=512)
    hf.tokenizer(base)
    for seed, name in enumerate(("lora-a", "lora-b", "lora-c"), start=1):
        pf.lora(base, root / name, seed=seed)
    hf.jsonl(root / "valid.jsonl", [{"text": d} for d in hf.corpus(20)])
    return root


def test_the_page_has_its_commands() -> None:
    assert len(COMMANDS) >= 4, COMMANDS
    assert any("--baseline base" in c and "--min-improvement" in c for c in COMMANDS)
    assert "## Compare the checkpoints of a Trainer run" in PAGE


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_runs_as_written(command: str, folders: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(folders)
    args = shlex.split(command)[1:]
    gated = "--min-improvement" in args
    result = run(*args, *([] if "--format" in args else ["--format", "json"]))
    assert result.exit_code in ((0, 1) if gated else (0,)), result.stderr
    assert "error" not in result.stderr, result.stderr
    if "--format" in command:  # the gate's Markdown report: every adapter against the base
        assert "lora-a" in result.stdout and "base" in result.stdout
        return
    names = [m["name"] for m in json.loads(result.stdout)["models"]]
    assert sorted(names) == sorted(a for a in args if a.startswith("lora-"))
