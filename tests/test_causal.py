"""--loss causal-lm: the exact loss per token, against a float64 one-sequence oracle with
math.fsum, and unchanged by the token budget, the order of documents and the stride."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import evalloss
from tests import lm
from tests.conftest import run

LM = str(Path(__file__).parent / "lm.py")


def _docs(count: int = 40, seed: int = 0) -> list[list[int]]:
    rng = random.Random(seed)
    lengths = [rng.choice([0, 1, 2, 3, 5, 9, 17, 30]) for _ in range(count)]
    return [[rng.randrange(lm.VOCAB) for _ in range(n)] for n in lengths]


def _ckpt(tmp_path: Path, cls: type = lm.Causal, name: str = "m") -> Path:
    torch.manual_seed(0)
    path = tmp_path / f"{name}.safetensors"
    evalloss.save(cls(), path, loss="causal-lm")
    return path


def _oracle(path: Path, sequences: list[tuple[list[int], int]]) -> tuple[float, int]:
    """(sum of -log p(token), tokens) in float64, one sequence at a time: each entry is (ids,
    first scored position); position p predicts ids[p + 1]."""
    model = lm.Causal().double()
    from safetensors.torch import load_file

    model.load_state_dict({k: v.double() for k, v in load_file(path).items()})
    terms: list[float] = []
    with torch.no_grad():
        for ids, first in sequences:
            if len(ids) < 2:
                continue
            logits = model(torch.tensor([ids[:-1]]))[0]  # (n - 1, V)
            logp = torch.log_softmax(logits, dim=-1)
            terms += [-float(logp[p, ids[p + 1]]) for p in range(first - 1, len(ids) - 1)]
    return math.fsum(terms), len(terms)


def _jsonl(path: Path, docs: list[list[int]], **extra: list[list[int]]) -> Path:
    lines = [
        json.dumps({"input_ids": d, **{k: v[i] for k, v in extra.items()}})
        for i, d in enumerate(docs)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _compare(*args: object) -> dict:  # type: ignore[type-arg]
    result = run("compare", *args, "--model", f"{LM}:Causal", "--format", "json",
                 "--precision", "float64")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["models"][0]  # type: ignore[no-any-return]


def test_documents_equal_the_float64_oracle(tmp_path: Path) -> None:
    docs = _docs()
    ckpt = _ckpt(tmp_path)
    want, tokens = _oracle(ckpt, [(d, 1) for d in docs])
    got = _compare(ckpt, "--data", _jsonl(tmp_path / "d.jsonl", docs))
    assert got["tokens"] == tokens == sum(max(0, len(d) - 1) for d in docs)
    assert got["items"] == len(docs)  # empty and one-token documents count, with weight 0
    assert got["loss_sum"] == pytest.approx(want, rel=1e-12)
    assert got["loss_per_token"] == pytest.approx(want / tokens, rel=1e-12)
    assert got["perplexity"] == pytest.approx(math.exp(want / tokens), rel=1e-12)
    assert got["loss_per_item"] == pytest.approx(want / len(docs), rel=1e-12)


@pytest.mark.parametrize("budget", ["1", "7", "64", "100000"])
def test_no_figure_moves_with_the_budget_or_the_order(tmp_path: Path, budget: str) -> None:
    docs = _docs(seed=1)
    ckpt = _ckpt(tmp_path)
    want, _ = _oracle(ckpt, [(d, 1) for d in docs])
    shuffled = docs[:]
    random.Random(int(budget)).shuffle(shuffled)
    table = pa.table(
        {"input_ids": pa.array(shuffled, type=pa.list_(pa.int32())), "note": ["x"] * len(docs)}
    )
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=11)
    got = _compare(ckpt, "--data", tmp_path / "d.parquet", "--batch-tokens", budget)
    assert got["loss_sum"] == pytest.approx(want, rel=1e-12)


def test_labels_mask_tokens_as_transformers_does(tmp_path: Path) -> None:
    docs = [d for d in _docs(seed=2) if len(d) >= 4]
    labels = [[-100, -100, *d[2:]] for d in docs]  # the first two tokens are a prompt
    ckpt = _ckpt(tmp_path)
    want, tokens = _oracle(ckpt, [(d, 2) for d in docs])
    got = _compare(ckpt, "--data", _jsonl(tmp_path / "d.jsonl", docs, labels=labels))
    assert got["tokens"] == tokens and got["loss_sum"] == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize(("context", "stride"), [(8, 8), (8, 3), (5, 1), (1, 1)])
def test_a_token_stream_scores_every_token_but_the_first_once(
    tmp_path: Path, context: int, stride: int
) -> None:
    rng = np.random.default_rng(context * 10 + stride)
    tokens = rng.integers(0, lm.VOCAB, size=101).astype(np.uint16)
    tokens.tofile(tmp_path / "s.bin")
    ckpt = _ckpt(tmp_path)
    got = _compare(ckpt, "--data", tmp_path / "s.bin", "--context", context, "--stride", stride)
    assert got["tokens"] == 100
    # the oracle: for each window, its own input (the `context` tokens before its last
    # target) and its own targets, in float64, one window at a time
    seq, terms = tokens.tolist(), []
    for w in range(-(-100 // stride)):
        targets = range(1 + w * stride, min(1 + (w + 1) * stride, 101))
        start = max(0, targets[-1] - context)
        part, _ = _oracle(ckpt, [(seq[start : targets[-1] + 1], targets[0] - start)])
        terms.append(part)
    assert got["loss_sum"] == pytest.approx(math.fsum(terms), rel=1e-12)
    assert got["items"] == -(-100 // stride)


@pytest.mark.parametrize("cls", ["TupleOut", "ObjectOut", "AllPositions"])
def test_logits_in_a_tuple_an_output_object_or_a_wrapper(tmp_path: Path, cls: str) -> None:
    docs = _docs(seed=3)
    plain = _compare(_ckpt(tmp_path), "--data", _jsonl(tmp_path / "d.jsonl", docs))
    ckpt = _ckpt(tmp_path, getattr(lm, cls), cls)
    result = run("compare", ckpt, "--data", tmp_path / "d.jsonl", "--model", f"{LM}:{cls}",
                 "--format", "json", "--precision", "float64")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["models"][0]["loss_sum"] == plain["loss_sum"]


def test_the_table_ranks_by_loss_per_token(tmp_path: Path) -> None:
    docs = _docs(seed=4)
    data = _jsonl(tmp_path / "d.jsonl", docs)
    result = run("compare", _ckpt(tmp_path), "--data", data, "--model", f"{LM}:Causal")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"causal-lm loss per token over {len(docs)} items")
    header = next(line for line in lines if line.startswith("rank"))
    assert header.split() == ["rank", "model", "loss/token", "perplexity", "loss", "sum",
                                "tokens", "items"]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: _jsonl(p / "d.jsonl", [[1, 2], [3, lm.VOCAB + 4]]),
         f"d.jsonl:2: input_ids: token 1: token id {lm.VOCAB + 4} is outside the vocabulary"),
        (lambda p: _jsonl(p / "d.jsonl", [[1, 2], [3, -5]]), "d.jsonl:2: input_ids: token 1: negative token id -5"),
        (lambda p: _jsonl(p / "d.jsonl", [[1, 2, 3]], labels=[[1, 2]]),
         "d.jsonl:1: labels: 2 labels for 3 tokens"),
        (lambda p: (p / "s.bin").write_bytes(b"\x01\x00\x02\x00\x03") and p / "s.bin",
         "5 bytes is not a whole number of uint16 tokens"),
        (lambda p: _jsonl(p / "d.jsonl", [[1, 2]] * 3).parent / "d.jsonl",
         None),
    ],
)  # fmt: skip
def test_bad_sequence_data_is_one_line(tmp_path: Path, make, message: str | None) -> None:  # type: ignore[no-untyped-def]
    data = make(tmp_path)
    args = ["compare", _ckpt(tmp_path), "--data", data, "--model", f"{LM}:Causal", "--context", "8"]
    if message is None:  # the model's own vocabulary check, on an input id
        data.write_text(json.dumps({"input_ids": [lm.VOCAB + 1, 2]}) + "\n")
        message = (f"d.jsonl:1: input_ids: token 0: token id {lm.VOCAB + 1} is outside the "
                   "model's vocabulary")
    result = run(*args)
    assert result.exit_code == 2, result.stderr
    assert result.stdout == "" and len(result.stderr.splitlines()) == 1
    assert message in result.stderr, result.stderr


def test_a_model_that_returns_the_last_position_only_is_named(tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path, lm.LastOnly, "last")
    result = run("compare", ckpt, "--data", _jsonl(tmp_path / "d.jsonl", [[1, 2, 3]]),
                 "--model", f"{LM}:LastOnly")  # fmt: skip
    assert result.exit_code == 2
    assert "logits for 1 position of 2" in result.stderr


def test_the_plot_speaks_of_tokens_and_documents(tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path)
    torch.manual_seed(5)
    other = tmp_path / "other.safetensors"
    evalloss.save(lm.Causal(), other, loss="causal-lm")
    out = tmp_path / "plot.svg"
    result = run("compare", ckpt, other, "--baseline", ckpt, "--data",
                 _jsonl(tmp_path / "d.jsonl", _docs(seed=11)), "--model", f"{LM}:Causal",
                 "--plot", out)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    svg = out.read_text()
    assert "loss per token of one document" in svg and "% of documents" in svg
    assert "loss per item" not in svg


def test_a_causal_report_matches_the_schema(tmp_path: Path) -> None:
    import jsonschema

    schema = json.loads((Path(__file__).parents[1] / "docs" / "report-schema.json").read_text())
    result = run("compare", _ckpt(tmp_path), "--data", _jsonl(tmp_path / "d.jsonl", _docs()),
                 "--model", f"{LM}:Causal", "--format", "json")  # fmt: skip
    jsonschema.Draft202012Validator(schema).validate(json.loads(result.stdout))


def _per_document(ckpt: Path, docs: list[list[int]]) -> list[tuple[float, int]]:
    return [_oracle(ckpt, [(d, 1)]) for d in docs]


@pytest.mark.parametrize("sizes", [["1", "3"], ["8", "64"]])
def test_explain_replays_the_evaluation_loops_on_documents(
    tmp_path: Path, sizes: list[str]
) -> None:
    """Batches of consecutive documents in file order: the sum and average of batch token
    means and Trainer.evaluate's sequence-weighted average, against a float64 replay."""
    docs = _docs(count=30, seed=6)
    ckpt = _ckpt(tmp_path)
    args = [a for s in sizes for a in ("--batch-size", s)]
    result = run("explain", ckpt, "--data", _jsonl(tmp_path / "d.jsonl", docs), "--model",
                 f"{LM}:Causal", "--precision", "float64", "--format", "json", *args)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    each = _per_document(ckpt, docs)
    total, tokens = math.fsum(s for s, _ in each), sum(t for _, t in each)
    assert report["tokens"] == tokens
    assert report["loss_per_token"] == pytest.approx(total / tokens, rel=1e-12)
    means = [s / t for s, t in each if t]
    assert report["average_of_item_averages"] == pytest.approx(
        math.fsum(means) / len(means), rel=1e-12
    )
    for row, size in zip(report["rows"], map(int, sizes), strict=True):
        batches = [each[i : i + size] for i in range(0, len(each), size)]
        kept = [
            (len(b), math.fsum(s for s, _ in b) / sum(t for _, t in b))
            for b in batches
            if sum(t for _, t in b)
        ]
        assert row["batches"] == len(batches) and row["last_batch"] == len(batches[-1])
        assert row["sum_of_averages"] == pytest.approx(math.fsum(m for _, m in kept), rel=1e-12)
        assert row["average_of_averages"] == pytest.approx(
            math.fsum(m for _, m in kept) / len(kept), rel=1e-12
        )
        weighted = math.fsum(n * m for n, m in kept) / sum(n for n, _ in kept)
        assert row["sequence_weighted_average"] == pytest.approx(weighted, rel=1e-12)
        assert row["sequence_weighted_average_error"] == pytest.approx(
            (weighted - total / tokens) / (total / tokens), rel=1e-9
        )


