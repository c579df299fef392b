"""Text data tokenized with a model folder's tokenizer.json: every form gives the model's own
loss on its own tokenization, bytes and bits per byte by hand, and bad text one line."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import evalloss
from tests import hf
from tests.conftest import run

DOCS = [*hf.corpus(30), "", "x", "line with\ttab and \u2028 separator", "  spaced  "]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = hf.gpt2(tmp_path_factory.mktemp("text") / "gpt2", positions=512)
    hf.tokenizer(folder, vocab=300)
    return folder


def _forms(root: Path, docs: list[str], column: str = "text") -> dict[str, Path]:
    (root / "d.txt").write_text("".join(d + "\n" for d in docs), encoding="utf-8")
    hf.jsonl(root / "d.jsonl", [{column: d, "id": i} for i, d in enumerate(docs)])
    table = pa.table({"id": list(range(len(docs))), column: docs})
    pq.write_table(table, root / "d.parquet", row_group_size=7)
    pacsv.write_csv(table, root / "d.csv")
    return {p.suffix: p for p in root.glob("d.*")}


def _ids(folder: Path, docs: list[str]) -> list[list[int]]:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_truncation()
    return [tokenizer.encode(d).ids for d in docs]


def test_every_form_gives_the_models_own_loss(folder: Path, tmp_path: Path) -> None:
    expected, tokens = hf.own_loss(folder, _ids(folder, DOCS))
    text_bytes = sum(len(d.encode("utf-8")) for d in DOCS)
    for suffix, path in _forms(tmp_path, DOCS).items():
        report = evalloss.compare([folder], data=path)
        model = report.models[0]
        assert (model.items, model.tokens) == (len(DOCS), tokens), suffix
        assert model.loss_sum == pytest.approx(expected, rel=1e-6), suffix
        assert report.data.bytes == text_bytes, suffix
        assert model.bits_per_byte == pytest.approx(expected / (text_bytes * math.log(2)), rel=1e-6)
        assert report.to_dict()["data"]["bytes"] == text_bytes


def test_special_tokens_are_added_and_scored(tmp_path: Path) -> None:
    """A post-processor that puts <s> first: every word token is then predicted from it."""
    folder = hf.gpt2(tmp_path / "g", positions=512)
    hf.tokenizer(folder, vocab=300, bos=True)
    ids = _ids(folder, DOCS)
    assert all(i[0] == ids[0][0] for i in ids)  # <s> first, even in an empty document
    expected, tokens = hf.own_loss(folder, ids)
    data = _forms(tmp_path, DOCS)[".txt"]
    model = evalloss.compare([folder], data=data).models[0]
    assert model.tokens == tokens == sum(len(i) for i in _ids(folder, DOCS)) - len(DOCS)
    assert model.loss_sum == pytest.approx(expected, rel=1e-6)


def test_truncation_in_the_tokenizer_file_is_switched_off(folder: Path, tmp_path: Path) -> None:
    truncating = hf.gpt2(tmp_path / "t", positions=512)
    settings = json.loads((folder / "tokenizer.json").read_text())
    settings["truncation"] = {"direction": "Right", "max_length": 4, "strategy": "LongestFirst",
                              "stride": 0}  # fmt: skip
    (truncating / "tokenizer.json").write_text(json.dumps(settings))
    data = _forms(tmp_path, DOCS)[".jsonl"]
    full = evalloss.compare([folder], data=data).models[0]
    cut = evalloss.compare([truncating], data=data).models[0]
    assert (cut.tokens, cut.loss_sum) == (full.tokens, full.loss_sum)


def test_text_column_and_the_table(folder: Path, tmp_path: Path) -> None:
    data = _forms(tmp_path, DOCS[:5], column="body")[".parquet"]
    result = run("compare", folder, "--data", data)
    assert result.exit_code == 2 and "d.parquet: text: no text column" in result.stderr
    result = run("compare", folder, "--data", data, "--text-column", "body")
    assert result.exit_code == 0, result.stderr
    header = next(line for line in result.stdout.splitlines() if line.startswith("rank")).split()
    assert header[:5] == ["rank", "model", "loss/token", "perplexity", "bits/byte"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"fine\n\xff\xfebad\n", "d.txt:2: not UTF-8 text"),
        (b'{"text": "a"}\n{"text": null}\n', "d.jsonl:2: text: no text (null)"),
        (b'{"text": "a"}\n{"text": 3}\n', "d.jsonl:2: text: text must be a string, not 3"),
        (b'{"text": 5}\n{"text": "a"}\n', "d.jsonl:1: text: text must be a string, not 5"),
        (b'{"text": "a"}\n\n{"text": ["a"]}\n', 'd.jsonl:3: text: text must be a string, not ["a"]'),
        (b'{"text": "a"}\n{"text": "caf\xe9"}\n', "d.jsonl:2: not UTF-8 text (byte b'\\xe9' at column 14)"),
        (b'{"text": "a"}\n\n{"text": null}\n', "d.jsonl:3: text: no text (null)"),
        (b'{"text": "a"}\n{"text": "b"\n', "d.jsonl:2: not JSON (Expecting ',' delimiter at column 13)"),
        (b'{"text": "a", "id": 1}\n{"text": "b", "id": "x"}\n', 'd.jsonl:2: id: "x" is a string; line 1 has a number'),
    ],
)
def test_bad_text_is_one_line(folder: Path, tmp_path: Path, content: bytes, message: str) -> None:
    name = "d.txt" if content.startswith(b"fine") else "d.jsonl"
    (tmp_path / name).write_bytes(content)
    result = run("compare", folder, "--data", tmp_path / name)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_text_without_a_tokenizer_says_so(tmp_path: Path) -> None:
    folder = hf.gpt2(tmp_path / "g")
    (tmp_path / "d.txt").write_text("a b\n")
    result = run("compare", folder, "--data", tmp_path / "d.txt")
    assert result.exit_code == 2 and "text needs a tokenizer" in result.stderr


def test_the_json_report_fits_the_schema(folder: Path, tmp_path: Path) -> None:
    import jsonschema

    schema = json.loads((Path(__file__).parents[1] / "docs" / "report-schema.json").read_text())
    result = run("compare", folder, "--data", _forms(tmp_path, DOCS)[".csv"], "--format", "json")
    report = json.loads(result.stdout)
    jsonschema.validate(report, schema)
    assert report["data"]["bytes"] > 0 and report["models"][0]["bits_per_byte"] > 0


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_sixteen_bit_runs_stay_near_float64(folder: Path, tmp_path: Path, precision: str) -> None:
    """Weights and activations in 16 bits, the loss in float32, the sums in float64: the figure
    moves by what 16-bit arithmetic costs (docs/language-models.md), no more."""
    data = _forms(tmp_path, DOCS)[".txt"]
    exact = evalloss.compare([folder], data=data, precision="float64").models[0]
    report = evalloss.compare([folder], data=data, precision=precision)
    assert report.precision == precision
    model = report.models[0]
    assert model.tokens == exact.tokens
    assert model.loss_per_token == pytest.approx(exact.loss_per_token, rel=5e-3)
    assert model.loss_per_token != exact.loss_per_token  # it did run in 16 bits


@pytest.mark.slow
def test_torchrun_text_equals_one_process(folder: Path, tmp_path: Path) -> None:
    """Two processes over text in Parquet (each takes its row groups; a .txt or JSON Lines
    file's 8192-document chunks are dealt out as token documents' are), with a baseline, with
    models of different tokenizers (bits per byte), and with a prefix token (the words merged:
    word perplexity): the one-process report."""
    import subprocess
    import sys

    docs = hf.corpus(60, seed=5)
    forms = _forms(tmp_path, docs)
    other = hf.llama(tmp_path / "other", positions=512, seed=2)
    hf.tokenizer(other, vocab=260)
    same = hf.gpt2(tmp_path / "same", positions=512, seed=3)
    (same / "tokenizer.json").write_bytes((folder / "tokenizer.json").read_bytes())
    common = ["--format", "json", "--precision", "float64", "--baseline", str(folder)]
    cases = {
        "tokens": ["compare", str(folder), str(same), "--data", str(forms[".parquet"]), *common],
        "bytes": ["compare", str(folder), str(other), "--data", str(forms[".parquet"]), *common],
        "prefix": ["compare", str(folder), str(same), "--data", str(forms[".parquet"]), *common,
                   "--prefix-token", "0"],
    }
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    driver = Path(__file__).parent / "torchrun_driver.py"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=2", str(driver), str(tmp_path / "cases.json")]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    zero = json.loads((tmp_path / "cases.json.0.out").read_text())
    # transformers imports torch._dynamo, which imports torch.distributed.nn.functional: after
    # the group is up, its defaults would hold it, and its gloo threads would outlive Python's
    # shutdown (an intermittent SIGABRT at exit). The group is freed on both ranks.
    one_rank = json.loads((tmp_path / "cases.json.1.out").read_text())
    assert zero["gloo threads after destroy"] == one_rank["gloo threads after destroy"] == 0
    for name, args in cases.items():
        assert zero[name]["code"] in (None, 0), zero[name]["stderr"]
        many = json.loads(zero[name]["stdout"])
        paths = args[1:3]
        one = evalloss.compare(paths, data=args[4], precision="float64", baseline=str(folder),
                               prefix_token="0" if name == "prefix" else None).to_dict()  # fmt: skip
        assert many["world_size"] == 2 and many["data"] == one["data"]
        assert many.get("ranked_by") == one.get("ranked_by")
        for a, b in zip(one["models"], many["models"], strict=True):
            assert (a["path"], a["items"], a["tokens"]) == (b["path"], b["items"], b["tokens"])
            assert math.isclose(a["loss_sum"], b["loss_sum"], rel_tol=1e-9)
            assert math.isclose(a["bits_per_byte"], b["bits_per_byte"], rel_tol=1e-9)
            assert math.isclose(a["word_perplexity"], b["word_perplexity"], rel_tol=1e-9)
            if a.get("vs_baseline"):
                assert math.isclose(a["vs_baseline"]["delta"], b["vs_baseline"]["delta"],
                                    rel_tol=1e-6)  # fmt: skip
                assert a["vs_baseline"]["wins"] == b["vs_baseline"]["wins"]


def test_sequence_classification_matches_the_models_own_logits(tmp_path: Path) -> None:
    """A folder with a classification head, text with a label column: each document's
    cross-entropy from the model's own logits, one document at a time, float64 math.fsum."""
    import torch
    import transformers

    folder = hf.classifier(tmp_path / "classifier")
    docs = [d for d in DOCS if d.strip()]
    labels = [i % 3 for i in range(len(docs))]
    data = hf.jsonl(tmp_path / "d.jsonl", [{"text": d, "label": y} for d, y in zip(docs, labels,
                                                                                    strict=True)])  # fmt: skip
    report = evalloss.compare([folder], data=data, target="label", precision="float64")
    assert report.loss == "cross-entropy"  # from the folder's architecture
    model = transformers.AutoModelForSequenceClassification.from_pretrained(folder,
                                                                            dtype=torch.float64)  # fmt: skip
    terms, correct = [], 0
    with torch.no_grad():
        for ids, y in zip(_ids(folder, docs), labels, strict=True):
            logits = model(torch.tensor([ids])).logits[0]
            terms.append(float(torch.logsumexp(logits, 0) - logits[y]))
            correct += int(logits.argmax()) == y
    result = report.models[0]
    assert result.items == len(docs)
    assert result.loss_per_item == pytest.approx(math.fsum(terms) / len(docs), rel=1e-9)
    assert result.accuracy == correct / len(docs)
    bad = hf.jsonl(tmp_path / "bad.jsonl", [{"text": "a", "label": "cat"}])
    outcome = run("compare", folder, "--data", bad, "--target", "label")
    assert outcome.exit_code == 2 and "class ids (integers)" in outcome.stderr


