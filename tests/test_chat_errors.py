"""Hostile chat templates and malformed chat data: each one exit-2 line naming the file and
its line (JSON Lines) or row (Parquet), nothing run, in bounded steps; never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from evalloss.sources import template
from tests import hf  # first: skips without the hf extra
from tests.conftest import run

GOOD = [{"role": "user", "content": "the model"}, {"role": "assistant", "content": "loss"}]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hf.chat_folder(tmp_path_factory.mktemp("chat-errors") / "gpt2")


def _folder(base: Path, tmp_path: Path, chat_template: object, **config: object) -> Path:
    """The base folder with another template (and tokenizer config)."""
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (folder / name).symlink_to(base / name)
    settings = {"eos_token": "<s>", **config}
    if chat_template is not None:
        settings["chat_template"] = chat_template
    (folder / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
    return folder


def _one_line(result: object, *parts: str) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stderr)  # type: ignore[attr-defined]
    assert result.stdout == ""  # type: ignore[attr-defined]
    lines = result.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0]
    for part in parts:
        assert part in lines[0], (part, lines[0])
    return str(lines[0])


HOSTILE = {
    "attribute walk": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals": "{{ cycler.__init__.__globals__.os.popen('touch MARKER').read() }}",
    "namespace": "{{ namespace.__init__.__globals__ }}",
    "huge range": "{% for i in range(10**12) %}x{% endfor %}",
    "include": "{% include '/etc/passwd' %}",
    "import": "{% import 'os' as os %}{{ os }}",
    "raise": "{{ raise_exception('no such role: ' ~ messages[0]['role']) }}",
    "loop in a loop": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                      "{% endfor %}",
    "huge string": "{{ 'a' * 10**10 }}",
    "huge width": "{{ '%0999999999d' | format(1) }}",
    "huge filter argument": "{{ 'x' | center(10**10) }}",
    "huge number": "{% set n = namespace(v=3) %}{% for i in range(40) %}{% set n.v = n.v ** 3 %}"
                   "{% endfor %}{{ n.v }}",
}  # fmt: skip


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_template_is_one_line_and_runs_nothing(
    base: Path, tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(template, "MAX_STEPS", 20_000)  # the loop in a loop: a quick end
    folder = _folder(base, tmp_path, "{% generation %}{% endgeneration %}" + HOSTILE[name])
    data = hf.jsonl(tmp_path / "c.jsonl", [{"messages": GOOD}])
    line = _one_line(run("compare", folder, "--data", data), f"{data}:1: messages: ")
    assert "chat template" in line
    assert not (tmp_path / "MARKER").exists()


def test_a_template_that_takes_memory_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """The memory check, with the process's peak as this test says it is."""
    peaks = iter(range(0, 1 << 40, 1 << 28))  # the peak grows by 256 MiB a step
    monkeypatch.setattr(template, "_peak", lambda: next(peaks))
    source = "{% for i in range(100) %}{{ i }}{% endfor %}"
    compiled = template.ChatTemplate("t", source, {}, template._compiled("t", source))
    with pytest.raises(template.RenderError, match="more than 1024 MiB"):
        compiled.render(GOOD)


def test_a_template_that_does_not_compile_names_its_file(base: Path, tmp_path: Path) -> None:
    folder = _folder(base, tmp_path, "{% for m in messages %}{{ m")
    data = hf.jsonl(tmp_path / "c.jsonl", [{"messages": GOOD}])
    _one_line(run("compare", folder, "--data", data), str(folder / "tokenizer_config.json"),
              "cannot compile the chat template")  # fmt: skip


def test_no_template_and_no_generation_blocks(base: Path, tmp_path: Path) -> None:
    data = hf.jsonl(tmp_path / "c.jsonl", [{"messages": GOOD}])
    bare = _folder(base, tmp_path, None)
    _one_line(run("compare", bare, "--data", data), "no chat template")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "x").touch()
    unmarked = _folder(base, plain, "{% for m in messages %}{{ m['content'] }}{% endfor %}")
    _one_line(run("compare", unmarked, "--data", data), "no {% generation %} blocks",
              "--score all")  # fmt: skip
    result = run("compare", unmarked, "--data", data, "--score", "all", "--format", "json")
    assert result.exit_code == 0, result.stderr


