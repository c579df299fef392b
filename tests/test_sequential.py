"""Models one after another: different tokenizers rank by bits per byte (paired per byte, in
bits, against a document-by-document oracle); one at a time gives the one-pass report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import evalloss
from evalloss.run import sequential
from tests import hf
from tests.conftest import run

DOCS = [*hf.corpus(24, seed=4), "", "x"]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sequential")
    found = {"a": hf.gpt2(root / "a", positions=512), "b": hf.llama(root / "b", positions=512,
             seed=3), "c": hf.gpt2(root / "c", positions=512, seed=5)}  # fmt: skip
    hf.tokenizer(found["a"], vocab=300)
    hf.tokenizer(found["b"], vocab=260)  # another tokenizer
    hf.tokenizer(found["c"], vocab=300)  # a's, by content
    data = root / "d.txt"
    data.write_text("".join(d + "\n" for d in DOCS), encoding="utf-8")
    return {**found, "data": data}


def _per_document(folder: Path) -> list[float]:
    """Each document's loss sum under the folder's own tokenizer and model (float64)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    return [hf.own_loss(folder, [tokenizer.encode(d).ids])[0] for d in DOCS]


def test_different_tokenizers_rank_by_bits_per_byte(models: dict[str, Path]) -> None:
    report = evalloss.compare([models["a"], models["b"]], data=models["data"],
                              baseline=models["a"])  # fmt: skip
    sizes = [len(d.encode("utf-8")) for d in DOCS]
    assert report.unit == "byte" and report.data.bytes == sum(sizes)
    sums = {k: _per_document(models[k]) for k in ("a", "b")}
    bits = {k: math.fsum(v) / (sum(sizes) * math.log(2)) for k, v in sums.items()}
    by_name = {m.name: m for m in report.models}
    for k in ("a", "b"):
        assert by_name[k].bits_per_byte == pytest.approx(bits[k], rel=1e-6)
        assert by_name[k].figure == by_name[k].bits_per_byte
    assert [m.name for m in report.models] == sorted(bits, key=bits.__getitem__)
    delta = math.fsum(b - a for a, b in zip(sums["a"], sums["b"], strict=True))
    vs = by_name["b"].vs_baseline
    assert vs is not None and vs.delta == pytest.approx(delta / sum(sizes) / math.log(2), rel=1e-6)
    result = run("compare", models["a"], models["b"], "--data", models["data"], "--format", "json")
    document = json.loads(result.stdout)
    assert document["ranked_by"] == "bits_per_byte"
    table = run("compare", models["a"], models["b"], "--data", models["data"]).stdout
    header = next(line for line in table.splitlines() if line.startswith("rank")).split()
    assert "ranked by bits per byte" in table and header[2] == "bits/byte"


def test_one_at_a_time_gives_the_one_pass_report(models: dict[str, Path]) -> None:
    paths = [models["a"], models["c"]]  # the same tokenizer, by content
    one = evalloss.compare(paths, data=models["data"], baseline=models["a"])
    each = evalloss.compare(paths, data=models["data"], baseline=models["a"], one_at_a_time=True)
    assert each.unit == one.unit == "token"
    for x, y in zip(one.models, each.models, strict=True):
        assert (x.name, x.tokens, x.items) == (y.name, y.tokens, y.items)
        assert x.loss_sum == pytest.approx(y.loss_sum, rel=1e-9)  # batches differ: float32
        if x.vs_baseline is not None and y.vs_baseline is not None:
            assert x.vs_baseline.delta == pytest.approx(y.vs_baseline.delta, rel=1e-6)
            assert x.vs_baseline.wins == y.vs_baseline.wins


def test_models_too_large_together_go_one_at_a_time(
    models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sequential, "available_bytes", lambda device: 1000)
    with pytest.warns(evalloss.EvallossWarning, match="one at a time"):
        report = evalloss.compare([models["a"], models["c"]], data=models["data"])
    assert report.models[0].tokens is not None


