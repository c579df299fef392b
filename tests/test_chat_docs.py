"""docs/chat-data.md's commands run as written, on the files they name (built here: a base
folder and a fine-tune sharing its tokenizer and chat template, conversations, pairs and
masked token ids), and its Python line gives the same figure as the command line."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import evalloss
from tests import hf  # first: skips without the hf extra
from tests.conftest import run
from tests.test_chat import CONVERSATIONS, MASKED, PAIRS

PAGE = (Path(__file__).parents[1] / "docs" / "chat-data.md").read_text(encoding="utf-8")


def _commands() -> list[str]:
    block = re.search(r"^```sh\n(.*?)^```", PAGE, flags=re.S | re.M)
    assert block is not None
    return [line for line in block.group(1).splitlines() if line.startswith("evalloss ")]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chat-docs")
    hf.chat_folder(root / "base")
    sft = root / "sft"
    shutil.copytree(root / "base", sft)
    hf.gpt2(sft, positions=512, seed=5)  # new weights, the same tokenizer and template
    hf.jsonl(root / "chats.jsonl", [{"messages": c} for c in CONVERSATIONS])
    hf.jsonl(root / "pairs.jsonl", [{"prompt": p, "completion": c} for p, c in PAIRS])
    pq.write_table(pa.Table.from_pylist(MASKED), root / "tokens.parquet")
    return root


@pytest.mark.parametrize("command", _commands())
def test_the_pages_commands_run(workdir: Path, command: str,
                                monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(workdir)
    result = run(*shlex.split(command)[1:])
    gated = "--min-improvement" in command
    assert result.exit_code in ((0, 1) if gated else (0,)), result.stderr
    assert result.stdout


def test_the_python_line_gives_the_command_lines_figure(workdir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.chdir(workdir)
    line = re.search(r"`(evalloss\.compare\(.*?\))`", PAGE)
    assert line is not None
    report = eval(line.group(1), {"evalloss": evalloss})  # the page's own call
    result = run("compare", "sft", "--baseline", "base", "--data", "chats.jsonl", "--score",
                 "all", "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)["models"]
    assert [m.loss_sum for m in report.models] == [m["loss_sum"] for m in shown]
    assert len(_commands()) >= 4