ROLE_CHECK = ("{% for m in messages %}{% if m['role'] not in ['user', 'assistant'] %}"
              "{{ raise_exception('unknown role ' ~ m['role']) }}{% endif %}{% generation %}"
              "{{ m['content'] }}{% endgeneration %}{% endfor %}")  # fmt: skip
BAD_ROWS = {
    "no assistant turn": ({"messages": [{"role": "user", "content": "hi"}]}, "no assistant turn"),
    "a role the template refuses": ({"messages": [{"role": "tool", "content": "x"}, *GOOD]},
                                    "unknown role tool"),
    "content not a string": ({"messages": [{"role": "user", "content": 7}, *GOOD]},
                             "message 0: content must be a string, not 7"),
    "messages not a list": ({"messages": "hello"}, "non-empty list"),
    "a message not an object": ({"messages": ["hi", *GOOD]}, "message 0 is \"hi\", not an object"),
    "empty messages": ({"messages": []}, "non-empty list"),
}  # fmt: skip


ONE_TYPE = ("content not a string", "messages not a list", "a message not an object")
CASES = [(name, "jsonl") for name in BAD_ROWS] + [
    (name, "parquet") for name in BAD_ROWS if name not in ONE_TYPE  # one type per column
]


@pytest.mark.parametrize(("name", "form"), CASES)
def test_a_malformed_conversation_is_named_by_its_line_or_row(
    base: Path, tmp_path: Path, name: str, form: str
) -> None:
    folder = _folder(base, tmp_path, ROLE_CHECK)
    bad, why = BAD_ROWS[name]
    rows = [{"messages": GOOD}, {"messages": GOOD}, bad]
    if form == "jsonl":
        data = tmp_path / "c.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" + ("\n" if i == 0 else "")
                                for i, r in enumerate(rows)))  # fmt: skip
        where = f"{data}:4: messages: "  # the blank line counts
    else:
        data = tmp_path / "c.parquet"
        pq.write_table(pa.Table.from_pylist(rows), data)
        where = f"{data}: messages: row 3: "
    _one_line(run("compare", folder, "--data", data), where, why)


def test_bad_pairs_and_masks(base: Path, tmp_path: Path) -> None:
    pairs = hf.jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "completion": "b"},
                                            {"prompt": "a", "completion": 5}])  # fmt: skip
    _one_line(run("compare", base, "--data", pairs), f"{pairs}:2: completion: ",
              "completion must be a string")  # fmt: skip
    no_eos = _folder(base, tmp_path, None, eos_token=None)
    _one_line(run("compare", no_eos, "--data", pairs), "no eos_token")
    rows = [{"input_ids": [1, 2, 3], "completion_mask": [0, 1, 1]},
            {"input_ids": [1, 2, 3], "completion_mask": [0, 1]},
            {"input_ids": [1, 2, 3], "completion_mask": [0, 2, 1]}]  # fmt: skip
    short = hf.jsonl(tmp_path / "m.jsonl", rows[:2])
    _one_line(run("compare", base, "--data", short), f"{short}:2: completion_mask: ",
              "2 mask values for 3 tokens")  # fmt: skip
    parquet = tmp_path / "m.parquet"
    pq.write_table(pa.Table.from_pylist([rows[0], rows[2]]), parquet)
    _one_line(run("compare", base, "--data", parquet), "row 2", "mask value 2 at token 1")
    _one_line(run("compare", base, "--data", parquet, "--score", "assistant"),
              "needs a assistant_masks column")  # fmt: skip


def test_score_that_does_not_fit_the_data(base: Path, tmp_path: Path) -> None:
    chat = hf.jsonl(tmp_path / "c.jsonl", [{"messages": GOOD}])
    _one_line(run("compare", base, "--data", chat, "--score", "completion"),
              "completion does not apply to a messages column")  # fmt: skip
    text = hf.jsonl(tmp_path / "t.jsonl", [{"text": "the model"}])
    _one_line(run("compare", base, "--data", text, "--score", "assistant"),
              "needs chat or instruction data")  # fmt: skip
    assert run("compare", base, "--data", text, "--score", "all").exit_code == 0


def test_models_that_share_a_tokenizer_but_not_a_template(base: Path, tmp_path: Path) -> None:
    other = _folder(base, tmp_path, hf.CHAT_TEMPLATE.replace("<|", "<<"))
    chat = hf.jsonl(tmp_path / "c.jsonl", [{"messages": GOOD}])
    _one_line(run("compare", base, other, "--data", chat), "not the same chat template")
