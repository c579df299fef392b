"""Chat and instruction data scored on what the model writes, against independent
computations: transformers' ``apply_chat_template(..., return_assistant_tokens_mask=True)``
with the model's own per-token losses (float64, math.fsum, one conversation at a time); TRL's
own ``SFTTrainer`` data pipeline with the model's ``labels=`` loss; hand-made labels for mask
columns. Then the paired statistics, slices, per-item export and the cache on such data."""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import evalloss
from tests import hf  # first: skips without the hf extra
from tests.conftest import run

torch = pytest.importorskip("torch")

CONVERSATIONS = [
    [{"role": "user", "content": "the model loss"}, {"role": "assistant", "content": "exact sum über"}],
    [{"role": "system", "content": "be naïve"}, {"role": "user", "content": "token batch"},
     {"role": "assistant", "content": "mean 東京"}, {"role": "user", "content": "and?"},
     {"role": "assistant", "content": "😀 weight data train eval window"}],
    [{"role": "user", "content": "café"}, {"role": "assistant", "content": ""},
     {"role": "user", "content": "again"}, {"role": "assistant", "content": "the item"}],
]  # fmt: skip
PAIRS = [("the model", " loss sum"), ("über", " café<s>"), ("", "token batch mean"),
         ("a long prompt of the data", " x")]  # fmt: skip


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("chat")
    return {"gpt2": hf.chat_folder(root / "gpt2"),
            "llama": hf.chat_folder(root / "llama", "llama", jinja=True, bos_token="<s>")}  # fmt: skip


def _tokenizer(folder: Path) -> object:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def _written(tmp_path: Path, stem: str, rows: list[dict[str, object]]) -> list[Path]:
    """``rows`` as JSON Lines and as Parquet."""
    parquet = tmp_path / f"{stem}.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet, row_group_size=2)
    return [hf.jsonl(tmp_path / f"{stem}.jsonl", rows), parquet]


def _conversation_oracle(folder: Path, conversations: list[list[dict[str, str]]],
                         every: bool = False) -> tuple[float, int]:  # fmt: skip
    """transformers' own rendering and assistant mask; the model's own token losses."""
    tokenizer, model = _tokenizer(folder), hf.model_of(folder)
    terms = []
    for messages in conversations:
        out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,  # type: ignore[attr-defined]
                                            return_assistant_tokens_mask=True)  # fmt: skip
        losses = hf.token_losses(model, out["input_ids"])
        terms += [v for j, v in enumerate(losses, 1) if every or out["assistant_masks"][j]]
    return math.fsum(terms), len(terms)


