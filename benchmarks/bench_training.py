"""What the exact loss while training costs (not a test): a training step with and without
`evalloss.RunningLoss`, and an evaluation with and without the framework callbacks.

    python benchmarks/bench_training.py --steps 300 --rounds 15
    python benchmarks/bench_training.py --device cuda

Cases, each timed in blocks interleaved with its baseline (A B B A ...), the median of the
per-round ratios printed:
- ``mlp``: the 64-256-256-10 MLP, batch 256, SGD: forward, cross-entropy (``reduction='none'``),
  backward, step; with ``meter.update(losses)``, and the epoch's figure read at the end of the
  block (the one sync). ``item()`` is the usual ``epoch_loss += loss.mean().item()`` instead
  (a sync per step).
- ``gpt2``: a 2-layer GPT-2 (n_embd 64, vocab 1000), batch 8 x 64 tokens, AdamW; with
  ``meter.update(loss, tokens)``.
- ``trainer``: ``Trainer.evaluate()`` on 96 documents with and without `ExactEvalCallback`.
- ``lightning``: ``lightning.Trainer.validate`` with and without `ExactValidation`.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CLASSES, FEATURES, mlp

import evalloss

Block = Callable[[bool], None]


def _mlp_case(device: str, steps: int, mode: str) -> Block:
    torch.manual_seed(0)
    model = mlp().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(steps, 256, FEATURES, device=device)
    y = torch.randint(0, CLASSES, (steps, 256), device=device)
    meter = evalloss.RunningLoss()

    def block(measured: bool) -> None:
        meter.reset()
        epoch_loss = 0.0
        for i in range(steps):
            losses = nn.functional.cross_entropy(model(x[i]), y[i], reduction="none")
            losses.mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if measured and mode == "meter":
                meter.update(losses)
            elif measured:
                epoch_loss += losses.mean().item()
        if measured and mode == "meter":
            _ = meter.loss_per_item
        _sync(device)

    return block


def _gpt2_case(device: str, steps: int) -> Block:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=1000, n_positions=64, n_embd=64, n_layer=2, n_head=2,
                        bos_token_id=0, eos_token_id=0)  # fmt: skip
    model = GPT2LMHeadModel(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, 1000, (steps, 8, 64), device=device)
    meter = evalloss.RunningLoss()

    def block(measured: bool) -> None:
        meter.reset()
        for i in range(steps):
            out = model(input_ids=ids[i], labels=ids[i])
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if measured:
                meter.update(out.loss, 8 * 63)
        if measured:
            _ = meter.loss_per_item
        _sync(device)

    return block


def _trainer_case(device: str) -> Block:
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

    from evalloss.integrations.transformers import ExactEvalCallback

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=1000, n_positions=64, n_embd=64, n_layer=2, n_head=2,
                        bos_token_id=0, eos_token_id=0)  # fmt: skip
    model = GPT2LMHeadModel(config)
    rows = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 1000, (96, 64)).tolist()]
    trainers = {}
    for measured in (False, True):
        args = TrainingArguments(output_dir=tempfile.mkdtemp(), per_device_eval_batch_size=8,
                                 use_cpu=device == "cpu", report_to=[], disable_tqdm=True,
                                 log_level="error")  # fmt: skip
        callbacks = [ExactEvalCallback()] if measured else []
        trainers[measured] = Trainer(model=model, args=args, eval_dataset=rows, callbacks=callbacks)

    def block(measured: bool) -> None:
        trainers[measured].evaluate()

    return block


def _lightning_case(device: str) -> Block:
    import lightning.pytorch as pl

    from evalloss.integrations.lightning import ExactValidation

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = mlp()

        def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], i: int) -> object:
            logits = self.net(batch[0])
            self.log("val_loss", nn.functional.cross_entropy(logits, batch[1]))
            return {"logits": logits}

    torch.manual_seed(0)
    data = torch.utils.data.TensorDataset(torch.randn(8192, FEATURES),
                                          torch.randint(0, CLASSES, (8192,)))  # fmt: skip
    loader = torch.utils.data.DataLoader(data, batch_size=256)
    module = Module()
    accelerator = "gpu" if device == "cuda" else "cpu"

    def block(measured: bool) -> None:
        callbacks = [ExactValidation(loss="cross-entropy")] if measured else []
        trainer = pl.Trainer(accelerator=accelerator, devices=1, logger=False, callbacks=callbacks,
                             enable_progress_bar=False, enable_model_summary=False)  # fmt: skip
        trainer.validate(module, loader, verbose=False)

    return block


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(block: Block, rounds: int) -> tuple[float, float, float]:
    """(median seconds without, with, median of the per-round ratios), A B then B A."""
    block(False)
    block(True)  # warm up both
    base, with_, ratios = [], [], []
    for r in range(rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        times = {}
        for measured in order:
            start = time.perf_counter()
            block(measured)
            times[measured] = time.perf_counter() - start
        base.append(times[False])
        with_.append(times[True])
        ratios.append(times[True] / times[False])
    return statistics.median(base), statistics.median(with_), statistics.median(ratios)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", default="mlp,item,gpt2,trainer,lightning")
    opts = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {opts.device}"
          + (f" ({torch.cuda.get_device_name()})" if opts.device == "cuda" else ""))  # fmt: skip
    cases: dict[str, Callable[[], Block]] = {
        "mlp": lambda: _mlp_case(opts.device, opts.steps, "meter"),
        "item": lambda: _mlp_case(opts.device, opts.steps, "item"),
        "gpt2": lambda: _gpt2_case(opts.device, max(1, opts.steps // 10)),
        "trainer": lambda: _trainer_case(opts.device),
        "lightning": lambda: _lightning_case(opts.device),
    }
    for name in opts.cases.split(","):
        base, with_, ratio = measure(cases[name](), opts.rounds)
        print(f"{name:10} without {base * 1e3:9.2f} ms  with {with_ * 1e3:9.2f} ms  "
              f"ratio {ratio:.4f}", flush=True)


if __name__ == "__main__":
    main()
