"""Benchmark evalloss against lm-evaluation-harness and transformers' Trainer (not a test).

    python benchmarks/bench_lm_eval.py --documents 1000 10000 --repeat 3

Makes one Hugging Face folder (GPT-2 shaped: 2 layers, width 128, 4 heads, 1024 positions, a
byte-level BPE tokenizer of 4096 tokens trained here; the model trained for `STEPS` steps on
the same generator's text, so that its figures are a trained model's) and, for each
``--documents``, that many English-like documents of long-tailed lengths in JSON Lines. Then
times, as whole processes, interleaved, the median of ``--repeat``:

- lm-evaluation-harness (its ``lm_eval`` command, a local ``loglikelihood_rolling`` task on
  the file, ``max_length`` 1024, batch 8) against ``evalloss compare --prefix-token auto
  --context 1024``: the same tokens scored (every token of each document, after its EOS);
- transformers' ``Trainer.evaluate`` (``DataCollatorForLanguageModeling(mlm=False)``, eval
  batch 8) against ``evalloss compare``: the same tokens (all but each document's first).

Prints tokens per second, the ratios, each process's peak RSS, and the figures side by side
(lm-evaluation-harness's bits per byte against evalloss's; the two conventions' difference).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import PY, interleaved  # noqa: E402
from bench_text import WORDS  # noqa: E402

SHAPE = {"n_embd": 128, "n_layer": 2, "n_head": 4, "n_positions": 1024}
VOCAB = 4096
EOT = "<|endoftext|>"
STEPS = 300  # training steps: batches of 16 windows of 128 tokens
TASK = """task: heldout
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
"""


def texts(documents: int, seed: int = 0) -> list[str]:
    """Documents of Zipf-distributed words, 1 to 400 words long (a log-normal)."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(4.0, 0.9, size=documents).astype(int), 1, 400)
    weights = 1.0 / np.arange(1, len(WORDS) + 1)
    weights /= weights.sum()
    words = np.array(WORDS)
    return [" ".join(words[rng.choice(len(WORDS), size=n, p=weights)]) for n in lengths]


def make_folder(folder: Path) -> Path:
    """The model folder: tokenizer trained, model trained for `STEPS` steps, saved."""
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    model = folder / "gpt2"
    if (model / "model.safetensors").exists():
        return model
    corpus = texts(4000, seed=1)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, show_progress=False, special_tokens=[EOT],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())  # fmt: skip
    tok.train_from_iterator(corpus, trainer=trainer)
    eot = tok.token_to_id(EOT)
    config = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), bos_token_id=eot,
                                     eos_token_id=eot, **SHAPE)  # fmt: skip
    torch.manual_seed(0)
    net = transformers.GPT2LMHeadModel(config)
    stream = torch.tensor([i for t in corpus for i in [eot, *tok.encode(t).ids]])
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3)
    rng = np.random.default_rng(2)
    for _ in range(STEPS):
        starts = rng.integers(0, len(stream) - 129, size=16)
        batch = torch.stack([stream[s : s + 128] for s in starts])
        loss = net(batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval().save_pretrained(model, safe_serialization=True)
    tok.save(str(model / "tokenizer.json"))
    declared = {"bos_token": EOT, "eos_token": EOT, "model_max_length": SHAPE["n_positions"]}
    (model / "tokenizer_config.json").write_text(json.dumps(declared))
    return model


def make_data(folder: Path, documents: int, model: Path) -> None:
    """The documents (JSON Lines), lm-evaluation-harness's task folder for them, and the
    tokens each convention scores (``tokens-N.json``)."""
    from tokenizers import Tokenizer

    data = folder / f"docs-{documents}.jsonl"
    docs = texts(documents)
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs), encoding="utf-8")
    tasks = folder / f"tasks-{documents}"
    tasks.mkdir(exist_ok=True)
    (tasks / "heldout.yaml").write_text(TASK.format(data=data))
    lengths = [len(e.ids) for e in Tokenizer.from_file(str(model / "tokenizer.json"))
               .encode_batch(docs)]  # fmt: skip
    tokens = {"first unscored": sum(max(n - 1, 0) for n in lengths), "every token": sum(lengths)}
    (folder / f"tokens-{documents}.json").write_text(json.dumps(tokens))


def trainer(folder: str, data: str, batch: str = "8") -> None:
    """transformers' Trainer.evaluate as its users run it: the folder's tokenizer over the
    text, ``DataCollatorForLanguageModeling(mlm=False)``, eval batch ``batch``."""
    import datasets
    import transformers as tf

    tokenizer = tf.AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = tokenizer.eos_token
    model = tf.AutoModelForCausalLM.from_pretrained(folder)
    lines = Path(data).read_text(encoding="utf-8").splitlines()
    docs = [json.loads(line)["text"] for line in lines]
    dataset = datasets.Dataset.from_dict({"text": docs}).map(
        lambda b: tokenizer(b["text"]), batched=True, remove_columns=["text"])  # fmt: skip
    with tempfile.TemporaryDirectory() as out:
        args = tf.TrainingArguments(output_dir=out, per_device_eval_batch_size=int(batch),
                                    report_to=[], use_cpu=True)  # fmt: skip
        collator = tf.DataCollatorForLanguageModeling(tokenizer, mlm=False)
        run = tf.Trainer(model=model, args=args, eval_dataset=dataset, data_collator=collator)
        print(run.evaluate()["eval_loss"])


