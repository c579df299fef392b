"""Two tokenizer.json files are the same tokenizer when they give every text the same ids
(docs/language-models.md): truncation and padding settings do not count, a merge does."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

import evalloss
from evalloss.options import Options
from evalloss.run.plan import resolve
from tests import hf


def _pair(root: Path, edit: str) -> tuple[Path, Path, Path]:
    """Two GPT-2 folders of different weights; the second's tokenizer.json edited."""
    first, second = hf.gpt2(root / "a", positions=512, seed=1), hf.gpt2(root / "b", positions=512,
                                                                        seed=2)  # fmt: skip
    hf.tokenizer(first, vocab=300)
    spec = json.loads((first / "tokenizer.json").read_text(encoding="utf-8"))
    if edit == "truncation":  # as a training run that tokenized with truncation=True saves it
        spec["truncation"] = {"direction": "Right", "max_length": 8, "strategy": "LongestFirst",
                              "stride": 0}  # fmt: skip
        spec["padding"] = {"strategy": "BatchLongest", "direction": "Right", "pad_to_multiple_of":
                           None, "pad_id": 0, "pad_type_id": 0, "pad_token": "<s>"}  # fmt: skip
    else:  # one merge less: some text gets other ids
        spec["model"]["merges"] = spec["model"]["merges"][:-1]
    (second / "tokenizer.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
    data = root / "val.txt"
    data.write_text("".join(d + "\n" for d in hf.corpus(30, seed=3) if d), encoding="utf-8")
    return first, second, data


def test_truncation_and_padding_do_not_make_another_tokenizer(tmp_path: Path) -> None:
    first, second, data = _pair(tmp_path, "truncation")
    assert (first / "tokenizer.json").read_bytes() != (second / "tokenizer.json").read_bytes()
    plan = resolve([first, second], Options.of(data=data))
    assert len(plan.groups) == 1 and len(set(plan.tokenizers)) == 1  # one pass, one tokenization
    report = evalloss.compare([first, second], data=data)
    assert report.unit == "token"  # ranked by loss per token, comparable
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(first / "tokenizer.json"))
    ids = [tokenizer.encode(d).ids for d in data.read_text(encoding="utf-8").splitlines()]
    for model in report.models:
        loss_sum, tokens = hf.own_loss(Path(model.path), ids)
        assert model.tokens == tokens
        assert model.loss_per_token == pytest.approx(loss_sum / tokens, rel=1e-6)
    ranked = sorted(report.models, key=lambda m: m.loss_per_token or math.inf)
    assert [m.rank for m in ranked] == [1, 2]


def test_a_different_merge_is_another_tokenizer(tmp_path: Path) -> None:
    first, second, data = _pair(tmp_path, "merge")
    plan = resolve([first, second], Options.of(data=data))
    assert len(set(plan.tokenizers)) == 2 and len(plan.groups) == 2
    report = evalloss.compare([first, second], data=data)
    assert report.unit == "byte"  # losses per token cannot be compared: bits per byte ranks
