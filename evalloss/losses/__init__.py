"""The losses: the table (`rows.py`, one `Row` per loss) and `get`, the `Loss` built from a
row (`loss.py`: per-item loss, accuracy, and what targets it takes). Every loss gives each
item's (sum, weight); ``causal-lm`` (`CausalLM`, in `causal.py`) makes the token the unit,
as ``seq2seq-lm`` (`Seq2SeqLM`, in `seq2seq.py`: an encoder-decoder's target tokens) does.
"""

from __future__ import annotations

from evalloss.errors import LossError
from evalloss.losses.accuracy import Accuracy
from evalloss.losses.causal import CausalLM
from evalloss.losses.loss import Loss, Row, Target
from evalloss.losses.rows import ROWS

__all__ = ["NAMES", "ROWS", "Accuracy", "CausalLM", "Loss", "Row", "Target", "get", "row"]

NAMES = tuple(ROWS)  # the table's names at import: the CLI's --loss choices


def row(name: str, key: str = "--loss") -> Row:
    """The table's row ``name``, or a `LossError` naming the choices (said of ``key``)."""
    found = ROWS.get(name)
    if found is None:
        raise LossError(f"unknown loss {name!r}; choose one of {', '.join(ROWS)}", key=key)
    return found


def get(name: str, ignore_index: int | None = None) -> Loss:
    """The loss ``name``, built from its row; ``ignore_index``: a class target never scored
    (255), else the row's own."""
    found = row(name)
    given = _ignore_index(found, ignore_index)
    return found.kind(row=found, ignore_index=found.ignore_index if given is None else given)


def _ignore_index(found: Row, value: int | None) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise LossError(f"must be an integer, got {value!r}", key="--ignore-index")
    if value is not None and found.target is not Target.CLASSES:
        takes = " and ".join(r.name for r in ROWS.values() if r.target is Target.CLASSES)
        raise LossError(f"applies to {takes}, not {found.name}", key="--ignore-index")
    return value
