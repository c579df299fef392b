"""Labelled documents for a model folder's classification heads (``--loss cross-entropy
--target LABEL``): text with a class id per document (sequence classification), or token ids
with a list of class ids per token (token classification, -100 not scored); each document
whole, one item.

A chunk's documents are sorted by length and packed under the token budget; inputs are
``input_ids`` padded with the model's pad token and an ``attention_mask`` (a classifier reads
its last or first real token: padding must be marked), targets the class ids ``(n, 1)`` or
the token labels ``(n, L)`` padded with -100. A document longer than the context cannot be
windowed for one label: it is an error naming its row, never a silent truncation.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from evalloss.errors import DataError
from evalloss.sources.base import Block

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from evalloss.sources.documents import Documents


IGNORE = -100  # a token label that is not scored


def pack(source: Documents, ids: list[npt.NDArray[np.int64]], labels: Any,
         first: int) -> Iterator[Block]:  # fmt: skip
    """One chunk's documents (the first is row ``first``) and their labels -> blocks: an
    Arrow column of class ids, or one array of token labels per document."""
    import numpy as np
    import torch

    tokens = isinstance(labels, list)
    classes = None if tokens else _classes(labels, source, first)
    lengths = np.array([max(len(i), 1) for i in ids])
    if source.context is not None and len(lengths) and lengths.max() > source.context:
        row = int(np.flatnonzero(lengths > source.context)[0])
        raise source.where(first + row, f"{lengths[row]} tokens, longer than the context of "
                           f"{source.context} (a label scores a whole document)",
                           getattr(source, "text_column", source.column))  # fmt: skip
    order = np.arange(len(ids)) if source.ordered else np.argsort(lengths, kind="stable")
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end - start + 1) * lengths[order[end]] <= source.budget:
            end += 1
        rows = order[start:end]
        width = int(lengths[rows].max())
        x = np.full((len(rows), width), source.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for r, i in enumerate(rows):
            x[r, : len(ids[i])], mask[r, : len(ids[i])] = ids[i], 1
        if classes is None:
            targets = np.full((len(rows), width), IGNORE, dtype=np.int64)
            for r, i in enumerate(rows):
                targets[r, : len(labels[i])] = labels[i]
        else:
            targets = classes[rows, None]
        located = np.stack([first + rows, np.zeros_like(rows)], axis=1)
        inputs = {"input_ids": torch.from_numpy(x), "attention_mask": torch.from_numpy(mask)}
        yield Block(int(first + rows[0]), inputs, torch.from_numpy(targets), locator=located)
        start = end


def _classes(labels: Any, source: Documents, first: int) -> npt.NDArray[np.int64]:
    """The label column as class ids (integers); a null or another type named by row."""
    import numpy as np
    import pyarrow as pa

    column = labels.combine_chunks() if isinstance(labels, pa.ChunkedArray) else labels
    if not pa.types.is_integer(column.type):
        raise DataError(f"labels must be class ids (integers), not {column.type}",
                        path=source.path, key=source.labels)  # fmt: skip
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise source.where(first + row, "no label (null)", source.labels or "")
    return np.asarray(column.to_numpy(zero_copy_only=False), dtype=np.int64)
