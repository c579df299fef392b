"""Encoder-decoder folders (T5, BART) on input/target pairs: every form gives the model's own
``labels=`` loss one pair at a time, whatever the batching; two models are paired per pair;
bad pairs, plain text and over-long texts are one exit-2 line."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import evalloss
from evalloss.models import open_checkpoint
from evalloss.models.folder import encoder_decoder
from tests import encdec, hf
from tests.conftest import run

PAIRS = [*encdec.pairs(14), {"input": "line with\ttab and \u2028 separator", "target": "x"},
         {"input": "café 東京 😀", "target": "  spaced  "}]  # fmt: skip


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("seq2seq")
    t5 = encdec.t5(root / "t5")
    return {"t5": t5, "t5b": encdec.t5(root / "t5b", seed=1, like=t5),
            "bart": encdec.bart(root / "bart", seed=2)}


@pytest.fixture(scope="module")
def oracle(folders: dict[str, Path]) -> dict[str, list[tuple[float, int]]]:
    """Each folder's own loss, pair by pair (`encdec.own_losses`)."""
    return {name: encdec.own_losses(folder, PAIRS) for name, folder in folders.items()}


def _forms(root: Path, rows: list[dict[str, object]], names: tuple[str, str] = ("input", "target")
           ) -> dict[str, Path]:  # fmt: skip
    columns = {names[0]: [r["input"] for r in rows], names[1]: [r["target"] for r in rows]}
    table = pa.table({"id": list(range(len(rows))), **columns})
    hf.jsonl(root / "p.jsonl", table.to_pylist())
    pq.write_table(table, root / "p.parquet", row_group_size=7)
    pacsv.write_csv(table, root / "p.csv")
    return {p.suffix: p for p in root.glob("p.*")}


def _summed(each: list[tuple[float, int]]) -> tuple[float, int]:
    return math.fsum(s for s, _ in each), sum(t for _, t in each)


@pytest.mark.parametrize("name", ["t5", "bart"])
def test_every_form_gives_the_models_own_labels_loss(
    folders: dict[str, Path], oracle: dict[str, list[tuple[float, int]]], tmp_path: Path,
    name: str,
) -> None:  # fmt: skip
    expected, tokens = _summed(oracle[name])
    target_bytes = sum(len(str(r["target"]).encode("utf-8")) for r in PAIRS)
    for suffix, path in _forms(tmp_path, PAIRS).items():
        report = evalloss.compare([folders[name]], data=path, precision="float64")
        model = report.models[0]
        assert report.loss == "seq2seq-lm" and report.data.targets == ("target",), suffix
        assert (model.items, model.tokens) == (len(PAIRS), tokens), suffix
        assert model.loss_sum == pytest.approx(expected, rel=1e-9), suffix
        assert report.data.bytes == target_bytes, suffix
        assert model.bits_per_byte == pytest.approx(expected / (target_bytes * math.log(2)),
                                                    rel=1e-9)  # fmt: skip


def test_every_target_token_is_scored_with_its_special_tokens(folders: dict[str, Path]) -> None:
    """T5's targets end with </s>; BART's are <s> ... </s>: every token counted, EOS included."""
    from tokenizers import Tokenizer

    for name, extra in (("t5", 1), ("bart", 2)):
        tokenizer = Tokenizer.from_file(str(folders[name] / "tokenizer.json"))
        ids = tokenizer.encode("the model").ids
        assert len(ids) == len(tokenizer.encode("the model", add_special_tokens=False).ids) + extra
        assert ids[-1] == tokenizer.token_to_id("</s>")


def test_the_batching_does_not_change_the_figure(
    folders: dict[str, Path], oracle: dict[str, list[tuple[float, int]]], tmp_path: Path
) -> None:
    """Float64: the padding of another batch moves a sum by rounding only (float32: 1e-10)."""
    data = _forms(tmp_path, PAIRS)[".jsonl"]
    expected, tokens = _summed(oracle["bart"])
    for budget, batch in ((1, None), (300, 3), (None, None)):
        model = evalloss.compare([folders["bart"]], data=data, batch_tokens=budget,
                                 batch_size=batch, precision="float64").models[0]  # fmt: skip
        assert model.tokens == tokens
        assert model.loss_sum == pytest.approx(expected, rel=1e-12), (budget, batch)