def test_blocks_are_kept_between_passes(models: dict[str, Path],
                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """Text of one tokenizer is read and tokenized once, however many models."""
    from evalloss.sources import text

    calls = []
    encode = text.encode
    monkeypatch.setattr(text, "encode", lambda *a: calls.append(1) or encode(*a))
    evalloss.compare([models["a"], models["c"]], data=models["data"], one_at_a_time=True)
    assert len(calls) == 1
    monkeypatch.setattr(sequential, "KEEP_BYTES", 0)  # nothing kept: read again
    calls.clear()
    evalloss.compare([models["a"], models["c"]], data=models["data"], one_at_a_time=True)
    assert len(calls) == 2


def test_one_at_a_time_exports_the_same_items(models: dict[str, Path], tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    paths = [models["a"], models["c"]]
    for name, alone in (("one.parquet", False), ("each.parquet", True)):
        evalloss.compare(paths, data=models["data"], per_item=tmp_path / name,
                         one_at_a_time=alone)  # fmt: skip
    one, each = (pq.read_table(tmp_path / n).to_pydict() for n in ("one.parquet", "each.parquet"))
    assert one["row"] == each["row"] == list(range(len(DOCS)))
    assert one["tokens"] == each["tokens"]
    for column in ("a", "c"):
        assert each[column] == pytest.approx(one[column], rel=1e-9, abs=1e-12)


@pytest.fixture(scope="module")
def limits(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Folders of different context limits: a (16 positions) and b (64, another tokenizer),
    c (32 positions, a's tokenizer); text whose documents run past 16 tokens."""
    root = tmp_path_factory.mktemp("limits")
    found = {"a": hf.gpt2(root / "a", positions=16), "b": hf.llama(root / "b", positions=64,
             seed=3), "c": hf.gpt2(root / "c", positions=32, seed=5)}  # fmt: skip
    hf.tokenizer(found["a"], vocab=300)
    hf.tokenizer(found["b"], vocab=260)
    hf.tokenizer(found["c"], vocab=300)
    data = root / "d.txt"
    data.write_text("".join(d + "\n" for d in DOCS), encoding="utf-8")
    ids = [[(7 * i + 3 * j) % 300 for j in range(n)] for i, n in enumerate((40, 16, 33, 3, 70))]
    return {**found, "data": data, "ids": hf.jsonl(root / "ids.jsonl",
                                                    [{"input_ids": d} for d in ids])}  # fmt: skip


def _figures(paths: list[Path], data: Path, tmp_path: Path, **options: object) -> dict[str, float]:
    """Each model's loss sum, its documents read in file order (float64: exact)."""
    export = tmp_path / f"items-{len(list(tmp_path.iterdir()))}.parquet"
    report = evalloss.compare(paths, data=data, precision="float64", per_item=export, **options)
    return {m.name: m.loss_sum for m in report.models if m.loss_sum is not None}


@pytest.mark.parametrize(("names", "data"), [(("a", "b"), "data"), (("a", "c"), "ids"),
                                             (("c", "a", "b"), "data")])  # fmt: skip
def test_each_model_is_scored_with_its_own_context_whatever_else_runs(
    limits: dict[str, Path], tmp_path: Path, names: tuple[str, ...], data: str
) -> None:
    """A model's default context is its own limit: its figure in a mixed run (other
    tokenizers, other limits) is its figure alone, exactly."""
    mixed = _figures([limits[n] for n in names], limits[data], tmp_path)
    for name in names:
        alone = _figures([limits[name]], limits[data], tmp_path)
        assert mixed[name] == alone[name], name
    windowed = _figures([limits["c"]], limits["ids"], tmp_path, context=16)
    assert windowed["c"] != _figures([limits["c"]], limits["ids"], tmp_path)["c"]  # it matters


def test_a_given_context_is_every_models(limits: dict[str, Path], tmp_path: Path) -> None:
    mixed = _figures([limits["a"], limits["c"]], limits["ids"], tmp_path, context=8)
    for name in ("a", "c"):
        assert mixed[name] == _figures([limits[name]], limits["ids"], tmp_path, context=8)[name]
    result = run("compare", limits["a"], limits["c"], "--data", limits["ids"], "--context", "32")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (f"evalloss: error: {limits['a']}: --context: 32 is longer than the "
                             "16 positions a model here declares (n_positions or "
                             "max_position_embeddings)\n")  # fmt: skip


def test_a_token_stream_needs_one_context_for_models_of_different_limits(
    limits: dict[str, Path], tmp_path: Path
) -> None:
    import numpy as np

    stream = tmp_path / "s.bin"
    np.arange(200, dtype=np.uint16).tofile(stream)
    result = run("compare", limits["a"], limits["c"], "--data", stream)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == ("evalloss: error: --context: the models declare different "
                             "contexts (16 and 32 positions) and a token stream's items are "
                             "windows of one context: give --context\n")  # fmt: skip
    given = run("compare", limits["a"], limits["c"], "--data", stream, "--context", "16")
    assert given.exit_code == 0, given.stderr