def commands(model: Path, data: Path, tasks: Path, out: Path) -> dict[str, list[str]]:
    evalloss = [PY, "-m", "evalloss", "compare", str(model), "--data", str(data), "--no-progress",
                "--no-hash", "--format", "json"]  # fmt: skip
    return {
        "evalloss --prefix-token auto": [*evalloss, "--prefix-token", "auto", "--context",
                                         str(SHAPE["n_positions"]), "-o", str(out / "ours.json")],
        "lm-eval, batch 8": [str(Path(PY).parent / "lm_eval"), "--model", "hf", "--model_args",
                             f"pretrained={model},max_length={SHAPE['n_positions']}",
                             "--include_path", str(tasks), "--tasks", "heldout", "--device",
                             "cpu", "--batch_size", "8", "--output_path", str(out / "lm-eval")],
        "evalloss": [*evalloss, "-o", str(out / "plain.json")],
        "Trainer.evaluate, batch 8": [PY, str(Path(__file__).resolve()), "trainer", str(model),
                                      str(data)],
    }  # fmt: skip


OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
AGAINST = {"evalloss --prefix-token auto": "lm-eval, batch 8",
           "evalloss": "Trainer.evaluate, batch 8"}  # fmt: skip


def figures(out: Path) -> str:
    """lm-evaluation-harness's bits per byte against evalloss's under its convention and
    under evalloss's own."""
    theirs = json.loads(sorted(out.glob("lm-eval/**/results_*.json"))[-1].read_text())
    metrics = theirs["results"]["heldout"]
    lm_bits = metrics["bits_per_byte,none"]
    ours = json.loads((out / "ours.json").read_text())["models"][0]
    plain = json.loads((out / "plain.json").read_text())["models"][0]
    return (f"bits/byte: lm-eval {lm_bits:.9f}, evalloss --prefix-token auto "
            f"{ours['bits_per_byte']:.9f} ({abs(ours['bits_per_byte'] / lm_bits - 1):.1e} "
            f"relative), evalloss default {plain['bits_per_byte']:.9f} "
            f"({plain['bits_per_byte'] / ours['bits_per_byte'] - 1:+.2%}); word perplexity: "
            f"lm-eval {metrics['word_perplexity,none']:.6f}, evalloss "
            f"{ours['word_perplexity']:.6f}")  # fmt: skip


def _cpu() -> str:
    """The CPU model and its vector extensions (/proc/cpuinfo where there is one)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), platform.machine())  # fmt: skip
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines()
                      if line.startswith("flags")), []))  # fmt: skip
    vector = sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "sse4")))
    return f"{name} ({' '.join(vector)})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--folder", type=Path, default=Path("/tmp/evalloss-bench-lm-eval"))
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    # made in a child process: a child forked from a parent that trained a model (or holds
    # the documents) counts the parent's memory in its own peak RSS
    subprocess.run([PY, str(Path(__file__).resolve()), "make", str(args.folder),
                    *map(str, args.documents)], check=True)  # fmt: skip
    model = args.folder / "gpt2"
    print(f"{_cpu()}, {os.cpu_count()} CPUs; GPT-2 {SHAPE}, vocabulary {VOCAB}", flush=True)
    for documents in args.documents:
        data, tasks = args.folder / f"docs-{documents}.jsonl", args.folder / f"tasks-{documents}"
        tokens = json.loads((args.folder / f"tokens-{documents}.json").read_text())
        out = args.folder / f"out-{documents}"
        out.mkdir(exist_ok=True)
        run = commands(model, data, tasks, out)
        results = interleaved(run, args.repeat, env=dict.fromkeys(run, OFFLINE))
        print(f"\n{documents} documents: {tokens['every token']} tokens with the prefix, "
              f"{tokens['first unscored']} without", flush=True)  # fmt: skip
        for name, result in results.items():
            counted = tokens["every token" if "prefix" in name or "lm-eval" in name
                             else "first unscored"]  # fmt: skip
            result["tokens/s"] = counted / result["seconds"]
            print(f"{name:<30} {result['seconds']:8.2f} s {result['tokens/s']:10.0f} tokens/s "
                  f"peak RSS {result['rss_mb']:7.0f} MB")  # fmt: skip
        for ours, theirs in AGAINST.items():
            ratio = results[ours]["tokens/s"] / results[theirs]["tokens/s"]
            print(f"{ours} / {theirs}: {ratio:.2f}x")
        print(figures(out))


if __name__ == "__main__":
    if sys.argv[1:2] == ["trainer"]:
        trainer(*sys.argv[2:])
    elif sys.argv[1:2] == ["make"]:
        made = make_folder(Path(sys.argv[2]))
        for n in sys.argv[3:]:
            make_data(Path(sys.argv[2]), int(n), made)
    elif sys.argv[1:2] == ["figures"]:  # a finished run's figures again
        print(figures(Path(sys.argv[2])))
    else:
        main()