def test_two_models_are_paired_pair_by_pair(
    folders: dict[str, Path], oracle: dict[str, list[tuple[float, int]]], tmp_path: Path
) -> None:
    data = _forms(tmp_path, PAIRS)[".parquet"]
    result = run("compare", folders["t5b"], "--baseline", folders["t5"], "--data", data,
                 "--precision", "float64", "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    models = {m["path"]: m for m in json.loads(result.stdout)["models"]}
    a, b = models[str(folders["t5b"])], models[str(folders["t5"])]
    ours, theirs = oracle["t5b"], oracle["t5"]
    tokens = sum(t for _, t in ours)
    assert a["items"] == b["items"] == len(PAIRS) and a["tokens"] == tokens
    delta = math.fsum(x - y for (x, _), (y, _) in zip(ours, theirs, strict=True)) / tokens
    assert a["vs_baseline"]["delta"] == pytest.approx(delta, rel=1e-9)
    wins = sum(x < y for (x, _), (y, _) in zip(ours, theirs, strict=True)) / len(PAIRS)
    assert a["vs_baseline"]["wins"] == pytest.approx(wins)
    low, high = a["vs_baseline"]["ci95"]
    assert low < delta < high


def test_models_of_different_tokenizers_are_ranked_by_bits_per_byte(
    folders: dict[str, Path], oracle: dict[str, list[tuple[float, int]]], tmp_path: Path
) -> None:
    data = _forms(tmp_path, PAIRS)[".csv"]
    report = evalloss.compare([folders["t5"], folders["bart"]], data=data, precision="float64")
    target_bytes = report.data.bytes
    assert target_bytes == sum(len(str(r["target"]).encode("utf-8")) for r in PAIRS)
    for model in report.models:
        expected, _ = _summed(oracle[Path(model.path).name])
        assert model.bits_per_byte == pytest.approx(expected / (target_bytes * math.log(2)),
                                                    rel=1e-9)  # fmt: skip


def test_the_columns_are_named_by_text_column_and_target(
    folders: dict[str, Path], oracle: dict[str, list[tuple[float, int]]], tmp_path: Path
) -> None:
    data = _forms(tmp_path, PAIRS[:6], names=("source", "summary"))[".jsonl"]
    result = run("compare", folders["t5"], "--data", data)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "p.jsonl: input: an encoder-decoder model (seq2seq-lm) scores input/target pairs: " \
           "no column 'input' here (--text-column names it)" in result.stderr  # fmt: skip
    report = evalloss.compare([folders["t5"]], data=data, text_column="source",
                              target=["summary"], precision="float64")  # fmt: skip
    assert report.models[0].loss_sum == pytest.approx(_summed(oracle["t5"][:6])[0], rel=1e-9)
    assert report.data.targets == ("summary",)


def test_the_folder_says_seq2seq_by_its_config(folders: dict[str, Path], tmp_path: Path) -> None:
    """is_encoder_decoder decides, else its config class's default; not the name alone."""
    assert open_checkpoint(folders["t5"]).metadata == {"evalloss.loss": "seq2seq-lm"}
    assert encoder_decoder({"model_type": "t5"}) and encoder_decoder({"model_type": "bart"})
    assert not encoder_decoder({"model_type": "llava"})  # a decoder-only *ForConditionalGeneration
    assert not encoder_decoder({"model_type": "t5", "is_encoder_decoder": False})
    assert not encoder_decoder({"model_type": 5})
    config = json.loads((folders["bart"] / "config.json").read_text())
    copy = tmp_path / "bart"
    copy.mkdir()
    for f in folders["bart"].iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "config.json").write_text(json.dumps({**config, "is_encoder_decoder": False}))
    assert open_checkpoint(copy).metadata == {}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"input": "a", "target": "b"}\n{"input": "a"}\n',
         "p.jsonl:2: target: no target text (null, or no such key)"),
        (b'{"input": "a", "target": "b"}\n\n{"input": "a", "target": ""}\n',
         "p.jsonl:3: target: the target is empty: a pair needs a target to score"),
        (b'{"input": "a", "target": "b"}\n{"input": "a", "target": 3}\n',
         "p.jsonl:2: target: 3 is a number; line 1 has a string"),
        (b'{"input": "a", "target": 3}\n{"input": "a", "target": 4}\n',
         "p.jsonl:1: target: text must be a string, not 3"),
        (b'{"input": 5, "target": "b"}\n{"input": "a", "target": "b"}\n',
         "p.jsonl:1: input: text must be a string, not 5"),
        (b'{"input": "a", "target": "b"}\n{"input": null, "target": "b"}\n',
         "p.jsonl:2: input: no input text (null, or no such key)"),
        (b'{"input": "a", "target": "b"}\n{"input": "a", "target": ["b"]}\n',
         'p.jsonl:2: target: ["b"] is an array; line 1 has a string'),
    ],
)
def test_a_bad_pair_is_one_line(folders: dict[str, Path], tmp_path: Path, content: bytes,
                                message: str) -> None:  # fmt: skip
    (tmp_path / "p.jsonl").write_bytes(content)
    result = run("compare", folders["t5"], "--data", tmp_path / "p.jsonl")
    assert result.exit_code == 2, result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_bad_pairs_in_parquet_and_csv_name_the_row(folders: dict[str, Path], tmp_path: Path
                                                   ) -> None:  # fmt: skip
    rows = [{"input": "a", "target": "b"}] * 3 + [{"input": "a", "target": None}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    result = run("compare", folders["t5"], "--data", tmp_path / "p.parquet")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "p.parquet: target: row 4: no target text" in result.stderr, result.stderr
    (tmp_path / "p.csv").write_text('input,target\na,b\n"two\nlines",c\nd,\n')
    result = run("compare", folders["t5"], "--data", tmp_path / "p.csv")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "p.csv:5: target: the target is empty" in result.stderr, result.stderr


def test_plain_text_for_an_encoder_decoder_is_one_line(folders: dict[str, Path], tmp_path: Path
                                                       ) -> None:  # fmt: skip
    (tmp_path / "d.txt").write_text("a b\nc d\n")
    result = run("compare", folders["t5"], "--data", tmp_path / "d.txt")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "d.txt: an encoder-decoder model (seq2seq-lm) scores input/target text pairs: give " \
           "JSON Lines, Parquet or CSV with an 'input' and a 'target' column" in result.stderr
    hf.jsonl(tmp_path / "d.jsonl", [{"text": "a b"}])
    result = run("compare", folders["t5"], "--data", tmp_path / "d.jsonl")
    assert result.exit_code == 2 and "no column 'input' here" in result.stderr
    assert "columns are: text" in result.stderr


def test_a_text_past_the_models_positions_is_one_line(tmp_path: Path) -> None:
    folder = encdec.bart(tmp_path / "bart", positions=16)
    rows = [{"input": "the model", "target": "the loss"},
            {"input": "the model", "target": " ".join(["window"] * 40)}]  # fmt: skip
    data = hf.jsonl(tmp_path / "p.jsonl", rows)
    result = run("compare", folder, "--data", data)
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "p.jsonl:2: target: the target is " in result.stderr
    assert "longer than the 16 positions the model takes" in result.stderr, result.stderr
    result = run("compare", folder, "--data", hf.jsonl(tmp_path / "q.jsonl", rows[:1]),
                 "--context", "3")  # fmt: skip
    assert result.exit_code == 2 and "p.jsonl" not in result.stderr
    assert "q.jsonl:1: input: the input is " in result.stderr
    assert " tokens, longer than the 3 positions the model takes" in result.stderr


def test_windows_and_causal_lm_are_refused(folders: dict[str, Path], tmp_path: Path) -> None:
    data = _forms(tmp_path, PAIRS[:4])[".jsonl"]
    result = run("compare", folders["t5"], "--data", data, "--context", "8", "--stride", "4")
    assert result.exit_code == 2 and "--stride: an encoder-decoder pair is scored whole" in \
        result.stderr  # fmt: skip
    result = run("compare", folders["t5"], "--data", data, "--loss", "causal-lm")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "is an encoder-decoder model ('t5'): it scores input and target pairs with --loss " \
           "seq2seq-lm" in result.stderr, result.stderr  # fmt: skip


def test_seq2seq_on_a_decoder_only_folder_is_one_line(tmp_path: Path) -> None:
    folder = hf.gpt2(tmp_path / "g")
    hf.tokenizer(folder)
    data = hf.jsonl(tmp_path / "p.jsonl", [{"input": "a", "target": "b"}])
    result = run("compare", folder, "--data", data, "--loss", "seq2seq-lm")
    assert result.exit_code == 2 and result.stderr.count("\n") == 1
    assert "transformers has no sequence-to-sequence LM model for model type 'gpt2'" in \
        result.stderr  # fmt: skip


def test_per_item_export_and_explain_see_pairs(
    folders: dict[str, Path], oracle: dict[str, list[tuple[float, int]]], tmp_path: Path
) -> None:
    data = _forms(tmp_path, PAIRS)[".jsonl"]
    out = tmp_path / "items.parquet"
    result = run("compare", folders["t5"], "--data", data, "--precision", "float64",
                 "--per-item", out, "--batch-tokens", "64")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    table = pq.read_table(out).to_pydict()
    assert table["row"] == list(range(len(PAIRS)))
    assert table["tokens"] == [t for _, t in oracle["t5"]]
    explained = run("explain", folders["t5"], "--data", data, "--precision", "float64",
                    "--batch-size", "4", "--format", "json")  # fmt: skip
    assert explained.exit_code == 0, explained.stderr
    report = json.loads(explained.stdout)
    means = [s / t for s, t in oracle["t5"]]
    assert report["items"] == len(PAIRS)
    assert report["average_of_item_averages"] == pytest.approx(math.fsum(means) / len(means))


def test_the_json_report_fits_the_schema(folders: dict[str, Path], tmp_path: Path) -> None:
    import jsonschema

    schema = json.loads((Path(__file__).parents[1] / "docs" / "report-schema.json").read_text())
    result = run("compare", folders["bart"], "--data", _forms(tmp_path, PAIRS)[".csv"],
                 "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    jsonschema.validate(report, schema)
    assert report["loss"] == "seq2seq-lm" and report["models"][0]["bits_per_byte"] > 0


def test_slices_and_the_cache_work_on_pairs(
    folders: dict[str, Path], oracle: dict[str, list[tuple[float, int]]], tmp_path: Path
) -> None:
    rows = [{**r, "group": "short" if len(str(r["input"])) < 40 else "long"} for r in PAIRS]
    data = hf.jsonl(tmp_path / "p.jsonl", rows)
    args = ["compare", folders["t5"], "--data", data, "--precision", "float64", "--format",
            "json"]  # fmt: skip
    sliced = run(*args, "--slice", "group")
    assert sliced.exit_code == 0, sliced.stderr
    cache = ["--cache", tmp_path / "cache"]
    first, second = run(*args, *cache), run(*args, *cache)
    assert first.exit_code == second.exit_code == 0, first.stderr + second.stderr
    figures = [[{k: v for k, v in m.items() if k != "seconds"} for m in json.loads(r.stdout)[
        "models"]] for r in (first, second)]  # fmt: skip
    assert figures[0] == figures[1]
    assert figures[0][0]["loss_sum"] == pytest.approx(_summed(oracle["t5"])[0], rel=1e-9)
    slices = {s["value"]: s for s in json.loads(sliced.stdout)["models"][0]["slices"]}
    for value in ("short", "long"):
        each = [o for o, r in zip(oracle["t5"], rows, strict=True) if r["group"] == value]
        total, tokens = _summed(each)
        assert slices[value]["items"] == len(each) and slices[value]["weight"] == tokens
        assert slices[value]["loss_per_token"] == pytest.approx(total / tokens, rel=1e-9)
    listed = run("cache", "list", "--cache", tmp_path / "cache")
    assert listed.exit_code == 0 and "1 entries" in listed.stdout and "seq2seq-lm" in listed.stdout


def test_token_ids_past_the_models_vocabulary_are_one_line(tmp_path: Path) -> None:
    """A tokenizer larger than the model: a target token by its row and position, an input
    token by the batch's rows."""
    folder = encdec.t5(tmp_path / "small", vocab=20)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    pieces = (tokenizer.id_to_token(i).replace("\u2581", " ").strip() for i in range(20, tokenizer.get_vocab_size()))
    word = next(p for p in pieces if p and max(tokenizer.encode(p).ids) >= 20)
    for rows, message in (
        ([{"input": "a", "target": "a"}, {"input": "a", "target": f"a {word}"}],
         "p.jsonl:2: target: token "),
        ([{"input": word, "target": "a"}], "forward failed on row 1 with input of shape"),
    ):  # fmt: skip
        result = run("compare", folder, "--data", hf.jsonl(tmp_path / "p.jsonl", rows))
        assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.stderr
        assert message in result.stderr and "outside the" in result.stderr, result.stderr


def _section(page: str, heading: str) -> str:
    return page.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_the_docs_command_runs(
    folders: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/language-models.md's example, as written: its pairs and its command."""
    import shlex

    page = (Path(__file__).parents[1] / "docs" / "language-models.md").read_text("utf-8")
    section = _section(page, "Encoder-decoder models")
    (lines,) = re.findall(r"```jsonl\n(.*?)```", section, flags=re.S)
    (command,) = re.findall(r"```sh\n(evalloss .*?)\n```", section, flags=re.S)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "val.jsonl").write_text(lines, encoding="utf-8")
    for name, folder in (("runs/t5-ft", folders["t5b"]), ("models/t5-base", folders["t5"])):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).symlink_to(folder)
    result = run(*shlex.split(command)[1:], "--precision", "float64", "--format", "json")
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in lines.splitlines()]
    models = {m["path"]: m for m in json.loads(result.stdout)["models"]}
    for name, folder in (("runs/t5-ft", folders["t5b"]), ("models/t5-base", folders["t5"])):
        assert models[name]["loss_sum"] == pytest.approx(encdec.own_loss(folder, rows)[0],
                                                         rel=1e-9)  # fmt: skip
    assert "vs_baseline" in models["runs/t5-ft"]


