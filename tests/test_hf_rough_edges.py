"""What a fine-tuning engineer hits first: a classifier's folder without --target is one line;
transformers' attention_mask warning is not printed where evalloss never scores padding;
checkpoint names stay readable in the 80-column table."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from evalloss.render.names import shorten
from tests import hf
from tests.conftest import run


def test_a_classifier_without_target_is_one_line(tmp_path: Path) -> None:
    folder = hf.classifier(tmp_path / "classifier")
    docs = [d for d in hf.corpus(12, seed=2) if d]
    data = hf.jsonl(tmp_path / "d.jsonl", [{"text": d, "label": i % 3} for i, d in enumerate(docs)])
    result = run("compare", folder, "--data", data)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (f"evalloss: error: {folder}: a sequence classification model folder "
                             "is scored against labels: give --target, the data's label "
                             "column\n")  # fmt: skip
    assert run("compare", folder, "--data", data, "--target", "label").exit_code == 0


@pytest.mark.slow
def test_no_attention_mask_warning_where_padding_is_never_scored(tmp_path: Path) -> None:
    """A folder whose config has a pad token (as a fine-tuned one often has): documents of
    different lengths are padded in a batch; transformers would warn on every run."""
    import transformers

    config = transformers.GPT2Config(vocab_size=300, n_positions=512, n_embd=16, n_layer=1,
                                     n_head=2, bos_token_id=0, eos_token_id=0,
                                     pad_token_id=0)  # fmt: skip
    folder = tmp_path / "padded"
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    hf.tokenizer(folder, vocab=300)
    data = tmp_path / "val.txt"
    data.write_text("".join(d + "\n" for d in hf.corpus(20, seed=3) if d), encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "evalloss", "compare", str(folder), "--data",
                           str(data), "--batch-size", "4"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "attention_mask" not in done.stderr and "loss/token" in done.stdout


def test_checkpoint_names_keep_their_words_whole() -> None:
    steps = ["checkpoint-300", "checkpoint-600", "checkpoint-900"]
    assert shorten(steps, 14) == steps  # they fit: left alone
    two = [f"{r}/checkpoint-{s}" for r in ("lr-3e-4", "lr-1e-4") for s in (500, 1000)]
    assert shorten(two, 16) == ["lr-3e-4/...-500", "lr-3e-4/...-1000", "lr-1e-4/...-500",
                                "lr-1e-4/...-1000"]  # the run and the step, no word cut
    tight = shorten(two, 12)  # no room for whole words: still distinct, within the limit
    assert len(set(tight)) == 4 and all(len(s) <= 12 for s in tight)
