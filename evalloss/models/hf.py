"""Hugging Face model folders -> transformers' own class for the config's ``model_type``, with
the head the loss needs (``causal-lm``: a causal LM; ``seq2seq-lm``: an encoder-decoder's
conditional generation head, fed teacher-forced by `seq2seq`; ``cross-entropy`` on a label
column: sequence classification, its output's logits handed to the loss). `folder` has
already checked the folder against the trust boundary.

The class comes from transformers' auto mappings keyed by the config class, never from the
folder's ``architectures`` or ``auto_map``; weights are loaded from the safetensors files only
(``use_safetensors``, ``local_files_only``: nothing is downloaded, by construction), straight
into the run's dtype and, on CUDA, onto the device. Loading is strict, as for files: a missing,
unexpected or mis-shaped tensor is an error, never a randomly initialised layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalloss.errors import CheckpointError, shown
from evalloss.models.checkpoint import Checkpoint
from evalloss.models.folder import known_types, stamp_of, token_classifier
from evalloss.models.seq2seq import teacher_forced

if TYPE_CHECKING:
    from torch import nn

    from evalloss.models import Wanted

MAPPINGS = {"causal-lm": "MODEL_FOR_CAUSAL_LM_MAPPING",
            "seq2seq-lm": "MODEL_FOR_SEQ_TO_SEQ_CAUSAL_LM_MAPPING",
            "cross-entropy": "MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING",
            "token": "MODEL_FOR_TOKEN_CLASSIFICATION_MAPPING"}  # fmt: skip
TEXT_CONFIGS = ("text_encoder", "decoder", "generator", "text_config")  # get_text_config's
HEADS = {"causal-lm": "causal LM", "seq2seq-lm": "sequence-to-sequence LM",
         "cross-entropy": "sequence classification",
         "token": "token classification"}  # fmt: skip


def accepts(checkpoint: Checkpoint) -> bool:
    """Model folders (`folder.open_folder` read their config)."""
    return checkpoint.config is not None


def build(
    checkpoint: Checkpoint, spec: str | None, kwargs: dict[str, Any], wanted: Wanted
) -> nn.Module:
    """transformers' class for the folder's model type and the loss's head, weights loaded."""
    model, head = load(checkpoint, wanted)
    return with_head(model, wanted.loss, head, checkpoint.path)


def with_head(model: nn.Module, loss: str, head: str, path: str) -> nn.Module:
    """The model as the loss scores it: a causal LM as it is, an encoder-decoder fed as its
    ``labels=`` loss feeds it, a classifier's logits."""
    if loss == "seq2seq-lm":
        return teacher_forced(model, path)
    return model if loss == "causal-lm" else _Logits(model, channels_first=head == "token")


def load(checkpoint: Checkpoint, wanted: Wanted) -> tuple[nn.Module, str]:
    """transformers' model for the folder's model type and the loss's head, weights loaded,
    and that head's name (`with_head`)."""
    assert checkpoint.config is not None
    known_types(checkpoint.path)  # the one-line error naming the extra, if transformers is missing
    from transformers import PretrainedConfig
    from transformers.models.auto import modeling_auto
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    kind = checkpoint.config["model_type"]
    config_class = CONFIG_MAPPING[kind]
    if wanted.loss not in ("causal-lm", "seq2seq-lm", "cross-entropy"):
        raise CheckpointError(f"a model folder is scored with causal-lm, seq2seq-lm or "
                              f"cross-entropy, not {shown(wanted.loss)}",
                              path=checkpoint.path)  # fmt: skip
    head = wanted.loss
    if wanted.loss == "cross-entropy" and token_classifier(checkpoint):
        head = "token"
    mapping = getattr(modeling_auto, MAPPINGS[head])
    if config_class not in mapping:
        raise CheckpointError(f"transformers has no {HEADS[head]} model for model type "
                              f"{shown(kind)}", path=checkpoint.path)  # fmt: skip
    try:
        config = config_class.from_dict(dict(checkpoint.config))
        text: Any = config.get_text_config()  # what generation and the head read
    except Exception as exc:  # a config value its class refuses
        raise CheckpointError(f"config.json: {type(exc).__name__}: {exc}",
                              path=checkpoint.path) from exc  # fmt: skip
    if not isinstance(text, PretrainedConfig):
        name = next(n for n in TEXT_CONFIGS if getattr(config, n, None) is text)
        raise CheckpointError(f"is not a sub-config model type {shown(kind)} has (a plain "
                              f"{type(text).__name__} where transformers reads a config)",
                              path=Path(checkpoint.path) / "config.json",
                              key=name)  # fmt: skip
    model = _load(mapping[config_class], config, checkpoint, wanted)
    _padding_never_scored(model)
    if stamp_of(checkpoint.files) != checkpoint.opened:
        raise CheckpointError("changed while it was being read (a file's size or modification "
                              "time); run again once it is written",
                              path=checkpoint.path)  # fmt: skip
    return model, head


