"""Tiny Hugging Face model folders, byte-level BPE tokenizers and text corpora, made locally.

Nothing is downloaded: models are built from a config with random weights, tokenizers are
trained by the `tokenizers` trainer on a corpus written here.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers", reason="needs the hf extra")
tokenizers = pytest.importorskip("tokenizers", reason="needs the hf extra")

import torch  # noqa: E402

WORDS = ["the", "model", "loss", "token", "batch", "item", "exact", "sum", "mean", "average",
         "weight", "data", "train", "eval", "window", "über", "naïve", "café", "東京", "😀"]  # fmt: skip


def corpus(count: int = 30, seed: int = 0) -> list[str]:
    """Documents of varied length (some empty or one word), with non-ASCII text."""
    rng = random.Random(seed)
    lengths = [rng.choice([0, 1, 2, 4, 8, 15, 30, 60]) for _ in range(count)]
    return [" ".join(rng.choice(WORDS) for _ in range(n)) for n in lengths]


def tokenizer(folder: Path, vocab: int = 120, bos: bool = False, seed_text: str = "") -> Path:
    """A byte-level BPE ``tokenizer.json`` trained on `corpus`; with ``bos`` its post-processor
    puts ``<s>`` before every document."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, special_tokens=["<s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator([*corpus(200, seed=1), seed_text], trainer=trainer)
    if bos:
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))]
        )
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tokenizer.json"
    tok.save(str(path))
    return path


def gpt2(folder: Path, vocab: int = 300, positions: int = 64, seed: int = 0) -> Path:
    """A one-layer GPT-2 folder (tied embeddings), saved as transformers saves it."""
    config = transformers.GPT2Config(vocab_size=vocab, n_positions=positions, n_embd=16,
                                     n_layer=1, n_head=2, bos_token_id=0, eos_token_id=0)  # fmt: skip
    return _save(transformers.GPT2LMHeadModel, config, folder, seed)


def llama(folder: Path, vocab: int = 300, positions: int = 64, seed: int = 0) -> Path:
    """A one-layer Llama folder (untied head, grouped-query attention, rotary positions)."""
    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=positions,
        tie_word_embeddings=False,
    )  # fmt: skip
    return _save(transformers.LlamaForCausalLM, config, folder, seed)


def classifier(folder: Path, labels: int = 3) -> Path:
    """A one-layer GPT-2 sequence classifier (pad token 0) with a tokenizer.json."""
    config = transformers.GPT2Config(vocab_size=300, n_positions=512, n_embd=16, n_layer=1,
                                     n_head=2, num_labels=labels, pad_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    transformers.GPT2ForSequenceClassification(config).save_pretrained(folder)
    tokenizer(folder, vocab=300)
    return folder


def _save(cls: type, config: object, folder: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = cls(config).eval()
    with torch.no_grad():  # weights large enough that the models differ in loss
        for p in model.parameters():
            p.mul_(4.0)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


def model_of(folder: Path) -> torch.nn.Module:
    """The folder's model as its users load it, in float64."""
    cls = transformers.AutoModelForCausalLM
    return cls.from_pretrained(folder, local_files_only=True, dtype=torch.float64).eval()


def own_loss(folder: Path, documents: list[list[int]], context: int | None = None) -> tuple[float, int]:
    """(loss sum, scored tokens): the model's own ``model(ids, labels=ids).loss`` x (tokens - 1)
    one document at a time, float64, added with math.fsum (documents of at most ``context``)."""
    model = model_of(folder)
    terms, tokens = [], 0
    with torch.no_grad():
        for ids in documents:
            if len(ids) < 2:
                continue
            assert context is None or len(ids) <= context
            x = torch.tensor([ids])
            terms.append(float(model(x, labels=x).loss) * (len(ids) - 1))
            tokens += len(ids) - 1
    return math.fsum(terms), tokens


def jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# a chat template with the assistant's turns in {% generation %} blocks, as TRL's docs show
CHAT_TEMPLATE = (
    "{{ bos_token if bos_token is defined else '' }}{% for m in messages %}"
    "{{ '<|' + m['role'] + '|>\n' }}{% if m['role'] == 'assistant' %}{% generation %}"
    "{{ m['content'] + eos_token }}{% endgeneration %}{% else %}{{ m['content'] + eos_token }}"
    "{% endif %}{{ '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}"
    "{% endif %}"
)


def chat_folder(folder: Path, kind: str = "gpt2", template: str | None = CHAT_TEMPLATE,
                jinja: bool = False, **config: object) -> Path:  # fmt: skip
    """A tiny model folder with a tokenizer, its ``tokenizer_config.json`` (EOS ``<s>``) and a
    chat template (there, or with ``jinja`` in ``chat_template.jinja``)."""
    (llama if kind == "llama" else gpt2)(folder, positions=512)
    tokenizer(folder, vocab=300)
    settings: dict[str, object] = {"tokenizer_class": "PreTrainedTokenizerFast",
                                   "eos_token": "<s>", **config}  # fmt: skip
    if template is not None and jinja:
        (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
    elif template is not None:
        settings["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
    return folder


def token_losses(model: torch.nn.Module, ids: list[int]) -> list[float]:
    """The model's own loss of every token of one sequence but the first, float64: token j's
    is -log p(ids[j] | ids[:j])."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    logp = torch.log_softmax(logits[:-1], dim=-1)
    return [-float(logp[j - 1, ids[j]]) for j in range(1, len(ids))]