def test_per_item_export_has_every_documents_own_loss(folder: Path, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "items.parquet"
    evalloss.compare([folder], data=_forms(tmp_path, DOCS)[".txt"], per_item=out)
    table = pq.read_table(out).to_pydict()
    ids = _ids(folder, DOCS)
    assert table["row"] == list(range(len(DOCS)))
    assert table["tokens"] == [max(len(i) - 1, 0) for i in ids]
    for got, doc in zip(table[folder.name], ids, strict=True):
        assert got == pytest.approx(hf.own_loss(folder, [doc])[0], rel=1e-6, abs=1e-9)


def test_a_txt_file_of_numbers_is_still_a_csv(tmp_path: Path) -> None:
    """Without a tokenizer (and without causal-lm) a .txt is read as CSV, as before text."""
    import torch

    data = tmp_path / "rows.txt"
    data.write_text("a,b,y\n0.5,1.0,1\n-1.0,2.0,0\n")
    torch.manual_seed(0)
    path = tmp_path / "m.safetensors"
    evalloss.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), path, loss="cross-entropy",
                  target="y")  # fmt: skip
    assert evalloss.compare([path], data=data).models[0].items == 2


def test_text_slices_are_the_same_in_every_form(folder: Path, tmp_path: Path) -> None:
    """Text with a slice column: CSV (a null an empty cell, "" quoted, as pyarrow writes
    them), JSON Lines and Parquet give the same slices: "" and NA are values, null is
    missing; an empty text cell in CSV is an empty document."""
    regions = ["eu", "", None, "NA", "", "us", None, "null"] * 2
    docs = [*DOCS[: len(regions) - 1], ""]
    table = pa.table({"text": docs, "region": regions})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=5)
    pacsv.write_csv(table, tmp_path / "d.csv")
    hf.jsonl(tmp_path / "d.jsonl", [{"text": d, "region": r} for d, r in zip(docs, regions,
                                                                            strict=True)])  # fmt: skip
    found = []
    for suffix in (".parquet", ".csv", ".jsonl"):
        report = evalloss.compare([folder], data=tmp_path / f"d{suffix}", slice=["region"],
                                  precision="float64")  # fmt: skip
        found.append(sorted(((s.value, s.items, s.loss_sum) for s in report.models[0].slices),
                            key=repr))  # fmt: skip
        counts = {v: k for v, k, _ in found[-1]}
        assert counts == {v: regions.count(v) for v in regions}, suffix
    assert found[0] == found[1] == found[2]


def test_text_ids_past_the_models_vocabulary_name_the_csv_line(tmp_path: Path) -> None:
    """CSV text: the document's line (a blank line and a quoted line break before it)."""
    folder = hf.gpt2(tmp_path / "small", vocab=40, positions=64)
    hf.tokenizer(folder, vocab=300)
    data = tmp_path / "d.csv"
    data.write_text('text\n"the"\n\n"two\nlines"\nthe model loss\n', encoding="utf-8")
    result = run("compare", folder, "--data", data)
    assert result.exit_code == 2 and result.stdout == "", result.stderr
    assert result.stderr.startswith(f"evalloss: error: {data}:2: text: token 0: token id "), result.stderr
    data.write_text('text,note\n"12",x\n\n"34","two\nlines"\nthe model loss,y\n', encoding="utf-8")
    result = run("compare", folder, "--data", data)
    assert result.stderr.startswith(f"evalloss: error: {data}:6: text: token "), result.stderr
