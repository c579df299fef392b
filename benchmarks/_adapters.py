"""The two loops benchmarks/bench_adapters.py times evalloss against, as a user writes them:

    python _adapters.py merged BASE DATA.txt DEVICE DTYPE ADAPTER...
    python _adapters.py peft BASE DATA.txt DEVICE DTYPE ADAPTER...

``merged``: for each adapter, a fresh load of the base, peft's ``from_pretrained``, then
``merge_and_unload`` and a plain loop. ``peft``: the base loaded once, every adapter loaded
into one ``PeftModel`` (``load_adapter``), then for each ``set_adapter`` and a loop that
forwards with ``labels=`` (the model's own mean, times its tokens). Both: documents in file
order, batches of 8, padded; each prints its loss sums on stderr.
"""

from __future__ import annotations

import sys
import warnings

import torch
from torch.nn import functional as F

BATCH = 8


def _documents(base: str, data: str) -> list[list[int]]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(f"{base}/tokenizer.json")
    lines = open(data, encoding="utf-8").read().splitlines()  # noqa: SIM115
    return [e.ids for e in tok.encode_batch(lines) if len(e.ids) > 1]


def _batches(docs: list[list[int]], device: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for i in range(0, len(docs), BATCH):
        part = docs[i : i + BATCH]
        width = max(len(d) for d in part)
        ids = torch.zeros(len(part), width, dtype=torch.long)
        mask = torch.zeros(len(part), width, dtype=torch.long)
        for j, d in enumerate(part):
            ids[j, : len(d)], mask[j, : len(d)] = torch.tensor(d), 1
        out.append((ids.to(device), mask.to(device)))
    return out


def _base(base: str, device: str, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(base, dtype=dtype).to(device).eval()


def _summed(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    total = 0.0
    with torch.inference_mode():
        for ids, mask in batches:
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            labels = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
            total += float(F.cross_entropy(logits.transpose(1, 2), labels, reduction="sum"))
    return total


def _with_labels(model: torch.nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    total = 0.0
    with torch.inference_mode():
        for ids, mask in batches:
            labels = ids.masked_fill(mask == 0, -100)
            out = model(input_ids=ids, attention_mask=mask, labels=labels)
            total += float(out.loss) * int((labels[:, 1:] != -100).sum())
    return total


def main() -> None:
    from peft import PeftModel

    how, base, data, device, dtype_name, *adapters = sys.argv[1:]
    dtype = getattr(torch, dtype_name)
    batches = _batches(_documents(base, data), device)
    sums = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if how == "merged":
            for adapter in adapters:
                model = PeftModel.from_pretrained(_base(base, device, dtype), adapter)
                sums.append(_summed(model.merge_and_unload().eval(), batches))
                del model
        else:
            model = PeftModel.from_pretrained(_base(base, device, dtype), adapters[0],
                                              adapter_name="a0")  # fmt: skip
            for i, adapter in enumerate(adapters[1:], start=1):
                model.load_adapter(adapter, adapter_name=f"a{i}")
            model.eval()
            for i in range(len(adapters)):
                model.set_adapter(f"a{i}")
                sums.append(_with_labels(model, batches))
    print(" ".join(f"{s:.6f}" for s in sums), file=sys.stderr)


if __name__ == "__main__":
    main()
