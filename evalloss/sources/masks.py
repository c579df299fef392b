"""Token ids with TRL's mask columns: ``completion_mask`` and ``assistant_masks``, lists of
0/1 as long as the ids (JSON Lines or Parquet; a ``labels`` column, where there is one, is the
documents' way and wins, as in TRL). A token is scored when its mask is 1: both masks where
both are there (TRL's labels: ``assistant_masks`` always, ``completion_mask`` under its default
``completion_only_loss``), or the one ``--score`` names (``completion``, ``assistant``);
``--score all`` scores every token. The first token is never scored (nothing predicts it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalloss.errors import DataError, OptionError
from evalloss.sources import documents, jsonlines
from evalloss.sources.base import Block, Gather

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch

    from evalloss.options import Options

COMPLETION_MASK, ASSISTANT_MASKS = "completion_mask", "assistant_masks"
MASKS = {"completion": COMPLETION_MASK, "assistant": ASSISTANT_MASKS}
IGNORE = -100


def masked(names: list[str], tokens_column: str) -> bool:
    """Token ids with a mask column and no labels."""
    return tokens_column in names and documents.LABELS not in names and any(
        m in names for m in MASKS.values()
    )


def open_source(path: str, names: list[str], options: Options) -> Masked:
    """The mask columns ``--score`` asks for (default: every one there), checked."""
    present = [m for m in MASKS.values() if m in names]
    score = options.score
    if score == "all":
        used: tuple[str, ...] = ()
    elif score is None:
        used = tuple(present)
    elif MASKS[score] not in names:
        raise OptionError(f"{score} needs a {MASKS[score]} column beside the token ids",
                          key="--score")  # fmt: skip
    else:
        used = (MASKS[score],)
    if options.target:
        raise OptionError("masked token ids are scored as causal-lm, without labels",
                          key="--target")  # fmt: skip
    opened = documents.open_source(path, options)  # the ids checked, as documents are
    return Masked(path, opened.column, None, options.context, options.stride,
                  options.batch_tokens, options.checksum, options.ordered,
                  slicing=opened.slicing, masks=used, score=score or "masks")  # fmt: skip


@dataclass(frozen=True)
class Masked(documents.Documents):
    """Token documents whose scored tokens are the ones their masks mark."""

    masks: tuple[str, ...] = ()
    score: str = "masks"

    def blocks(
        self, dtype: torch.dtype, *, rank: int = 0, world: int = 1, gather: Gather | None = None
    ) -> Iterator[Block]:
        """This process's documents, labelled -100 where a mask is 0, packed by length."""
        import pyarrow as pa

        jsonl = self.path.lower().endswith(documents.JSONL_SUFFIXES)
        columns = [self.column, *self.masks]
        columns += [c for c in (self.slicing.names if self.slicing else ()) if c not in columns]
        first = 0
        try:
            for number, batch in enumerate(documents.reader(self.path, columns, rank, world)):
                if not jsonl or number % world == rank:
                    tokens = documents._lists(batch.column(self.column), self, first,
                                              self.column)  # fmt: skip
                    labels = [t.copy() for t in tokens]
                    for name in self.masks:
                        for i, bits in enumerate(self._mask(batch.column(name), first, name)):
                            if len(bits) != len(tokens[i]):
                                raise self.where(first + i, f"{len(bits)} mask values for "
                                                 f"{len(tokens[i])} tokens", name)  # fmt: skip
                            labels[i][bits == 0] = IGNORE
                    codes = None if self.slicing is None else self.slicing.encode(batch)
                    yield from self._pack(tokens, labels if self.masks else None, first, codes)
                first += batch.num_rows
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise documents.unreadable(self.path, exc, self.rules()) from exc

    def rules(self) -> dict[str, str]:
        return super().rules() | dict.fromkeys(self.masks, jsonlines.LABELS)

    def _mask(self, column: Any, first: int, name: str) -> list[npt.NDArray[np.int64]]:
        """A mask column: lists of 0/1 (integers or booleans), a null or another value named."""
        import numpy as np
        import pyarrow as pa

        column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
        kind = column.type
        if not documents._listed(kind) or not (
            pa.types.is_integer(kind.value_type) or pa.types.is_boolean(kind.value_type)
        ):
            raise DataError(f"a mask is a list of 0/1, not {kind}", path=self.path, key=name)
        if column.null_count:
            row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
            raise self.where(first + row, "no mask (null)", name)
        rows = column.to_pylist()
        found = []
        for i, bits in enumerate(rows):
            values = np.asarray([-1 if b is None else int(b) for b in bits], dtype=np.int64)
            wrong = np.flatnonzero((values != 0) & (values != 1))
            if len(wrong):
                at = int(wrong[0])
                raise self.where(first + i, f"mask value {jsonlines.written(bits[at])} at token "
                                 f"{at} is not 0 or 1", name)  # fmt: skip
            found.append(values)
        return found
