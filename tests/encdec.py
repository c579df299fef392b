"""Tiny encoder-decoder folders (T5, BART) and tokenizers, made locally, and the oracle: the
model's own ``labels=`` loss, one pair at a time.

Nothing is downloaded: models are built from a config with random weights; T5's tokenizer is
a Unigram (``<pad>`` 0, ``</s>`` 1: EOS after every text), BART's a byte-level BPE (``<s>`` 0,
``<pad>`` 1, ``</s>`` 2: ``<s> ... </s>``), both trained here on `hf.corpus`.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from tests import hf

transformers = pytest.importorskip("transformers", reason="needs the hf extra")

import torch  # noqa: E402


def t5_tokenizer(folder: Path, vocab: int = 150) -> Path:
    """A T5-style Unigram ``tokenizer.json``: ``</s>`` after every text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(vocab_size=vocab, special_tokens=["<pad>", "</s>", "<unk>"],
                                      unk_token="<unk>", show_progress=False)  # fmt: skip
    tok.train_from_iterator(hf.corpus(200, seed=1), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))]
    )
    return _saved(tok, folder)


def bart_tokenizer(folder: Path, vocab: int = 150) -> Path:
    """A BART-style byte-level BPE ``tokenizer.json``: ``<s> ... </s>``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<s>", "<pad>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)  # fmt: skip
    tok.train_from_iterator(hf.corpus(200, seed=1), trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", 0), ("</s>", 2)]
    )
    return _saved(tok, folder)


def _saved(tok: object, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tokenizer.json"
    tok.save(str(path))  # type: ignore[attr-defined]
    return path


def t5(folder: Path, vocab: int = 300, seed: int = 0, like: Path | None = None) -> Path:
    """A one-layer T5 folder (relative positions: no declared limit), with its tokenizer (the
    folder ``like``'s, byte for byte: Unigram training is not deterministic)."""
    config = transformers.T5Config(
        vocab_size=vocab, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
        decoder_start_token_id=0,
    )  # fmt: skip
    hf._save(transformers.T5ForConditionalGeneration, config, folder, seed)
    if like is None:
        t5_tokenizer(folder)
    else:
        (folder / "tokenizer.json").write_bytes((like / "tokenizer.json").read_bytes())
    return folder


def bart(folder: Path, vocab: int = 300, positions: int = 512, seed: int = 0) -> Path:
    """A one-layer BART folder (learned positions: ``positions`` declared), with its tokenizer."""
    config = transformers.BartConfig(
        vocab_size=vocab, d_model=16, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
        decoder_ffn_dim=32, max_position_embeddings=positions, pad_token_id=1, bos_token_id=0,
        eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=2,
    )  # fmt: skip
    hf._save(transformers.BartForConditionalGeneration, config, folder, seed)
    bart_tokenizer(folder)
    return folder


def pairs(count: int = 30, seed: int = 0) -> list[dict[str, object]]:
    """Input/target pairs of varied length (an empty input among them), non-ASCII text."""
    rng = random.Random(seed)
    texts = hf.corpus(2 * count, seed=seed)
    found = [{"input": texts[2 * i], "target": texts[2 * i + 1] or rng.choice(hf.WORDS)}
             for i in range(count)]  # fmt: skip
    found[0]["input"] = ""
    return found


def own_losses(folder: Path, rows: list[dict[str, object]]) -> list[tuple[float, int]]:
    """Each pair's (loss sum, target tokens): the model's own ``model(input_ids,
    labels=target).loss`` x target tokens, one pair at a time, in float64; tokenized by
    transformers' own fast tokenizer (``text_target=`` for the target)."""
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(
        folder, local_files_only=True, dtype=torch.float64).eval()  # fmt: skip
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
    found = []
    with torch.no_grad():
        for row in rows:
            x = tokenizer(str(row["input"]), return_tensors="pt")["input_ids"]
            y = tokenizer(text_target=str(row["target"]), return_tensors="pt")["input_ids"]
            found.append((float(model(input_ids=x, labels=y).loss) * y.shape[1], y.shape[1]))
    return found


def own_loss(folder: Path, rows: list[dict[str, object]]) -> tuple[float, int]:
    """(loss sum, target tokens) over every pair: `own_losses` added with math.fsum."""
    each = own_losses(folder, rows)
    return math.fsum(s for s, _ in each), sum(t for _, t in each)
