"""The exact evaluation loss inside transformers' ``Trainer``: `ExactEvalCallback`.

How it observes Trainer's own pass (no second pass): a forward hook on ``trainer.model`` sees
every evaluation forward (the model in eval mode, under ``no_grad``, called with ``labels=``)
and turns its logits and labels into each item's float64 (sum, weight) on the device, no sync
(`run.running.item_terms`: per token for a causal or masked LM and a token classifier, per
item for a sequence classifier). A token task's batch costs less: its own loss is the
batch's summed token losses over a divisor the hook sees (``num_items_in_batch`` where Trainer
passes it, else the batch's scored tokens), so loss x divisor is the batch's sum (a float32
loss: 1 part in 10^7) with no second log-softmax. That holds for the model's own token
cross-entropy (``ForCausalLMLoss`` and the like), not for a loss with an
auxiliary term (a mixture of experts' router loss) or a custom one: the first evaluation batch
the callback sees is scored both ways, and only a model whose loss agrees (to 1e-4) is trusted
from then on. The last batch is always scored per item (its padding duplicates are cut below).
``on_prediction_step`` files that step's items; accelerate's eval loader says which step is
the last (``end_of_dataloader``) and how many of the last global batch are real
(``remainder``): the padding duplicates of several processes are the tail of that batch in
rank order, exactly what ``gather_for_metrics`` cuts off for Trainer's own ``eval_loss``.

How the figures reach what is logged: ``evaluate()`` builds its metrics, then
``Trainer.log(metrics)`` appends them to ``state.log_history`` and calls every callback's
``on_log`` with that very dict (the one ``evaluate()`` returns), and only then any
``on_evaluate``. So `ExactEvalCallback.on_log` gathers every process's sums (one
``all_gather_object``), and adds the figures to that dict and to the log-history entry: the
returned metrics, the printed log, early stopping and ``metric_for_best_model`` (on every rank)
see them. The reporting callbacks (W&B, TensorBoard, MLflow) come before any callback given
in ``callbacks=[...]``; `ExactEvalCallback.attach(trainer)` puts it first, ahead of them, so
they log the exact figures too.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from transformers import TrainerCallback

from evalloss.errors import EvallossWarning, OptionError, shown
from evalloss.integrations import _shards
from evalloss.losses import get as get_loss
from evalloss.losses.causal import IGNORE
from evalloss.run.running import DeviceSums, item_terms

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers import Trainer, TrainerControl, TrainerState, TrainingArguments

TASKS = ("causal-lm", "masked-lm", "token-classification", "classification")
_PER_TOKEN = ("causal-lm", "masked-lm", "token-classification")  # the token is the unit
_CLASSIFIER_LOSSES = {"regression": "mse", "single_label_classification": "cross-entropy",
                      "multi_label_classification": "bce-logits"}  # fmt: skip


def _base(model: Any) -> Any:
    """The model under a PEFT wrapper (or the model)."""
    getter = getattr(model, "get_base_model", None)
    return getter() if callable(getter) else model


def task_of(model: Any) -> str:
    """One of `TASKS`, from transformers' own model tables (or the model's ``loss_type``)."""
    from transformers.models.auto import modeling_auto as auto

    base = _base(model)
    name = type(base).__name__
    loss_type = getattr(base, "loss_type", None) or ""
    tables = (("causal-lm", auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, "ForCausalLM"),
              ("masked-lm", auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES, "ForMaskedLM"),
              ("token-classification", auto.MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING_NAMES,
               "ForTokenClassification"),
              ("classification", auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES,
               "ForSequenceClassification"))  # fmt: skip
    for task, table, loss in tables:
        if name in table.values() or loss_type == loss:
            return task
    raise OptionError(
        f"{name} is not a causal or masked language model, a token or a sequence classifier; "
        f"pass task= one of {', '.join(TASKS)}",
        key="ExactEvalCallback",
    )


def _logits(output: Any) -> torch.Tensor | None:
    import torch

    found = getattr(output, "logits", None)
    if found is None and isinstance(output, tuple | list) and len(output) > 1:
        found = output[1]  # (loss, logits, ...) with return_dict=False
    return found if isinstance(found, torch.Tensor) else None


class ExactEvalCallback(TrainerCallback):
    """Give it to ``Trainer(callbacks=[ExactEvalCallback()])`` (or `attach` it): every
    evaluation returns and logs ``eval_loss_per_token``, ``eval_tokens`` and
    ``eval_perplexity`` for a causal or masked LM (a token classifier: no perplexity;
    ``eval_loss_per_item`` and ``eval_items`` for a sequence classifier), exact whatever
    ``per_device_eval_batch_size`` and the number of processes.

    ``task``: one of `TASKS` (``"causal-lm"``, ``"masked-lm"``, ``"token-classification"``,
    ``"classification"``); by default read off the model's class.
    """

    def __init__(self, task: str | None = None) -> None:
        if task is not None and task not in TASKS:
            raise OptionError(f"task must be one of {', '.join(TASKS)}, got {shown(task)}",
                              key="ExactEvalCallback")  # fmt: skip
        self.task = task
        self._model: nn.Module | None = None
        self._handle: Any = None
        self._trusted: bool | None = None  # a token task's own loss, once checked
        self._first = self._warned = False
        self._reset()

    def _reset(self) -> None:
        self._sums = DeviceSums()
        self._calls: list[_Forward] = []  # this step's evaluation forwards
        self._last: tuple[torch.Tensor, torch.Tensor] | None = None
        self._remainder = -1
        self._held: int | None = None  # the eval data set's items, where it has a length
        self._steps = 0
        self._broken: str | None = None

    def attach(self, trainer: Trainer) -> ExactEvalCallback:
        """Put this callback first among ``trainer``'s, ahead of the reporting callbacks, so
        that W&B, TensorBoard, MLflow... log the exact figures too. Returns the callback."""
        callbacks = trainer.callback_handler.callbacks
        if self in callbacks:
            callbacks.remove(self)
        callbacks.insert(0, self)
        self._first = True
        self._hook(trainer.model)
        return self

    # -- observing Trainer's pass --

    def _hook(self, model: nn.Module | None) -> None:
        if model is None or model is self._model:
            return
        if self.task is None:
            self.task = task_of(model)
        if self._handle is not None:
            self._handle.remove()
        self._handle = model.register_forward_hook(self._observe, with_kwargs=True)
        self._model, self._trusted = model, None

    def _observe(self, module: nn.Module, args: Any, kwargs: dict[str, Any], output: Any) -> None:
        """An evaluation forward (eval mode, no grad, labels given): what its terms need."""
        import torch
        import torch.nn.functional as F

        labels = kwargs.get("labels")
        if module.training or torch.is_grad_enabled() or labels is None:
            return
        logits = _logits(output)
        if logits is None:
            self._broken = "the model returned no logits"
            return
        if self.task not in _PER_TOKEN:
            self._calls.append(_Forward(self._item_terms(module, logits, labels)))
            return
        shifted = kwargs.get("shift_labels") if self.task == "causal-lm" else labels
        if shifted is None:  # as the model's own loss: position p predicts label p + 1
            shifted = F.pad(labels[:, 1:], (0, 1), value=IGNORE)
        shifted = shifted.to(logits.device)
        own = getattr(output, "loss", None)
        if not isinstance(own, torch.Tensor) or own.numel() != 1 or \
                getattr(output, "aux_loss", None) is not None:  # fmt: skip
            self._trusted, own = False, None
        self._calls.append(_Forward(None, logits, shifted, own, kwargs.get("num_items_in_batch")))

    def _token_terms(self, forward: _Forward, last: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """A token task's forward as (values, weights): its own loss x divisor as the batch's
        one value where the model is trusted and the batch is not the last, else per document
        (the causal LM's labels already shifted: the same token loss for every task)."""
        import torch

        assert forward.logits is not None and forward.shifted is not None
        scored = (forward.shifted != IGNORE).sum().reshape(1)
        divisor = scored if forward.divisor is None else forward.divisor
        own = None if forward.own is None else torch.where(  # no scored token: NaN, not 0
            scored > 0, forward.own.double() * torch.as_tensor(divisor, device=scored.device), 0.0)
        if own is not None and self._trusted and not last:
            return own.reshape(1), scored
        terms = item_terms(get_loss("causal-lm"), forward.logits, forward.shifted)
        if own is not None and self._trusted is None:  # the check: one sync, once
            mine, theirs = float(terms[0].sum()), float(own)
            self._trusted = math.isclose(mine, theirs, rel_tol=1e-4, abs_tol=1e-6)
        return terms

    def _item_terms(self, module: nn.Module, logits: torch.Tensor,
                    labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        config = getattr(_base(module), "config", None)
        problem = getattr(config, "problem_type", None) or "single_label_classification"
        single = problem.startswith("single")
        loss = get_loss(_CLASSIFIER_LOSSES[problem], IGNORE if single else None)
        labels = labels.to(logits.device)
        if single:
            logits, labels = logits.reshape(len(labels), -1), labels.reshape(-1)
        return item_terms(loss, logits, labels)

    def on_init_end(self, args: TrainingArguments, state: TrainerState,
                    control: TrainerControl, **kwargs: Any) -> None:  # fmt: skip
        if getattr(args, "label_smoothing_factor", 0):
            raise OptionError(
                "label smoothing takes the labels out of the model's inputs, so the "
                "evaluation forward cannot be observed; set label_smoothing_factor=0",
                key="ExactEvalCallback",
            )
        self._hook(kwargs.get("model"))

    def on_train_begin(self, args: TrainingArguments, state: TrainerState,
                       control: TrainerControl, **kwargs: Any) -> None:  # fmt: skip
        self._hook(kwargs.get("model"))

    def on_prediction_step(self, args: TrainingArguments, state: TrainerState,
                           control: TrainerControl, **kwargs: Any) -> None:  # fmt: skip
        """File this step's items; the last step's wait for the padding rule."""
        calls, self._calls = self._calls, []
        self._steps += 1
        if len(calls) != 1:
            self._broken = self._broken or (
                "the model was called without labels= (a compute_loss_func pops them)"
                if not calls else f"the model was called {len(calls)} times in one step")
            return
        loader = kwargs.get("eval_dataloader")
        last = bool(getattr(loader, "end_of_dataloader", False))
        forward = calls[0]
        terms = forward.terms if forward.terms is not None else self._token_terms(forward, last)
        if last:
            self._last, self._remainder = terms, int(getattr(loader, "remainder", -1))
            self._held = _length(getattr(loader, "dataset", None))
        else:
            self._sums.add(*terms)

    # -- the figures, into what is logged --

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
               logs: dict[str, Any] | None = None, **kwargs: Any) -> None:  # fmt: skip
        prefix = _prefix(logs or {})
        if prefix is None or not self._steps or logs is None:
            return
        exact = self._finish(args, prefix)
        logs.update(exact)
        entry = state.log_history[-1] if state.log_history else None
        runtime = f"{prefix}_runtime"
        if isinstance(entry, dict) and entry.get(runtime) == logs.get(runtime):
            entry.update(exact)
        if exact and not self._first and args.report_to and not self._warned:
            self._warned = True
            loggers = ", ".join(args.report_to)
            warnings.warn(
                f"ExactEvalCallback runs after the reporting callbacks ({loggers}): they do not "
                "log the exact figures; use ExactEvalCallback().attach(trainer)",
                EvallossWarning, stacklevel=2,
            )  # fmt: skip

    def on_evaluate(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    metrics: dict[str, Any] | None = None, **kwargs: Any) -> None:  # fmt: skip
        self._into(args, metrics)  # an evaluate() that did not log (a subclass's)

    def on_predict(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                   metrics: dict[str, Any] | None = None, **kwargs: Any) -> None:  # fmt: skip
        self._into(args, metrics)

    def _into(self, args: TrainingArguments, metrics: dict[str, Any] | None) -> None:
        prefix = _prefix(metrics or {})
        if metrics is not None and prefix is not None and self._steps:
            metrics.update(self._finish(args, prefix))

    def _finish(self, args: TrainingArguments, prefix: str) -> dict[str, float | int]:
        """Every process's items, merged on every process; this evaluation's figures."""
        last = self._last
        values, weights = ([], []) if last is None else (last[0].tolist(), last[1].tolist())
        mine = (_shards.dump(self._sums), values, weights, self._remainder, self._broken)
        held = self._held
        self._reset()
        gathered = _shards.gather(mine)
        broken = next((g[4] for g in gathered if g[4]), None)
        remainder = gathered[0][3]
        if broken is None and remainder < 0 and len(gathered) > 1 and not args.dataloader_drop_last:
            broken = "the eval loader has no length, so its padding duplicates are unknown"
        if broken is not None:
            warnings.warn(f"ExactEvalCallback: no exact figures: {broken}", EvallossWarning,
                          stacklevel=3)  # fmt: skip
            return {}
        if args.dataloader_drop_last and held and _shards.world()[0] == 0:
            dropped = held % (args.per_device_eval_batch_size * len(gathered))
            if dropped:  # accelerate drops the last incomplete global batch
                warnings.warn(f"ExactEvalCallback: dataloader_drop_last=True leaves out the last "
                              f"{dropped} of {held} eval items: the exact figures cover the "
                              "rest; set dataloader_drop_last=False to score them all",
                              EvallossWarning, stacklevel=3)  # fmt: skip
        tail = _shards.DeviceSums()
        kept_values = [v for g in gathered for v in g[1]]
        kept_weights = [w for g in gathered for w in g[2]]
        if remainder > 0:  # the real items of the last global batch come first, in rank order
            kept_values, kept_weights = kept_values[:remainder], kept_weights[:remainder]
        _shards.add_exactly(tail, kept_values, kept_weights)
        loss, weight = _shards.figures([*(g[0] for g in gathered), _shards.dump(tail)])
        if self.task == "token-classification":
            return {f"{prefix}_loss_per_token": loss, f"{prefix}_tokens": weight}
        if self.task in _PER_TOKEN:
            return {f"{prefix}_loss_per_token": loss, f"{prefix}_tokens": weight,
                    f"{prefix}_perplexity": _shards.perplexity(loss)}  # fmt: skip
        return {f"{prefix}_loss_per_item": loss, f"{prefix}_items": weight}


@dataclass
class _Forward:
    """What one evaluation forward left: a sequence classifier's per-item terms, or a token
    task's logits, labels (a causal LM's shifted), own loss (None: not usable) and the
    ``num_items_in_batch`` it was given (None: the loss is the mean over the scored tokens)."""

    terms: tuple[torch.Tensor, torch.Tensor] | None
    logits: torch.Tensor | None = None
    shifted: torch.Tensor | None = None
    own: torch.Tensor | None = None
    divisor: Any = None


def _length(dataset: Any) -> int | None:
    try:
        return len(dataset)
    except TypeError:  # an iterable data set
        return None


def _prefix(logs: dict[str, Any]) -> str | None:
    """An evaluation's metric prefix (``eval``, ``eval_<name>``, ``test``): its ``_runtime``."""
    for key in logs:
        if key.endswith("_runtime") and key != "train_runtime":
            return key[: -len("_runtime")]
    return None
