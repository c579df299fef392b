"""What the exact loss while training costs (not a test): a training step with and without
`evalloss.RunningLoss`, and an evaluation with and without the framework callbacks.

    python benchmarks/bench_training.py --steps 300 --rounds 15
    python benchmarks/bench_training.py --device cuda

The step cases alternate single steps without and with the update (A B B A ...: the machine's
load drifts alike for both) and compare the median step times, the final read (the one sync)
spread over the measured steps; the evaluation cases alternate whole runs and print the median
of the per-round ratios:
- ``mlp``: the 64-256-256-10 MLP, batch 256, SGD: forward, cross-entropy (``reduction='none'``),
  backward, step; with ``meter.update(losses)``, and the epoch's figure read at the end of the
  block (the one sync). ``item()`` is the usual ``epoch_loss += loss.mean().item()`` instead
  (a sync per step).
- ``gpt2``: a 2-layer GPT-2 (n_embd 64, vocab 1000), batch 8 x 64 tokens, AdamW; with
  ``meter.update(loss, tokens)``.
- ``trainer``: ``Trainer.evaluate()`` on 96 documents with and without `ExactEvalCallback`.
- ``lightning``: ``lightning.Trainer.validate`` with and without `ExactValidation`.
- ``lightning-lm``: the same on a GPT-2 whose forward is most of the work (not in the default
  cases: ``--cases lightning-lm``).
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
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import CLASSES, FEATURES, mlp

import evalloss

Block = Callable[[bool], None]


class Steps:
    """A training step, with (``measured``) or without the meter's update; ``finish`` reads the
    figure (the one sync, at the end of an epoch)."""

    def __init__(self, device: str, run: Callable[[int], torch.Tensor], tokens: int | None,
                 mode: str = "meter") -> None:  # fmt: skip
        self.device, self.run, self.tokens, self.mode = device, run, tokens, mode
        self.meter = evalloss.RunningLoss()
        self.epoch_loss = 0.0
        self.updates: list[float] = []  # seconds of each update call alone

    def step(self, i: int, measured: bool) -> None:
        losses = self.run(i)
        start = time.perf_counter()
        self._update(losses, measured)
        if measured:
            self.updates.append(time.perf_counter() - start)
        _sync(self.device)

    def _update(self, losses: torch.Tensor, measured: bool) -> None:
        if measured and self.mode == "item":
            self.epoch_loss += losses.mean().item()
        elif measured and self.tokens is None:
            self.meter.update(losses)
        elif measured:
            self.meter.update(losses, self.tokens)

    def finish(self) -> None:
        _ = self.meter.loss_per_item
        self.meter.reset()


def _mlp_case(device: str, steps: int, mode: str) -> Steps:
    torch.manual_seed(0)
    model = mlp().to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(steps, 256, FEATURES, device=device)
    y = torch.randint(0, CLASSES, (steps, 256), device=device)

    def run(i: int) -> torch.Tensor:
        losses = nn.functional.cross_entropy(model(x[i % steps]), y[i % steps], reduction="none")
        losses.mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return losses

    return Steps(device, run, None, mode)


def _gpt2_case(device: str, steps: int) -> Steps:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=1000, n_positions=64, n_embd=64, n_layer=2, n_head=2,
                        bos_token_id=0, eos_token_id=0)  # fmt: skip
    model = GPT2LMHeadModel(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, 1000, (steps, 8, 64), device=device)

    def run(i: int) -> torch.Tensor:
        out = model(input_ids=ids[i % steps], labels=ids[i % steps])
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return out.loss  # type: ignore[no-any-return]

    return Steps(device, run, 8 * 63)


def measure_steps(case: Steps, steps: int) -> tuple[float, float, float]:
    """Steps alternating without / with the update (load drifts alike for both); the
    figure read once at the end, its time spread over the measured steps. (median seconds
    per step without, with, ratio)."""
    for i in range(10):
        case.step(i, i % 2 == 1)  # warm up
    case.finish()
    times: dict[bool, list[float]] = {False: [], True: []}
    for i in range(2 * steps):
        measured = (i % 4) in (1, 2)  # A B B A
        start = time.perf_counter()
        case.step(i, measured)
        times[measured].append(time.perf_counter() - start)
    start = time.perf_counter()
    case.finish()
    read = (time.perf_counter() - start) / steps
    base, with_ = statistics.median(times[False]), statistics.median(times[True]) + read
    return base, with_, with_ / base


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
    return _validating(module, loader, device, "cross-entropy")


def _lightning_lm_case(device: str) -> Block:
    """``lightning`` on a causal LM whose forward, not its head, is most of the work (GPT-2, 4
    layers of width 256, a 8,000-token vocabulary, 64 documents of 128 tokens, batch 8), with
    ``ExactValidation(loss="causal-lm")``."""
    import lightning.pytorch as pl
    from transformers import GPT2Config, GPT2LMHeadModel

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            config = GPT2Config(vocab_size=8000, n_positions=128, n_embd=256, n_layer=4,
                                n_head=4, bos_token_id=0, eos_token_id=0)  # fmt: skip
            self.net = GPT2LMHeadModel(config)

        def validation_step(self, batch: dict[str, torch.Tensor], i: int) -> object:
            out = self.net(input_ids=batch["input_ids"], labels=batch["input_ids"])
            self.log("val_loss", out.loss)
            return {"logits": out.logits, "labels": batch["labels"]}

    torch.manual_seed(0)
    ids = torch.randint(0, 8000, (64, 128))
    shifted = nn.functional.pad(ids[:, 1:], (0, 1), value=-100)  # position p predicts p + 1
    rows = [{"input_ids": row, "labels": labels} for row, labels in zip(ids, shifted, strict=True)]
    loader = torch.utils.data.DataLoader(rows, batch_size=8)  # type: ignore[arg-type,var-annotated]
    module = Module()
    return _validating(module, loader, device, "causal-lm")


def _validating(module: Any, loader: Any, device: str, loss: str) -> Block:
    """``lightning.Trainer.validate`` of ``module``, with ``ExactValidation(loss=loss)`` when
    measured."""
    import lightning.pytorch as pl

    from evalloss.integrations.lightning import ExactValidation

    accelerator = "gpu" if device == "cuda" else "cpu"

    def block(measured: bool) -> None:
        callbacks = [ExactValidation(loss=loss)] if measured else []
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
    cases: dict[str, Callable[[], Block | Steps]] = {
        "mlp": lambda: _mlp_case(opts.device, opts.steps, "meter"),
        "item": lambda: _mlp_case(opts.device, opts.steps, "item"),
        "gpt2": lambda: _gpt2_case(opts.device, opts.steps),
        "trainer": lambda: _trainer_case(opts.device),
        "lightning": lambda: _lightning_case(opts.device),
        "lightning-lm": lambda: _lightning_lm_case(opts.device),
    }
    for name in opts.cases.split(","):
        case = cases[name]()
        if isinstance(case, Steps):
            base, with_, ratio = measure_steps(case, opts.steps)
            alone = statistics.median(case.updates)
            print(f"{name:10} the update call alone: {alone * 1e6:.1f} us median, "
                  f"{alone / base:.2%} of a step")  # fmt: skip
        else:
            base, with_, ratio = measure(case, opts.rounds)
        unit = "per step" if isinstance(case, Steps) else "per run"
        print(f"{name:10} {unit:8} without {base * 1e3:8.3f} ms  with {with_ * 1e3:8.3f} ms  "
              f"ratio {ratio:.4f}", flush=True)


if __name__ == "__main__":
    main()
