"""Hostile model folders that used to end in a traceback (exit 3), each now one exit-2 line:
code or quantization asked for in a nested sub-config, a sub-config where the model type has
none, a tokenizer whose regex makes the Rust engine panic, and links that loop."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import evalloss
from tests import hf  # first: skips without the hf extra
from tests.conftest import run

MARKER_CODE = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n"


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hostile")
    folder = hf.gpt2(root / "gpt2")
    hf.tokenizer(folder, vocab=120)
    return {"gpt2": folder, "data": hf.jsonl(root / "d.jsonl", [{"input_ids": [1, 2, 3]}] * 3),
            "text": _text(root / "d.txt")}  # fmt: skip


def _text(path: Path) -> Path:
    path.write_text("the model\n" + "a" * 3000 + "!\n", encoding="utf-8")
    return path


def _copy(made: dict[str, Path], tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the folder with code beside it that would leave a marker if imported."""
    folder = tmp_path / "model"
    shutil.copytree(made["gpt2"], folder)
    marker = tmp_path / "marker"
    for name in ("modeling_evil.py", "configuration_evil.py", "tokenization_evil.py"):
        (folder / name).write_text(MARKER_CODE.format(marker=str(marker)))
    return folder, marker


def _edit(path: Path, **changes: object) -> None:
    value = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**value, **changes}))


def _refused(data: Path, folder: Path, where: Path, *parts: str) -> None:
    result = run("compare", folder, "--data", data)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith(f"evalloss: error: {where}"), result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    for part in parts:
        assert part in result.stderr, result.stderr


CODE = {"AutoModelForCausalLM": "modeling_evil.Evil"}


@pytest.mark.parametrize(
    ("file", "changes", "key"),
    [
        ("config.json", {"text_config": {"model_type": "gpt2", "auto_map": CODE}},
         "text_config.auto_map"),
        ("config.json", {"text_config": {"auto_map": None}}, "text_config.auto_map"),
        ("config.json", {"vision_config": {"layers": [{}, {"auto_map": CODE}]}},
         "vision_config.layers[1].auto_map"),
        ("config.json", {"decoder": {"encoder": {"text_config": {"auto_map": "x.Y"}}}},
         "decoder.encoder.text_config.auto_map"),
        ("config.json", {"text_config": {"quantization_config": {"quant_method": "gptq"}}},
         "text_config.quantization_config"),
        ("tokenizer_config.json", {"extra": {"auto_map": {"AutoTokenizer": ["x.T", None]}}},
         "extra.auto_map"),
    ],
)  # fmt: skip
def test_code_asked_for_at_any_depth_is_refused(
    made: dict[str, Path], tmp_path: Path, file: str, changes: dict[str, object], key: str
) -> None:
    """Was: a nested ``auto_map`` passed the check, then transformers' own parsing of the
    sub-config crashed (exit 3). Every level is walked; the key path is named."""
    folder, marker = _copy(made, tmp_path)
    _edit(folder / file, **changes)
    why = "quantized" if "quantization" in key else "remote code"
    _refused(made["data"], folder, folder / file, f": {key}: ", why)
    assert not marker.exists()


def test_a_deep_config_is_walked_without_recursion(made: dict[str, Path], tmp_path: Path) -> None:
    folder, _ = _copy(made, tmp_path)
    deep: object = {"auto_map": CODE}
    for _ in range(600):  # as deep as Python's JSON parser reads
        deep = {"n": deep}
    _edit(folder / "config.json", text_config=deep)
    _refused(made["data"], folder, folder / "config.json", "auto_map", "remote code")


@pytest.mark.parametrize("name", ["text_config", "decoder", "text_encoder"])
@pytest.mark.parametrize("value", [{"n_embd": 16}, 3, "gpt2"])
def test_a_sub_config_the_model_type_has_not_is_refused(
    made: dict[str, Path], tmp_path: Path, name: str, value: object
) -> None:
    """Was: GPT-2 with a ``text_config`` object: transformers' generation config called
    ``.to_dict()`` on a dict (AttributeError, exit 3)."""
    folder, marker = _copy(made, tmp_path)
    _edit(folder / "config.json", **{name: value})
    _refused(made["data"], folder, folder / "config.json", f": {name}: ",
             "not a sub-config model type 'gpt2' has")  # fmt: skip
    assert not marker.exists()


def _split(folder: Path, pattern: str, where: str = "pre_tokenizer") -> None:
    path = folder / "tokenizer.json"
    tokenizer = json.loads(path.read_text())
    tokenizer[where] = (
        {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}
        if where == "pre_tokenizer"
        else {"type": "Replace", "pattern": {"Regex": pattern}, "content": "b"}
    )
    path.write_text(json.dumps(tokenizer))


@pytest.mark.parametrize(
    ("pattern", "where"),
    [("(a+)+$", "pre_tokenizer"), ("(a|aa)+$", "pre_tokenizer"), ("(a+)+!b", "normalizer")],
)
def test_a_regex_that_makes_the_engine_panic_is_one_line(
    made: dict[str, Path], tmp_path: Path, pattern: str, where: str
) -> None:
    """Oniguruma's retry limit is a Rust panic (pyo3's PanicException, a BaseException): was a
    traceback and Rust's own panic lines. Run as a process: Rust writes to descriptor 2."""
    folder, _ = _copy(made, tmp_path)
    _split(folder, pattern, where)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "RUST_BACKTRACE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "evalloss", "compare", str(folder), "--data", str(made["text"])],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(f"evalloss: error: {folder / 'tokenizer.json'}: ")
    assert "panicked on documents 1-2 of" in done.stderr and "retry-limit" in done.stderr
    with pytest.raises(evalloss.DataError, match="panicked"):  # the library: the same error
        evalloss.compare([folder], data=made["text"])


def test_a_tokenizer_that_works_passes_its_output_on(
    made: dict[str, Path], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Descriptor 2 is held only while the tokenizer runs, and what it held is passed on."""
    from evalloss.sources import tokenizer

    loaded = tokenizer.load(str(made["gpt2"] / "tokenizer.json"))
    with tokenizer._stderr_held():
        os.write(2, b"said while held\n")
    ids = tokenizer.encode(loaded, ["the model", ""], "t.json", "d.txt", 0)
    assert [len(i) for i in ids][1] == 0 and len(ids[0]) > 0
    assert capfd.readouterr().err == "said while held\n"


@pytest.mark.parametrize(
    "member", ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
)
def test_a_member_that_is_a_link_loop_is_one_line(
    made: dict[str, Path], tmp_path: Path, member: str
) -> None:
    """A folder whose file is a link to itself: never followed into a traceback."""
    folder, _ = _copy(made, tmp_path)
    (folder / member).unlink(missing_ok=True)
    (folder / member).symlink_to(folder / member)
    result = run("compare", folder, "--data", made["text"])
    if member == "tokenizer_config.json":  # not a file: there is no tokenizer config
        assert result.exit_code == 0, result.stderr
        return
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stderr.startswith("evalloss: error: ")


def test_a_folder_that_is_a_link_loop_is_one_line(made: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    for checkpoint in (tmp_path / "a", f"{tmp_path / 'a'}/", tmp_path / "a" / "model"):
        result = run("compare", checkpoint, "--data", made["text"])
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "symbolic links" in result.stderr
