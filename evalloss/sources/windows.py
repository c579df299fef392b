"""Sequences -> model inputs and aligned labels, window by window (the contract's rule).

A sequence of n tokens has n - 1 targets: token j (1 <= j < n) is predicted from the tokens
before it. With a context L and a stride S (S <= L), window w scores the targets j in
[1 + wS, 1 + (w+1)S) and is given the L tokens (fewer at the start) that end just before its
last target; only its own targets are scored. So every token but the first is scored exactly
once, and with S < L every scored token past the first window sees at least L - S + 1 tokens
of context. Without a context a sequence is one window: all of it.

A window's row: input ids ``tokens[start:end]`` and labels aligned with them: ``labels[i]`` is
the token input position i predicts (``start + i + 1``), or -100 where that token is not the
window's to score (its context, padding, or a label the data masks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch

IGNORE = -100


@dataclass(frozen=True)
class Window:
    """Input ``tokens[start:end]``; targets from token ``first`` on are scored."""

    start: int
    end: int
    first: int


def count(n: int, stride: int | None) -> int:
    """How many windows a sequence of n tokens takes (at least one, even without targets)."""
    if stride is None or n <= 1:
        return 1
    return -(-(n - 1) // stride)


def window(n: int, w: int, context: int | None, stride: int | None) -> Window:
    """Window ``w`` of a sequence of ``n`` tokens."""
    if context is None or stride is None or n <= 1:
        return Window(0, max(n - 1, min(n, 1)), 1)  # the whole sequence; one token: no target
    last = min(1 + (w + 1) * stride, n) - 1  # its last target
    return Window(max(0, last - context), last, 1 + w * stride)


def row(
    tokens: npt.NDArray[np.int64], win: Window, labels: npt.NDArray[np.int64] | None = None
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """The window's input ids and aligned labels (``labels``: the data's own, token-aligned,
    -100 where masked; default: the tokens themselves)."""
    import numpy as np

    ids = np.asarray(tokens[win.start : win.end], dtype=np.int64)
    source = tokens if labels is None else labels
    aligned = np.array(source[win.start + 1 : win.end + 1], dtype=np.int64)  # a copy: masked
    aligned[: max(0, win.first - win.start - 1)] = IGNORE  # the context: another window's
    if len(ids) == 0:  # an empty sequence: one padding position, nothing scored
        ids, aligned = np.zeros(1, dtype=np.int64), np.full(1, IGNORE, dtype=np.int64)
    return ids, aligned


def padded(
    rows: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows right-padded to the longest: ids (R, L) with 0, labels (R, L) with -100."""
    import numpy as np
    import torch

    length = max(len(ids) for ids, _ in rows)
    ids = np.zeros((len(rows), length), dtype=np.int64)
    labels = np.full((len(rows), length), IGNORE, dtype=np.int64)
    for r, (i, lab) in enumerate(rows):
        ids[r, : len(i)] = i
        labels[r, : len(lab)] = lab
    return torch.from_numpy(ids), torch.from_numpy(labels)