def test_explain_table_for_tokens_says_what_the_loops_print(tmp_path: Path) -> None:
    ckpt = _ckpt(tmp_path)
    result = run("explain", ckpt, "--data", _jsonl(tmp_path / "d.jsonl", _docs(seed=7)),
                 "--model", f"{LM}:Causal", "--batch-size", "4")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert "what an evaluation loop prints at each batch size" in " ".join(result.stdout.split())
    assert "sequence-" in result.stdout and "Trainer.evaluate" in result.stdout
    assert any(line.startswith("exact") for line in result.stdout.splitlines())


def test_per_item_has_one_row_per_document_in_file_order(tmp_path: Path) -> None:
    docs = _docs(count=25, seed=8)
    ckpt = _ckpt(tmp_path)
    out = tmp_path / "items.parquet"
    result = run("compare", ckpt, "--data", _jsonl(tmp_path / "d.jsonl", docs), "--model",
                 f"{LM}:Causal", "--precision", "float64", "--per-item", out, "--batch-tokens", "16")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    table = pq.read_table(out).to_pydict()
    assert table["row"] == list(range(len(docs)))
    each = _per_document(ckpt, docs)
    assert table["tokens"] == [t for _, t in each]
    assert table["m"] == pytest.approx([s for s, _ in each], rel=1e-12, abs=1e-15)


