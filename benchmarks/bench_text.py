"""Benchmark the text path against pre-tokenized data (not a test): does tokenization dominate?

    python benchmarks/bench_text.py --documents 4000 --repeat 3

Makes a small Hugging Face folder (GPT-2 shaped: 2 layers, width 128, 4096 positions, a
byte-level BPE tokenizer of 4096 tokens trained here) and ``--documents`` documents of English-
like text with long-tailed lengths, as a ``.txt`` file and as the same documents' token ids in
JSON Lines. Times `evalloss compare` on each as whole processes, interleaved, the median of
``--repeat``, plus the tokenizer alone (``encode_batch_fast`` over every document, in process).
Prints tokens per second and the text path's cost over the pre-tokenized one.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import PY, interleaved  # noqa: E402

WORDS = [
    "the", "of", "and", "to", "in", "is", "was", "for", "on", "that", "with", "as", "by", "at",
    "from", "his", "her", "which", "this", "be", "are", "model", "loss", "token", "batch",
    "exact", "figure", "evaluation", "training", "data", "window", "context", "stride",
    "perplexity", "average", "mean", "weight", "language", "tokenizer", "document", "byte",
    "über", "café", "naïve",
]


def english(documents: int) -> list[str]:
    """English-like documents with long-tailed lengths (a log-normal, 1 to 700 words)."""
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(4.0, 0.9, size=documents).astype(int), 1, 700)
    words = np.array(WORDS)
    return [" ".join(words[rng.integers(0, len(words), size=n)]) for n in lengths]


def byte_bpe(texts: list[str]) -> Any:
    """A byte-level BPE tokenizer of up to 4096 tokens trained on ``texts``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=4096, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def make(folder: Path, documents: int) -> tuple[Path, Path, Path, int]:
    import torch
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    texts = english(documents)
    text = folder / f"docs-{documents}.txt"
    text.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    model = folder / "gpt2"
    tok = byte_bpe(texts[:2000])
    config = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), n_positions=4096,
                                     n_embd=128, n_layer=2, n_head=4)  # fmt: skip
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(model, safe_serialization=True)
    tok.save(str(model / "tokenizer.json"))
    ids = [e.ids for e in tok.encode_batch_fast(texts)]
    tokens = folder / f"docs-{documents}.jsonl"
    tokens.write_text("".join(json.dumps({"input_ids": i}) + "\n" for i in ids))
    return model, text, tokens, sum(max(len(i) - 1, 0) for i in ids)


def tokenize_only(model: Path, text: Path) -> float:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    lines = text.read_text(encoding="utf-8").splitlines()
    start = time.perf_counter()
    for i in range(0, len(lines), 8192):
        tok.encode_batch_fast(lines[i : i + 8192])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=4000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/evalloss-bench-text"))
    args = parser.parse_args()
    model, text, tokens_file, tokens = make(args.folder, args.documents)
    run = [PY, "-m", "evalloss", "compare", str(model), "--no-hash", "--data"]
    commands = {"text (.txt)": [*run, str(text)],
                "pre-tokenized (.jsonl)": [*run, str(tokens_file)]}  # fmt: skip
    results = interleaved(commands, args.repeat)
    alone = tokenize_only(model, text)
    print(f"{args.documents} documents, {tokens} scored tokens, {text.stat().st_size} bytes; "
          f"{platform.processor() or platform.machine()}")  # fmt: skip
    for name, r in results.items():
        print(f"{name:24} {r['seconds']:7.2f} s  {tokens / r['seconds']:9.0f} tokens/s  "
              f"peak RSS {r['rss_mb']:.0f} MB")  # fmt: skip
    cost = results["text (.txt)"]["seconds"] / results["pre-tokenized (.jsonl)"]["seconds"]
    print(f"text / pre-tokenized: {cost:.3f}x; the tokenizer alone: {alone:.2f} s "
          f"({alone / results['text (.txt)']['seconds']:.1%} of the text run)")


if __name__ == "__main__":
    main()
