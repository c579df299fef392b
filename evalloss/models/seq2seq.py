"""Encoder-decoder folders (T5, BART, ...) scored teacher-forced: the model as ``seq2seq-lm``
calls it.

A pair's block gives the encoder's ``input_ids`` and ``attention_mask`` and the target's
``labels`` (-100 past its end). The decoder is given what the model's own
``prepare_decoder_input_ids_from_labels`` makes of the labels (shifted right after its
``decoder_start_token_id``, -100 as its pad token: what its ``labels=`` loss feeds the decoder);
the decoder is causal, so a position past a target's end changes none before it and needs no
mask. The forward returns the logits (N, Lt, V), aligned with the labels. An input token
past the embedding is refused with the batch's rows; a target token, by the loss, with its
row and position.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from evalloss.errors import CheckpointError, shown
from evalloss.models.folder import encoder_decoder

if TYPE_CHECKING:
    from torch import nn

    from evalloss.models.checkpoint import Checkpoint

SHIFT = "prepare_decoder_input_ids_from_labels"


def refuse_causal(checkpoint: Checkpoint, loss: str) -> None:
    """An encoder-decoder folder under ``causal-lm`` (or a loss given by hand): named before
    any data is read (its data are pairs, not documents)."""
    if loss == "causal-lm" and encoder_decoder(checkpoint.config):
        kind = (checkpoint.config or {}).get("model_type")
        raise CheckpointError(f"is an encoder-decoder model ({shown(kind)}): it scores input and "
                              "target pairs with --loss seq2seq-lm (docs/language-models.md)",
                              path=checkpoint.path)  # fmt: skip


def teacher_forced(model: nn.Module, path: str) -> nn.Module:
    """``model`` (a transformers ``*ForConditionalGeneration``) taking a pair's block and
    returning its target's logits; its input ids checked against its vocabulary first."""
    import torch
    from torch import nn

    if not callable(getattr(model, SHIFT, None)):
        raise CheckpointError(f"transformers' {type(model).__name__} has no {SHIFT}: evalloss "
                              "cannot feed its decoder as its labels= loss does",
                              path=path)  # fmt: skip
    embeddings: Any = getattr(model, "get_input_embeddings")()  # noqa: B009 - a Module's method
    vocabulary = int(embeddings.num_embeddings)

    class TeacherForced(nn.Module):
        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    labels: torch.Tensor) -> Any:  # fmt: skip
            bad = (input_ids < 0) | (input_ids >= vocabulary)
            if bool(bad.any()):
                token = int(input_ids[bad][0])
                raise ValueError(f"input token id {token} is outside the model's vocabulary "
                                 f"[0, {vocabulary})")  # fmt: skip
            decoder = getattr(self.inner, SHIFT)(labels=labels)
            # a target token past the vocabulary is refused by the loss, by its row and
            # position (`CausalLM.invalid_target`): the decoder's lookup must not fail first
            decoder = decoder.masked_fill((decoder < 0) | (decoder >= vocabulary), 0)
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              decoder_input_ids=decoder, use_cache=False).logits  # fmt: skip

    return TeacherForced(model)
