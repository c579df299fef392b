"""trainer_state.json is untrusted JSON (docs/checkpoints.md, Trainer run folders): a file that
is not a JSON object is one exit-2 line naming it; inside one, what is not as Trainer writes it
gives a null, never a traceback or a wrong figure. Run folders are expanded numerically."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from evalloss.errors import CheckpointError
from evalloss.models import trainerrun
from tests import hf
from tests.conftest import run


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = hf.gpt2(tmp_path_factory.mktemp("model") / "m", positions=512)
    hf.tokenizer(folder, vocab=300)
    return folder


def _run(root: Path, model: Path, steps: tuple[int, ...], states: dict[int, Any]) -> Path:
    """A run folder of copies of ``model`` as checkpoint-N, with the states given (text is
    written as it is, anything else as JSON)."""
    for step in steps:
        folder = root / f"checkpoint-{step}"
        shutil.copytree(model, folder)
        if step in states:
            state = states[step]
            content = state if isinstance(state, (str, bytes)) else json.dumps(state)
            path = folder / trainerrun.STATE
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
    return root


def _state(step: int, *entries: dict[str, Any]) -> dict[str, Any]:
    return {"global_step": step, "log_history": [{"loss": 3.0, "step": step}, *entries]}


def test_run_folders_expand_in_numeric_step_order(tmp_path: Path, model: Path) -> None:
    out = _run(tmp_path / "out", model, (10, 15, 5, 100), {})
    (out / "checkpoint-last").mkdir()  # not Trainer's name: left alone
    (out / "checkpoint-7").write_text("a file, not a folder")
    expanded = trainerrun.expand([model, out])
    assert expanded == [model, *(str(out / f"checkpoint-{s}") for s in (5, 10, 15, 100))]
    assert not trainerrun.is_run(model) and not trainerrun.is_run(out / "checkpoint-5")
    assert [logged.step if logged else None for logged in trainerrun.logged(expanded[1:])] == [
        5, 10, 15, 100]  # fmt: skip


def test_the_logged_eval_loss_is_the_one_at_that_step(tmp_path: Path, model: Path) -> None:
    history = [{"eval_loss": 2.5, "step": 5}, {"eval_loss": 2.25, "step": 10},
               {"eval_loss": 2.0, "step": 15}]  # fmt: skip
    # checkpoint-5's own state logs it; checkpoint-10's has none, the run's latest (15) does
    states = {5: _state(5, history[0]), 10: {"global_step": 10},
              15: _state(15, *history)}  # fmt: skip
    out = _run(tmp_path / "out", model, (5, 10, 15, 20), states)
    found = trainerrun.logged([str(out / f"checkpoint-{s}") for s in (5, 10, 15, 20)])
    assert [(f.step, f.eval_loss) if f else None for f in found] == [
        (5, 2.5), (10, 2.25), (15, 2.0), (20, None)]  # fmt: skip
    # a folder not named checkpoint-N: its own global_step
    final = tmp_path / "final"
    shutil.copytree(model, final)
    (final / trainerrun.STATE).write_text(json.dumps(_state(40, {"eval_loss": 1.5, "step": 40})))
    assert trainerrun.logged([str(final), str(model)]) == (trainerrun.Logged(40, 1.5), None)


@pytest.mark.parametrize(
    "state",
    [
        {"log_history": "not a list"},
        {"log_history": [1, None, "x", {"step": "5", "eval_loss": 1.0}, {"step": True}]},
        {"log_history": [{"step": 5, "eval_loss": "1.0"}]},
        {"log_history": [{"step": 5, "eval_loss": True}]},
        '{"log_history": [{"step": 5, "eval_loss": NaN}]}',
        '{"log_history": [{"step": 5, "eval_loss": Infinity}]}',
        '{"log_history": [{"step": 5, "eval_loss": 1e999}]}',
        {"log_history": [{"step": 5, "eval_loss": 10**400}]},
        {"log_history": [{"step": 5, "eval_loss": [1.0]}]},
        {"global_step": "5", "log_history": []},
    ],
)
def test_what_trainer_would_not_write_is_a_null(tmp_path: Path, model: Path, state: Any) -> None:
    out = _run(tmp_path / "out", model, (5,), {5: state})
    assert trainerrun.logged([str(out / "checkpoint-5")]) == (trainerrun.Logged(5, None),)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "cannot read it as JSON (Expecting property name"),
        ("[1, 2]", "is not a JSON object"),
        (b"\xff\xfe{}", "cannot read it as JSON"),
        ("[" * 100_000 + "]" * 100_000, "cannot read it as JSON"),
        ('{"global_step": ' + "9" * 5000 + "}", "cannot read it as JSON (Exceeds the limit"),
    ],
)
def test_a_state_that_is_not_a_json_object_is_one_line(
    tmp_path: Path, model: Path, content: str | bytes, message: str
) -> None:
    out = _run(tmp_path / "out", model, (5, 10), {10: content})
    data = tmp_path / "val.txt"
    data.write_text("the model\nexact sum of the loss\n", encoding="utf-8")
    result = run("compare", out, "--data", data)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    state = out / "checkpoint-10" / trainerrun.STATE
    assert result.stderr.startswith(f"evalloss: error: {state}: {message}"), result.stderr


def test_a_huge_state_is_refused_unread(tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainerrun, "MAX_STATE_BYTES", 100)
    out = _run(tmp_path / "out", model, (5,), {5: _state(5, {"eval_loss": 1.0, "step": 5,
                                                             "pad": "x" * 200})})  # fmt: skip
    with pytest.raises(CheckpointError, match="is larger than"):
        trainerrun.logged([str(out / "checkpoint-5")])