def _windowed_oracle(ckpt: Path, seq: list[int], context: int, stride: int) -> tuple[float, int]:
    """A sequence scored window by window as the contract says, one window at a time."""
    n, sums, tokens = len(seq), [], 0
    for w in range(max(1, -(-(n - 1) // stride))):
        targets = range(1 + w * stride, min(1 + (w + 1) * stride, n))
        if not targets:
            continue
        start = max(0, targets[-1] - context)
        part, count = _oracle(ckpt, [(seq[start : targets[-1] + 1], targets[0] - start)])
        sums.append(part)
        tokens += count
    return math.fsum(sums), tokens


@pytest.mark.parametrize(
    ("context", "stride", "budget"), [(6, 6, "64"), (6, 2, "7"), (4, 1, "4096")]
)
def test_documents_longer_than_the_context_are_scored_in_windows_as_one_item(
    tmp_path: Path, context: int, stride: int, budget: str
) -> None:
    docs = _docs(count=30, seed=9)
    ckpt = _ckpt(tmp_path)
    each = [_windowed_oracle(ckpt, d, context, stride) for d in docs]
    out = tmp_path / "items.parquet"
    got = _compare(ckpt, "--data", _jsonl(tmp_path / "d.jsonl", docs), "--context", context,
                   "--stride", stride, "--batch-tokens", budget, "--per-item", out)  # fmt: skip
    assert got["items"] == len(docs)
    assert got["tokens"] == sum(t for _, t in each) == sum(max(0, len(d) - 1) for d in docs)
    assert got["loss_sum"] == pytest.approx(math.fsum(s for s, _ in each), rel=1e-12)
    table = pq.read_table(out).to_pydict()
    assert table["row"] == list(range(len(docs)))
    assert table["tokens"] == [t for _, t in each]
    assert table["m"] == pytest.approx([s for s, _ in each], rel=1e-12, abs=1e-15)


def test_windowed_documents_pair_and_explain_as_documents(tmp_path: Path) -> None:
    docs = _docs(count=30, seed=10)
    data = _jsonl(tmp_path / "d.jsonl", docs)
    base = _ckpt(tmp_path, lm.Causal, "base")
    torch.manual_seed(3)
    cand = tmp_path / "cand.safetensors"
    evalloss.save(lm.Causal(), cand, loss="causal-lm")
    window = ["--context", "5", "--stride", "3", "--precision", "float64", "--format", "json"]
    result = run("compare", cand, "--baseline", base, "--data", data, "--model", f"{LM}:Causal",
                 *window, "--batch-tokens", "9")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    models = {m["path"]: m for m in json.loads(result.stdout)["models"]}
    a, b = models[str(cand)], models[str(base)]
    assert a["items"] == b["items"] == len(docs)
    ours = [_windowed_oracle(cand, d, 5, 3) for d in docs]
    theirs = [_windowed_oracle(base, d, 5, 3) for d in docs]
    scored = [(x, y) for (x, t), (y, _) in zip(ours, theirs, strict=True) if t]
    assert a["vs_baseline"]["delta"] == pytest.approx((a["loss_sum"] - b["loss_sum"]) / a["tokens"])
    assert a["vs_baseline"]["wins"] == pytest.approx(sum(x < y for x, y in scored) / len(scored))
    explained = run("explain", cand, "--data", data, "--model", f"{LM}:Causal", *window,
                    "--batch-size", "4")  # fmt: skip
    assert explained.exit_code == 0, explained.stderr
    report = json.loads(explained.stdout)
    assert report["items"] == len(docs) and report["rows"][0]["batches"] == -(-len(docs) // 4)
    means = [s / t for s, t in ours if t]
    assert report["average_of_item_averages"] == pytest.approx(math.fsum(means) / len(means))
