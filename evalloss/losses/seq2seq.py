"""``seq2seq-lm``: the exact loss per target token of an encoder-decoder model (T5, BART, ...),
teacher-forced.

The data gives each pair its encoder input and its target's labels (N, Lt), -100 past the
target's end; the model (``models.seq2seq``) is given the decoder inputs its own
``prepare_decoder_input_ids_from_labels`` makes of those labels (the labels shifted right after
the decoder's start token, as its ``labels=`` loss does) and returns logits (N, Lt, V) aligned
with them: ``labels[n, p]`` is the token position p predicts. So the rule is `CausalLM`'s over
aligned labels: each pair's float64 sum of its target tokens' negative log-likelihoods and
their count; the token is the unit (``loss_per_token = loss_sum / tokens``, target tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

from evalloss.losses.causal import CausalLM


@dataclass(frozen=True)
class Seq2SeqLM(CausalLM):
    """Target-token cross-entropy of an encoder-decoder, summed per pair (its row's target
    kind: tokens; its ignore index: -100, always)."""
