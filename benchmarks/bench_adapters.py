"""Benchmark K LoRA adapters over one base against the loops a user would write (not a test).

    python benchmarks/bench_adapters.py --documents 300 --repeat 2

Makes a GPT-2-shaped base (6 layers, width 384, 6 heads, 1024 positions, a byte-level BPE
tokenizer of 4096 tokens trained here), 8 LoRA adapters over it (r 8 on ``c_attn``, ``c_proj``
and ``c_fc``, random non-zero weights, saved by peft) and ``--documents`` documents of
English-like text with long-tailed lengths. For K = 1, 4, 8 times as whole processes,
interleaved, the median of ``--repeat``: evalloss (``compare`` the K adapters, one pass, one
base); a plain loop that, adapter by adapter, loads the base afresh, merges the adapter
(``merge_and_unload``) and scores; peft's own loop (one ``PeftModel``, ``load_adapter`` each,
``set_adapter`` and a forward with ``labels=``). Also evalloss on the base alone: the peak
memory the K adapters are held to (the base's run plus 25% plus the adapters' own bytes).
Prints tokens per second (scored tokens times K over the wall time), peak RSS and ratios.
"""

from __future__ import annotations

import argparse
import platform
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import PY, interleaved  # noqa: E402
from bench_text import byte_bpe, english  # noqa: E402

SHAPE = {"n_layer": 6, "n_embd": 384, "n_head": 6, "n_positions": 1024}
KS = (1, 4, 8)


def make(folder: Path, documents: int) -> tuple[Path, Path, list[Path], int]:
    """The base, the text, 8 adapters; and the scored tokens of the text."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    texts = english(documents)
    data = folder / f"docs-{documents}.txt"
    data.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    base = folder / "base"
    if not (base / "model.safetensors").exists():
        tok = byte_bpe(texts)
        config = transformers.GPT2Config(vocab_size=tok.get_vocab_size(), bos_token_id=0,
                                         eos_token_id=0, **SHAPE)  # fmt: skip
        torch.manual_seed(0)
        transformers.GPT2LMHeadModel(config).save_pretrained(base, safe_serialization=True)
        tok.save(str(base / "tokenizer.json"))
    adapters = [folder / f"lora-{i}" for i in range(max(KS))]
    for i, adapter in enumerate(adapters):
        if (adapter / "adapter_model.safetensors").exists():
            continue
        torch.manual_seed(100 + i)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = transformers.GPT2LMHeadModel.from_pretrained(base)
            config = LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn", "c_proj", "c_fc"])
            lora = get_peft_model(model, config)
        with torch.no_grad():
            for p in lora.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * 0.02)
        lora.save_pretrained(adapter)
    tok = Tokenizer.from_file(str(base / "tokenizer.json"))
    tokens = sum(max(len(e.ids) - 1, 0) for e in tok.encode_batch(texts))
    return base, data, adapters, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="float32", help="evalloss's; the loops' dtype")
    parser.add_argument("--batch-tokens", default="4096", help="evalloss's tokens per pass")
    parser.add_argument("--folder", type=Path, default=Path("/tmp/evalloss-bench-adapters"))
    args = parser.parse_args()
    base, data, adapters, tokens = make(args.folder, args.documents)
    own = sum((a / "adapter_model.safetensors").stat().st_size for a in adapters)
    run = ["--data", str(data), "--no-progress", "--no-hash", "--device", args.device,
           "--precision", args.precision, "--format", "json",
           "--batch-tokens", args.batch_tokens]  # fmt: skip
    commands = {"evalloss, base alone": [PY, "-m", "evalloss", "compare", str(base), *run]}
    for k in KS:
        chosen = [str(a) for a in adapters[:k]]
        loop = [PY, str(HERE / "_adapters.py")]
        commands |= {
            f"evalloss, K={k}": [PY, "-m", "evalloss", "compare", *chosen, "--base", str(base),
                                 *run],
            f"merged loop, K={k}": [*loop, "merged", str(base), str(data), args.device,
                                    args.precision, *chosen],
            f"peft loop, K={k}": [*loop, "peft", str(base), str(data), args.device,
                                  args.precision, *chosen],
        }  # fmt: skip
    print(f"{platform.processor() or platform.machine()}, {args.documents} documents, {tokens} "
          f"scored tokens, GPT-2 {SHAPE}, LoRA r 8 (c_attn, c_proj, c_fc): "
          f"{own / max(KS) / 2**20:.2f} MiB an adapter, {args.device}, {args.precision}, "
          f"evalloss at {args.batch_tokens} tokens a pass, the loops at 8 documents",
          flush=True)  # fmt: skip
    results = interleaved(commands, args.repeat)
    alone = results["evalloss, base alone"]
    print(f"{'evalloss, base alone':<22} {alone['seconds']:7.2f} s {alone['rss_mb']:7.0f} MB")
    for k in KS:
        ours = results[f"evalloss, K={k}"]
        for name in (f"evalloss, K={k}", f"merged loop, K={k}", f"peft loop, K={k}"):
            r = results[name]
            print(f"{name:<22} {r['seconds']:7.2f} s {r['rss_mb']:7.0f} MB "
                  f"{tokens * k / r['seconds']:9.0f} tokens/s  wall / evalloss "
                  f"{r['seconds'] / ours['seconds']:.2f}x")  # fmt: skip
    top = results[f"evalloss, K={max(KS)}"]
    limit = alone["rss_mb"] * 1.25 + own / 2**20
    print(f"peak RSS at K={max(KS)}: {top['rss_mb']:.0f} MB; target: the base's run x 1.25 + "
          f"the adapters' {own / 2**20:.1f} MiB = {limit:.0f} MB: "
          f"{'met' if top['rss_mb'] <= limit else 'MISSED'}")  # fmt: skip
    merged = results[f"merged loop, K={max(KS)}"]["seconds"]
    print(f"wall at K={max(KS)}: evalloss {top['seconds']:.2f} s, merged loop {merged:.2f} s: "
          f"{'met' if top['seconds'] <= merged else 'MISSED'}")  # fmt: skip


if __name__ == "__main__":
    main()