@pytest.mark.parametrize(
    "phrase",
    [
        "scores input/target pairs: no column ",
        "scores input/target text pairs: give JSON Lines, Parquet or CSV with an ",
        "input/target pairs need a tokenizer",
        "the target is empty: a pair needs a target to score",
        "longer than the 16 positions the model takes (max_position_embeddings, or --context); "
        "evalloss never truncates: shorten it or leave it out",
        "(it adds no special tokens to an empty text)",
        "an encoder-decoder pair is scored whole, never in windows",
        "it scores input and target pairs with --loss seq2seq-lm (docs/language-models.md)",
        "cannot feed its decoder as its labels= loss does",
        "is outside the model's vocabulary",
        "takes one target text column",
        "the input and the target are both column",
    ],
)
def test_errors_doc_quotes_the_code(phrase: str) -> None:
    """Each line's words are in the code and in docs/errors.md: change one, update the other."""
    root = Path(__file__).parents[1]
    code = "\n".join(p.read_text("utf-8") for p in (root / "evalloss").rglob("*.py"))
    code = re.sub(r'"\s*\n\s*f?"', "", code)  # a message split over lines, joined
    doc = (root / "docs" / "errors.md").read_text("utf-8")
    assert phrase.replace("16", "{self.context}") in code or phrase in code, phrase
    assert phrase in doc, phrase
