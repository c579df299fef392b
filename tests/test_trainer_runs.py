"""Trainer run folders (docs/checkpoints.md): a real transformers.Trainer run's output_dir is its
checkpoints in step order, each with its step and the eval_loss the run logged there; the
exact figure is the model's own loss, one document at a time."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

import evalloss
from tests import hf, trainer
from tests.conftest import run

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "docs" / "report-schema.json").read_text())
STEPS = (5, 10, 15)  # in text order 10, 15, 5


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("run")
    start = hf.gpt2(root / "start", positions=512)
    hf.tokenizer(start, vocab=300)
    eval_docs = [d for d in hf.corpus(24, seed=5) if len(d.split()) >= 2]
    done = trainer.train(start, root / "out", hf.corpus(60, seed=4), eval_docs,
                         max_steps=STEPS[-1], eval_steps=STEPS[0], save_steps=STEPS[0])  # fmt: skip
    data = root / "val.txt"
    data.write_text("".join(d + "\n" for d in eval_docs), encoding="utf-8")
    marker = root / "unpickled"
    for step in STEPS:
        trainer.plant_pickles(root / "out" / f"checkpoint-{step}", marker)
    logged = {e["step"]: e["eval_loss"] for e in done.state.log_history if "eval_loss" in e}
    return {"root": root, "out": root / "out", "data": data, "marker": marker, "logged": logged,
            "start": start}  # fmt: skip


def _ids(folder: Path, data: Path) -> list[list[int]]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    return [tokenizer.encode(d).ids for d in data.read_text(encoding="utf-8").splitlines()]


def _rows(lines: list[str], header: str) -> list[list[str]]:
    """The cells of the table under the line that starts with ``header``."""
    start = next(i for i, line in enumerate(lines) if line.startswith(header)) + 2
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return [line.split() for line in lines[start:end]]


def test_a_run_folder_is_its_checkpoints_in_step_order(trained: dict[str, Any]) -> None:
    out, data, logged = trained["out"], trained["data"], trained["logged"]
    assert sorted(logged) == list(STEPS)  # Trainer evaluated at every save
    report = evalloss.compare([out], data=data)
    assert [m.step for m in report.stepped] == list(STEPS)
    assert [m.name for m in report.stepped] == [f"checkpoint-{s}" for s in STEPS]
    for model in report.stepped:
        assert model.logged_eval_loss == logged[model.step]  # what Trainer itself logged
        folder = Path(model.path)
        loss_sum, tokens = hf.own_loss(folder, _ids(folder, data))
        assert model.tokens == tokens
        assert model.loss_per_token == pytest.approx(loss_sum / tokens, rel=1e-6)
    exact = sorted(report.models, key=lambda m: (m.loss_per_token or math.inf, m.rank))
    assert [m.rank for m in exact] == [1, 2, 3]  # ranked by the exact figure, not the step
    assert not trained["marker"].exists()  # no pickle beside the weights was opened


def test_the_json_report_has_the_steps_and_fits_the_schema(trained: dict[str, Any]) -> None:
    result = run("compare", trained["out"], trained["start"], "--data", trained["data"],
                 "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    jsonschema.Draft202012Validator(SCHEMA).validate(document)
    # Trainer's tokenizer.json gains a post-processor that adds nothing: the same tokenizer
    assert "ranked_by" not in document
    by_name = {m["name"]: m for m in document["models"]}
    assert by_name["start"]["step"] is None and by_name["start"]["logged_eval_loss"] is None
    for step in STEPS:
        entry = by_name[f"checkpoint-{step}"]
        assert entry["step"] == step
        assert entry["logged_eval_loss"] == trained["logged"][step]
    plain = json.loads(run("compare", trained["start"], "--data", trained["data"], "--format",
                           "json").stdout)  # fmt: skip
    assert "step" not in plain["models"][0]  # no Trainer checkpoint: no step fields
    assert not trained["marker"].exists()


def test_a_checkpoint_of_the_run_is_the_baseline(trained: dict[str, Any]) -> None:
    out = trained["out"]
    report = evalloss.compare([out], data=trained["data"], baseline=out / "checkpoint-5")
    assert len(report.models) == 3  # listed once, not added again
    base = next(m for m in report.models if m.is_baseline)
    assert base.step == 5 and all(m.vs_baseline for m in report.models if not m.is_baseline)


def test_a_run_folder_where_one_checkpoint_is_wanted_is_one_line(trained: dict[str, Any]) -> None:
    out, data = trained["out"], trained["data"]
    for args in (("compare", trained["start"], "--data", data, "--baseline", out),
                 ("explain", out, "--data", data)):  # fmt: skip
        result = run(*args)
        assert result.exit_code == 2 and result.stdout == ""
        assert result.stderr.count("\n") == 1
        assert "is a Trainer run folder (3 checkpoints, checkpoint-5 to checkpoint-15)" in (
            result.stderr)


def test_every_format_shows_the_curve_in_step_order(trained: dict[str, Any], tmp_path: Path) -> None:
    out, data, logged = trained["out"], trained["data"], trained["logged"]
    page, picture = tmp_path / "r.html", tmp_path / "r.png"
    table = run("compare", out, "--data", data, "--plot", picture)
    assert table.exit_code == 0, table.stderr
    lines = table.stdout.splitlines()
    assert max(map(len, lines)) <= 80, table.stdout
    ranked = [r[1] for r in _rows(lines, "rank ")]
    assert sorted(ranked) == sorted(f"checkpoint-{s}" for s in STEPS)  # in full, not cut
    rows = _rows(lines, "step ")
    assert [r[:2] for r in rows] == [[str(s), f"checkpoint-{s}"] for s in STEPS]
    assert [float(r[3]) for r in rows] == pytest.approx([logged[s] for s in STEPS], rel=1e-5)
    markdown = run("compare", out, "--data", data, "--format", "markdown").stdout
    curve = markdown[markdown.index("in step order") :]
    found = re.findall(r"^\|\s+(\d+) \| `checkpoint-(\d+)`\s+\|", curve, re.MULTILINE)
    assert found == [(str(s), str(s)) for s in STEPS], markdown
    assert run("compare", out, "--data", data, "--format", "html", "-o", page).exit_code == 0
    html = page.read_text(encoding="utf-8")
    section = html[html.index("<h2>The run's curve</h2>") :]
    assert section.count("<polyline") == 2  # exact and logged
    assert picture.read_bytes().startswith(b"\x89PNG")


def test_the_plot_draws_the_exact_curve_against_the_logged_one(trained: dict[str, Any]) -> None:
    from matplotlib.figure import Figure

    from evalloss.render import curve

    report = evalloss.compare([trained["out"]], data=trained["data"])
    ax = Figure().add_subplot()
    curve.axes(ax, report)
    exact, logged = ax.get_lines()
    assert list(exact.get_xdata()) == list(STEPS) == list(logged.get_xdata())
    assert list(exact.get_ydata()) == [m.loss_per_token for m in report.stepped]
    assert list(logged.get_ydata()) == [trained["logged"][s] for s in STEPS]


def test_two_runs_with_the_same_checkpoint_names_stay_apart(trained: dict[str, Any],
                                                            tmp_path: Path) -> None:  # fmt: skip
    import shutil

    first, second = tmp_path / "lr-3e-3", tmp_path / "lr-1e-3"
    shutil.copytree(trained["out"], first)
    shutil.copytree(trained["out"], second)
    result = run("compare", first, second, "--data", trained["data"])
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= 80, result.stdout
    names = [r[1] for r in _rows(lines, "rank ")]
    assert len(set(names)) == 6
    for run_name in ("lr-3e-3", "lr-1e-3"):  # each name says its run and its step
        assert sorted(n.rsplit("-", 1)[1] for n in names if n.startswith(run_name + "/")) == (
            sorted(str(s) for s in STEPS))


def test_the_docs_commands_run_and_show_this_run(trained: dict[str, Any], tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """docs/fine-tuning.md's Trainer-run section: its commands run as written on this run (out/, base/,
    val.txt), and its tables and explain figures are this run's (float32 across machines)."""
    import shlex
    import shutil

    page = (ROOT / "docs" / "fine-tuning.md").read_text(encoding="utf-8")
    page = page[page.index("## Compare the checkpoints of a Trainer run"):]
    shutil.copytree(trained["out"], tmp_path / "out")
    shutil.copytree(trained["start"], tmp_path / "base")
    shutil.copy(trained["data"], tmp_path / "val.txt")
    monkeypatch.chdir(tmp_path)
    (block,) = re.findall(r"^```sh\n(.*?)^```", page, flags=re.S | re.M)
    for line in block.splitlines():
        result = run(*shlex.split(line)[1:])
        assert result.exit_code == 0, (line, result.stderr)
    assert (tmp_path / "run.html").is_file() and (tmp_path / "run.png").is_file()
    shown = re.search(r"^```\n(rank .*?)^```", page, flags=re.S | re.M)
    assert shown is not None
    real = run("compare", "out/", "--data", "val.txt").stdout
    shown_lines, real_lines = shown.group(1).splitlines(), real.splitlines()[2:]
    assert len(shown_lines) == len(real_lines)
    for a, b in zip(shown_lines, real_lines, strict=True):
        if any(c.isdigit() for c in a) and not a.startswith(("the ", "eval_loss")):
            cells_a, cells_b = a.split(), b.split()
            assert cells_a[:2] == cells_b[:2]
            assert [float(c.rstrip("%")) for c in cells_a[2:]] == pytest.approx(
                [float(c.rstrip("%")) for c in cells_b[2:]], rel=1e-4, abs=0.01)
        else:
            assert a == b
    rows = {r.batch_size: r for r in evalloss.explain(
        Path("out/checkpoint-15"), data="val.txt", batch_sizes=(1, 4, 32)).rows}  # fmt: skip
    assert rows[4].sequence_weighted_average == pytest.approx(trained["logged"][15], rel=1e-6)
    for batch, figure in ((4, "4.67161"), (1, "4.27825"), (32, "4.67207")):
        assert figure in page
        assert rows[batch].sequence_weighted_average == pytest.approx(float(figure), rel=1e-4)


def test_no_pickle_beside_the_weights_is_even_read(trained: dict[str, Any], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Not unpickled, and not opened either (not even to hash it): every file Python opens
    during a run is recorded."""
    import builtins
    import io
    import shutil

    out = tmp_path / "out"  # a fresh copy: nothing of it hashed before
    shutil.copytree(trained["out"], out)
    opened: list[str] = []
    real = io.open

    def recording(file: Any, *args: Any, **kwargs: Any) -> Any:
        opened.append(str(file))
        return real(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", recording)
    monkeypatch.setattr(io, "open", recording)
    result = run("compare", out, "--data", trained["data"], "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["provenance"]["sha256"]  # the run did hash its files
    assert any(p.endswith("trainer_state.json") for p in opened)
    touched = sorted({Path(p).name for p in opened} & set(trainer.PICKLES))
    assert not touched, touched