def trainer_counts_first_tokens(checkpoint: Checkpoint) -> bool:
    """Whether the installed transformers' ``Trainer`` divides a batch's summed loss for this
    folder's causal LM by its *unshifted* label count (every document's first token counted,
    though never scored) rather than by its scored tokens: Trainer's own rules, read off the
    model class built on the meta device (no weights): it passes ``num_items_in_batch`` where
    the model takes loss keywords (``accepts_loss_kwargs``, else a ``**kwargs`` forward), and
    counts ``labels[..., 1:]`` only where the model's ``loss_type`` maps to ``ForCausalLMLoss``
    (transformers 5.25: a ``GPT2LMHeadModel``'s ``loss_type`` is None, a ``LlamaForCausalLM``'s
    ``ForCausalLM``)."""
    import inspect

    import torch
    from transformers.loss.loss_utils import LOSS_MAPPING, ForCausalLMLoss
    from transformers.models.auto import modeling_auto
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    assert checkpoint.config is not None
    config_class = CONFIG_MAPPING[checkpoint.config["model_type"]]
    if config_class not in modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING:
        return False  # an encoder-decoder: its labels are not shifted, all of them scored
    model_class: Any = modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING[config_class]
    try:
        config = config_class.from_dict(dict(checkpoint.config))
        with _quiet(), torch.device("meta"):
            model = model_class(config)
    except Exception as exc:  # as building it for the pass would fail
        raise CheckpointError(f"transformers cannot build it ({type(exc).__name__}: {exc})",
                              path=checkpoint.path) from exc  # fmt: skip
    if hasattr(model, "accepts_loss_kwargs"):  # Trainer.__init__'s rule
        accepts = bool(model.accepts_loss_kwargs)
    else:
        accepts = any(p.kind == inspect.Parameter.VAR_KEYWORD
                      for p in inspect.signature(model.forward).parameters.values())  # fmt: skip
    loss_type: Any = getattr(model, "loss_type", None)
    shifts = LOSS_MAPPING.get(loss_type) is ForCausalLMLoss and not getattr(
        config, "is_encoder_decoder", False)
    return accepts and not shifts


def _load(model_class: Any, config: Any, checkpoint: Checkpoint, wanted: Wanted) -> nn.Module:
    """``from_pretrained`` on the local folder, safetensors only, strictly."""
    device = {"": wanted.device} if wanted.device.type == "cuda" else None
    with _quiet():
        try:
            model, info = model_class.from_pretrained(
                checkpoint.path, config=config, local_files_only=True, use_safetensors=True,
                trust_remote_code=False, dtype=wanted.dtype, device_map=device,
                output_loading_info=True,
            )  # fmt: skip
        except Exception as exc:  # the folder's values, wherever transformers trips on them
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"transformers cannot load it ({first[:300]})",
                                  path=checkpoint.path) from exc  # fmt: skip
    problems = [
        f"{label}: {', '.join(map(str, sorted(keys)[:8]))}"
        + (f" and {len(keys) - 8} more" if len(keys) > 8 else "")
        for label, keys in (
            ("missing keys", info.get("missing_keys") or ()),
            ("unexpected keys", info.get("unexpected_keys") or ()),
            ("shape mismatch", info.get("mismatched_keys") or ()),
        )
        if keys
    ]
    if problems:
        raise CheckpointError(f"does not fit {model_class.__name__}; " + "; ".join(problems),
                              path=checkpoint.path)  # fmt: skip
    result: nn.Module = model
    return result


def _padding_never_scored(model: nn.Module) -> None:
    """transformers' "We strongly recommend passing in an attention_mask" warning off, for this
    model only: evalloss pads a row only after its one document or window (the causal mask keeps
    padding out of every scored position) and never scores it; a classifier's text gets its
    mask."""

    def unchecked(*_: object) -> None:
        return None

    for module in model.modules():
        if hasattr(module, "warn_if_padding_and_no_attention_mask"):
            object.__setattr__(module, "warn_if_padding_and_no_attention_mask", unchecked)


def _Logits(model: nn.Module, channels_first: bool) -> nn.Module:  # noqa: N802 - a module
    """The model, returning its output's ``logits`` (what a classification loss scores); a
    token classifier's (N, L, C) as (N, C, L), the class axis where cross-entropy reads it."""
    from torch import nn

    class Logits(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, **inputs: Any) -> Any:
            logits = self.inner(**inputs).logits
            return logits.transpose(1, 2) if channels_first else logits

    return Logits(model)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """transformers' own warnings and progress bars off while it loads: evalloss reports what
    matters in its own lines."""
    from transformers.utils import logging

    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        logging.enable_progress_bar()  # type: ignore[no-untyped-call]