def _assistant_bytes(conversations: list[list[dict[str, str]]]) -> int:
    return sum(len(m["content"].encode()) for c in conversations for m in c
               if m["role"] == "assistant")  # fmt: skip


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_conversations_score_the_assistant_tokens_as_transformers_marks_them(
    folders: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    folder = folders[kind]
    expected, tokens = _conversation_oracle(folder, CONVERSATIONS)
    rows: list[dict[str, object]] = [{"messages": c, "id": i} for i, c in enumerate(CONVERSATIONS)]
    for path in _written(tmp_path, "c", rows):
        report = evalloss.compare([folder], data=path)
        model = report.models[0]
        assert (model.items, model.tokens) == (len(CONVERSATIONS), tokens), path
        assert model.loss_sum == pytest.approx(expected, rel=1e-6)
        assert report.data.bytes == _assistant_bytes(CONVERSATIONS)
        assert model.bits_per_byte == pytest.approx(
            expected / (report.data.bytes * math.log(2)), rel=1e-6)  # fmt: skip


def test_score_all_scores_every_token_of_the_rendered_conversation(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    folder = folders["gpt2"]
    expected, tokens = _conversation_oracle(folder, CONVERSATIONS, every=True)
    path = hf.jsonl(tmp_path / "c.jsonl", [{"messages": c} for c in CONVERSATIONS])
    report = evalloss.compare([folder], data=path, score="all")
    assert report.models[0].tokens == tokens
    assert report.models[0].loss_sum == pytest.approx(expected, rel=1e-6)
    tokenizer = _tokenizer(folder)
    rendered = [tokenizer.apply_chat_template(c, tokenize=False) for c in CONVERSATIONS]  # type: ignore[attr-defined]
    assert report.data.bytes == sum(len(t.encode()) for t in rendered)


def _trl_dataset(folder: Path, rows: list[dict[str, object]], tmp_path: Path) -> list[dict[str, list[int]]]:
    """TRL's own SFTTrainer data preparation (1.x): input ids and labels, -100 on the prompt."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    with warnings.catch_warnings():  # trl's and transformers' deprecation notices
        warnings.simplefilter("ignore")
        args = SFTConfig(output_dir=str(tmp_path / "trl"), report_to=[], use_cpu=True,
                         max_length=None)  # fmt: skip
        trainer = SFTTrainer(model=hf.model_of(folder), args=args,
                             processing_class=_tokenizer(folder),
                             train_dataset=datasets.Dataset.from_list(rows))  # fmt: skip
    return [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in trainer.train_dataset]


def _labels_oracle(folder: Path, prepared: list[dict[str, list[int]]]) -> tuple[float, int]:
    """The model's own ``labels=`` loss one sequence at a time, times its scored count."""
    model = hf.model_of(folder)
    terms, tokens = [], 0
    with torch.no_grad():
        for row in prepared:
            ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
            count = int((labels[0, 1:] != -100).sum())
            terms.append(float(model(ids, labels=labels).loss) * count)
            tokens += count
    return math.fsum(terms), tokens


@pytest.mark.parametrize("conversational", [False, True])
def test_prompt_completion_pairs_are_scored_as_trl_builds_them(
    folders: dict[str, Path], tmp_path: Path, conversational: bool
) -> None:
    folder = folders["gpt2"]
    if conversational:
        rows: list[dict[str, object]] = [
            {"prompt": c[:-1], "completion": c[-1:]} for c in CONVERSATIONS
        ]
        scored = sum(len(c[-1]["content"].encode()) for c in CONVERSATIONS)
    else:
        rows = [{"prompt": p, "completion": c} for p, c in PAIRS]
        scored = sum(len(c.encode()) for _, c in PAIRS)
    expected, tokens = _labels_oracle(folder, _trl_dataset(folder, rows, tmp_path))
    for path in _written(tmp_path, "p", rows):
        report = evalloss.compare([folder], data=path)
        assert (report.models[0].items, report.models[0].tokens) == (len(rows), tokens)
        assert report.models[0].loss_sum == pytest.approx(expected, rel=1e-6)
        assert report.data.bytes == scored


def test_score_all_on_pairs_scores_prompt_and_completion(folders: dict[str, Path],
                                                         tmp_path: Path) -> None:  # fmt: skip
    folder = folders["gpt2"]
    tokenizer = _tokenizer(folder)
    model = hf.model_of(folder)
    terms = []
    for p, c in PAIRS:
        ids = tokenizer(p + (c if c.endswith("<s>") else c + "<s>"))["input_ids"]  # type: ignore[operator]
        terms += hf.token_losses(model, ids)
    path = hf.jsonl(tmp_path / "p.jsonl", [{"prompt": p, "completion": c} for p, c in PAIRS])
    report = evalloss.compare([folder], data=path, score="all")
    assert report.models[0].tokens == len(terms)
    assert report.models[0].loss_sum == pytest.approx(math.fsum(terms), rel=1e-6)
    assert report.data.bytes == sum(len((p + c).encode()) for p, c in PAIRS)


MASKED = [
    {"input_ids": [5, 6, 7, 8, 9, 10], "completion_mask": [0, 0, 1, 1, 1, 1],
     "assistant_masks": [1, 0, 1, 0, 1, 1]},
    {"input_ids": [11, 12, 13], "completion_mask": [1, 1, 1], "assistant_masks": [0, 1, 1]},
    {"input_ids": [20, 21, 22, 23], "completion_mask": [0, 0, 0, 1], "assistant_masks": [1, 1, 1, 1]},
]  # fmt: skip


@pytest.mark.parametrize("score", [None, "completion", "assistant", "all"])
def test_mask_columns_score_the_tokens_they_mark(folders: dict[str, Path], tmp_path: Path,
                                                  score: str | None) -> None:  # fmt: skip
    folder = folders["gpt2"]
    model = hf.model_of(folder)
    used = {None: ("completion_mask", "assistant_masks"), "completion": ("completion_mask",),
            "assistant": ("assistant_masks",), "all": ()}[score]  # fmt: skip
    terms = []
    for row in MASKED:  # by hand: a token counts where every mask used marks it
        losses = hf.token_losses(model, row["input_ids"])
        terms += [v for j, v in enumerate(losses, 1) if all(row[m][j] for m in used)]
    for path in _written(tmp_path, "m", MASKED):  # type: ignore[arg-type]
        report = evalloss.compare([folder], data=path, score=score)
        assert report.models[0].tokens == len(terms), path
        assert report.models[0].loss_sum == pytest.approx(math.fsum(terms), rel=1e-6)


def test_windows_score_every_scored_token_once(folders: dict[str, Path], tmp_path: Path) -> None:
    folder = folders["gpt2"]
    path = hf.jsonl(tmp_path / "c.jsonl", [{"messages": c} for c in CONVERSATIONS])
    whole = evalloss.compare([folder], data=path)
    _, tokens = _conversation_oracle(folder, CONVERSATIONS)
    for context, stride in ((8, 8), (8, 3), (512, 512)):
        windowed = evalloss.compare([folder], data=path, context=context, stride=stride)
        assert windowed.models[0].tokens == tokens == whole.models[0].tokens
    assert windowed.models[0].loss_sum == pytest.approx(whole.models[0].loss_sum, rel=1e-9)


def _per_conversation(folder: Path, conversations: list[list[dict[str, str]]]
                      ) -> list[tuple[float, int]]:  # fmt: skip
    return [_conversation_oracle(folder, [c]) for c in conversations]


def test_paired_statistics_slices_export_and_cache(folders: dict[str, Path], tmp_path: Path) -> None:
    """Two models (one the baseline) on conversations: the per-item export, the slices and
    the paired statistics see each conversation's scored tokens; a cached rerun gives the
    same report, and another --score is not taken from the cache."""
    other = hf.chat_folder(tmp_path / "other")  # the same tokenizer and template, new weights
    hf.gpt2(other, positions=512, seed=3)
    rows = [{"messages": c, "kind": "short" if i == 0 else "long"}
            for i, c in enumerate(CONVERSATIONS * 4)]  # fmt: skip
    path = hf.jsonl(tmp_path / "c.jsonl", rows)
    base, items = folders["gpt2"], tmp_path / "items.csv"
    common = ("--baseline", base, "--data", path, "--slice", "kind", "--format", "json",
              "--cache", tmp_path / "cache")  # fmt: skip
    result = run("compare", other, *common, "--per-item", items)
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    with items.open(newline="") as f:
        exported = list(csv.DictReader(f))
    oracle = {name: _per_conversation(folder, CONVERSATIONS * 4)
              for name, folder in (("other", other), (base.name, base))}  # fmt: skip
    assert [int(r["tokens"]) for r in exported] == [n for _, n in oracle["other"]]
    for name, expected in oracle.items():
        assert [float(r[name]) for r in exported] == pytest.approx([v for v, _ in expected],
                                                                   rel=1e-6)  # fmt: skip
    challenger = next(m for m in report["models"] if m["name"] == "other")
    short = next(s for s in challenger["slices"] if s["value"] == "short")
    assert short["weight"] == oracle["other"][0][1]
    assert short["loss_sum"] == pytest.approx(oracle["other"][0][0], rel=1e-6)
    assert challenger["vs_baseline"]["delta"] is not None
    again = run("compare", other, *common)
    assert again.exit_code == 0, again.stderr
    cached = json.loads(again.stdout)
    for key in ("loss_sum", "tokens", "slices", "vs_baseline"):
        assert [m[key] for m in cached["models"]] == [m[key] for m in report["models"]], key
    changed = run("compare", other, *common, "--score", "all")
    assert changed.exit_code == 0, changed.stderr
    assert json.loads(changed.stdout)["models"][0]["tokens"] > challenger["tokens"]


def test_explain_shows_the_batch_recipes_against_the_scored_tokens(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    """explain on conversations: its exact figure is the assistant tokens', and at batch
    size 1 the average of batch means is the mean of each conversation's own mean."""
    folder = folders["gpt2"]
    path = hf.jsonl(tmp_path / "c.jsonl", [{"messages": c} for c in CONVERSATIONS])
    expected, tokens = _conversation_oracle(folder, CONVERSATIONS)
    shown = evalloss.explain(folder, data=path, batch_sizes=[1, 2])
    assert shown.tokens == tokens
    assert shown.loss_per_token == pytest.approx(expected / tokens, rel=1e-6)
    means = [s / n for s, n in _per_conversation(folder, CONVERSATIONS)]
    assert shown.rows[0].average_of_averages == pytest.approx(math.fsum(means) / len(means),
                                                              rel=1e-6)  # fmt: skip


def test_models_of_different_tokenizers_are_ranked_by_the_scored_bytes(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    """A model whose tokenizer differs reads the conversations in its own pass, with its own
    template; the scored bytes (the assistant's contents) are the same for both, so the run
    ranks by bits per byte."""
    other = tmp_path / "other"
    hf.chat_folder(other, "llama")
    hf.tokenizer(other, vocab=260)  # another tokenizer.json
    path = hf.jsonl(tmp_path / "c.jsonl", [{"messages": c} for c in CONVERSATIONS])
    report = evalloss.compare([folders["gpt2"], other], data=path)
    assert report.to_dict().get("ranked_by") == "bits_per_byte"
    for model in report.models:
        expected, tokens = _conversation_oracle(Path(model.path), CONVERSATIONS)
        assert (model.tokens, model.loss_sum) == (tokens, pytest.approx(expected, rel=1e-6))
        assert model.bits_per_byte == pytest.approx(
            expected / (_assistant_bytes(CONVERSATIONS) * math.log(2)), rel=1e-6)  # fmt: skip


@pytest.mark.slow
def test_torchrun_chat_data_equals_one_process(folders: dict[str, Path], tmp_path: Path) -> None:
    """Two processes over conversations in Parquet (each its row groups) and pairs in JSON
    Lines (chunks dealt out), with a baseline: the one-process report."""
    from tests.torchrun_driver import launch

    rows = [{"messages": c} for c in CONVERSATIONS * 3]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet", row_group_size=2)
    hf.jsonl(tmp_path / "p.jsonl", [{"prompt": p, "completion": c} for p, c in PAIRS])
    other = hf.chat_folder(tmp_path / "other")
    hf.gpt2(other, positions=512, seed=4)
    common = ["--format", "json", "--precision", "float64", "--baseline", str(folders["gpt2"])]
    cases = {name: ["compare", str(other), "--data", str(tmp_path / name), *common]
             for name in ("c.parquet", "p.jsonl")}  # fmt: skip
    zero = launch(cases, tmp_path)
    for name in cases:
        assert zero[name]["code"] in (None, 0), zero[name]["stderr"]
        many = json.loads(zero[name]["stdout"])
        one = evalloss.compare([other], data=tmp_path / name, precision="float64",
                               baseline=str(folders["gpt2"])).to_dict()  # fmt: skip
        assert many["world_size"] == 2 and many["data"] == one["data"]
        for a, b in zip(one["models"], many["models"], strict=True):
            assert (a["items"], a["tokens"]) == (b["items"], b["tokens"])
            assert math.isclose(a["loss_sum"], b["loss_sum"], rel_tol=1e-9)
