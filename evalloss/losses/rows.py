"""The loss table: one `Row` per loss (`loss.py`: its name, criterion, target kind, default
ignore index and accuracy rule). A new loss is one row here; the CLI's ``--loss`` choices, a
checkpoint's ``evalloss.loss``, the report's ``loss``, docs/report-schema.json's enum and the
docs' lists all read it (tests/test_schema.py, tests/test_docs.py)."""

from __future__ import annotations

from evalloss.losses.accuracy import Accuracy
from evalloss.losses.causal import IGNORE, CausalLM
from evalloss.losses.loss import Row, Target, cross_entropy
from evalloss.losses.seq2seq import Seq2SeqLM

ROWS: dict[str, Row] = {r.name: r for r in (
    Row("cross-entropy", cross_entropy, Target.CLASSES, Accuracy.ARGMAX),
    Row("nll", "nll_loss", Target.CLASSES, Accuracy.ARGMAX),
    Row("bce-logits", "binary_cross_entropy_with_logits", Target.BINARY, Accuracy.LOGIT),
    Row("bce", "binary_cross_entropy", Target.BINARY, Accuracy.PROBABILITY),
    Row("mse", "mse_loss", Target.VALUES),
    Row("l1", "l1_loss", Target.VALUES),
    Row("smooth-l1", "smooth_l1_loss", Target.VALUES),
    Row("huber", "huber_loss", Target.VALUES),
    Row("causal-lm", "cross_entropy", Target.TOKENS, ignore_index=IGNORE, kind=CausalLM),
    Row("seq2seq-lm", "cross_entropy", Target.TOKENS, ignore_index=IGNORE, kind=Seq2SeqLM),
)}  # fmt: skip
