"""Input/target text pairs for encoder-decoder folders (T5, BART, ...; ``--loss seq2seq-lm``):
JSON Lines, Parquet or CSV with the encoder's input column (``--text-column``, default
``input``) and the target column (``--target``, default ``target``). One row is one pair and
one item.

Both texts are tokenized with the folder's ``tokenizer.json``, special tokens as its
post-processor adds them (T5's EOS; BART's BOS and EOS), a chunk of pairs at a time
(`documents.CHUNK_DOCS`), truncation and padding switched off. A target's every token is
scored once, teacher-forced (`models.seq2seq`); ``tokens`` counts target tokens and the UTF-8
bytes counted are the targets' (``bits_per_byte`` of the target text). A chunk's pairs are
sorted by length (unless ``ordered``) and packed under ``--batch-tokens`` (rows x (longest
input + longest target), padding included; a longer pair goes alone): exact sums are
order-free, so the figure does not depend on the packing.

Never truncated: an input or target longer than the positions the model declares
(``max_position_embeddings``, BART's; T5's relative positions declare none) or than
``--context``, an empty or missing target, a text that is not a string: one line naming the
row. Pairs are never windowed (``--stride`` is refused). Under torchrun each process takes
every K-th chunk (Parquet: its row groups).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalloss.errors import DataError, OptionError
from evalloss.sources import documents, jsonlines, text
from evalloss.sources.base import Block, Gather
from evalloss.sources.tokenizer import encode, load

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch

    from evalloss.options import Options

LOSS = "seq2seq-lm"  # the loss whose data are pairs
INPUT, TARGET = "input", "target"  # the columns' defaults
IGNORE = -100  # a label past the target's end: never scored
LIMITS = ("max_position_embeddings", "max_encoder_position_embeddings",
          "max_decoder_position_embeddings")  # fmt: skip
DOCS = "docs/language-models.md"


def declared_limit(config: dict[str, Any] | None) -> int | None:
    """The longest input or target an encoder-decoder config declares it takes (learned
    positions: BART's ``max_position_embeddings``), None where it declares none (T5's relative
    positions; a stale ``n_positions`` there is not read by the model)."""
    limits = [v for key in LIMITS if type(v := (config or {}).get(key)) is int and v > 1]
    return min(limits) if limits else None


def accepts(path: str, options: Options) -> bool:
    """Every path, when the run's loss is ``seq2seq-lm``: pairs are its only data."""
    return options.loss == LOSS


def open_source(path: str, options: Options) -> Pairs:
    """The tokenizer loaded and both text columns checked; nothing read yet."""
    lower = path.lower()
    if options.tokenizer is None:
        raise DataError("input/target pairs need a tokenizer: give encoder-decoder Hugging Face "
                        f"folders with a tokenizer.json ({DOCS})", path=path)  # fmt: skip
    if lower.endswith(text.TEXT_SUFFIXES) or not lower.endswith(text.TABLE_SUFFIXES):
        raise DataError(f"an encoder-decoder model ({LOSS}) scores input/target text pairs: "
                        f"give JSON Lines, Parquet or CSV with an {options.text_column!r} and a "
                        f"{_target(options)!r} column ({DOCS})", path=path)  # fmt: skip
    if options.stride is not None and options.stride != options.context:
        raise OptionError("an encoder-decoder pair is scored whole, never in windows",
                          key="--stride")  # fmt: skip
    target = _target(options)
    names = text._schema(path, options.text_column).names
    for column, option in ((options.text_column, "--text-column"), (target, "--target")):
        _check_column(path, names, column, option)
    if options.text_column == target:
        raise OptionError(f"the input and the target are both column {target!r}", key="--target")
    sliced = documents.open_slicing(path, names, options)
    load(options.tokenizer)  # a bad tokenizer.json fails here, before any model is built
    return Pairs(path=path, column="input_ids", labels=None, context=options.context,
                 stride=None, budget=options.batch_tokens, checksum=options.checksum,
                 ordered=options.ordered, targets=(target,), features=(options.text_column,),
                 pad_id=options.pad_id, slicing=sliced, text_column=options.text_column,
                 tokenizer=options.tokenizer, target_column=target)  # fmt: skip


def _target(options: Options) -> str:
    if len(options.target) > 1:
        raise OptionError(f"{LOSS} takes one target text column", key="--target")
    return options.target[0] if options.target else TARGET


def _check_column(path: str, names: list[str], column: str, option: str) -> None:
    """``column`` is there and holds text; else its first line that is not (JSON Lines)."""
    import pyarrow as pa

    if column not in names:
        raise DataError(f"an encoder-decoder model ({LOSS}) scores input/target pairs: no "
                        f"column {column!r} here ({option} names it); columns are: "
                        + ", ".join(names), path=path, key=column)  # fmt: skip
    kind = text._schema(path, column).field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        found = None
        if path.lower().endswith(documents.JSONL_SUFFIXES):
            found = jsonlines.diagnose(path, {column: jsonlines.TEXT})
        raise found or DataError(f"the column holds {kind}, not text", path=path, key=column)


@dataclass(frozen=True)
class Pairs(text.Text):
    """A pairs file opened: tokenizer loaded, both columns checked, nothing read yet."""

    target_column: str = TARGET

    def blocks(
        self, dtype: torch.dtype, *, rank: int = 0, world: int = 1, gather: Gather | None = None
    ) -> Iterator[Block]:
        """This process's pairs (Parquet: its row groups; else every K-th chunk), tokenized a
        chunk at a time and packed by length."""
        import pyarrow as pa

        try:
            yield from self._tokenized(rank, world)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise documents.unreadable(self.path, exc, self.rules()) from exc

    def _tokenized(self, rank: int, world: int) -> Iterator[Block]:
        import numpy as np

        tokenizer = load(self.tokenizer)
        self.counted.update(bytes=0, documents=[])
        parquet = self.path.lower().endswith(documents.PARQUET_SUFFIXES)
        first = 0
        for number, (sources, targets, table) in enumerate(self._pairs(rank, world)):
            if parquet or number % world == rank:
                sizes = np.fromiter((len(t.encode("utf-8")) for t in targets), np.int64)
                self.counted["bytes"] += int(sizes.sum())
                self.counted["documents"].append(sizes)
                ids = encode(tokenizer, sources, self.tokenizer, self.path, first)
                labels = encode(tokenizer, targets, self.tokenizer, self.path, first)
                codes = None if self.slicing is None else self.slicing.encode(table)
                yield from self._pack(ids, labels, first, codes)
            first += len(sources)

    def rules(self) -> dict[str, str]:
        """What every record's columns must hold (`jsonlines.diagnose`)."""
        found = {self.text_column: jsonlines.TEXT, self.target_column: jsonlines.TEXT}
        extra = self.slicing.names if self.slicing else ()
        return found | {name: jsonlines.VALUE for name in extra if name not in found}

    def _pairs(self, rank: int, world: int) -> Iterator[tuple[list[str], list[str], Any]]:
        """The pairs, a chunk at a time (a Parquet file: this process's row groups), with the
        table of their slice columns; a null or an empty target named by its row."""
        import pyarrow as pa

        first = 0
        extra = self.slicing.names if self.slicing else ()
        named = [self.text_column, self.target_column]
        columns = [*named, *(c for c in extra if c not in named)]
        binned = self.slicing is not None and self.slicing.columns[0].edges is not None
        types = {**dict.fromkeys(extra, "double" if binned else "string"),
                 self.target_column: "string"}  # fmt: skip
        csv = not self.path.lower().endswith((*documents.PARQUET_SUFFIXES,
                                              *documents.JSONL_SUFFIXES))  # fmt: skip
        for batch in text._table_reader(self.path, columns, rank, world, types):
            read = [batch.column(c) for c in named]
            texts = [self._texts(v.fill_null("") if csv else v, c, first)  # CSV: empty cells
                     for v, c in zip(read, named, strict=True)]  # fmt: skip
            table = pa.table([batch.column(c) for c in extra], names=list(extra))
            for start in range(0, len(texts[0]), documents.CHUNK_DOCS):
                end = start + documents.CHUNK_DOCS
                yield texts[0][start:end], texts[1][start:end], table.slice(start, end - start)
            first += batch.num_rows

    def _texts(self, column: Any, name: str, first: int) -> list[str]:
        """A text column's values; a null (a JSON Lines record without the key), or a target
        that is empty, named by its row."""
        what = "target" if name == self.target_column else "input"
        if column.null_count:
            row = next(i for i, v in enumerate(column.is_valid().to_pylist()) if not v)
            raise self.where(first + row, f"no {what} text (null, or no such key)", name)
        values: list[str] = column.to_pylist()
        if what == "target" and not all(values):
            row = values.index("")
            raise self.where(first + row, "the target is empty: a pair needs a target to score",
                             name)  # fmt: skip
        return values

    def _pack(  # type: ignore[override]
        self,
        sources: list[npt.NDArray[np.int64]],
        targets: list[npt.NDArray[np.int64]],
        first: int,
        codes: dict[str, npt.NDArray[np.int64]] | None = None,
    ) -> Iterator[Block]:
        """One chunk's pairs (the first is row ``first``) -> blocks of whole pairs, sorted by
        length (unless ``ordered``), packed under the token budget."""
        import numpy as np
        import torch

        inputs = np.array([len(s) for s in sources], dtype=np.int64)
        outputs = np.array([len(t) for t in targets], dtype=np.int64)
        self._check_lengths(inputs, outputs, first)
        order = range(len(sources)) if self.ordered else np.argsort(inputs + outputs,
                                                                     kind="stable")  # fmt: skip
        rows = np.asarray(order, dtype=np.int64)
        start = 0
        while start < len(rows):
            end, wide = start + 1, (int(inputs[rows[start]]), int(outputs[rows[start]]))
            while end < len(rows):
                grown = (max(wide[0], int(inputs[rows[end]])),
                         max(wide[1], int(outputs[rows[end]])))  # fmt: skip
                if (end - start + 1) * sum(grown) > self.budget:
                    break
                end, wide = end + 1, grown
            part = rows[start:end]
            x = np.full((len(part), int(inputs[part].max())), self.pad_id, dtype=np.int64)
            mask = np.zeros_like(x)
            y = np.full((len(part), int(outputs[part].max())), IGNORE, dtype=np.int64)
            for r, i in enumerate(part):
                x[r, : inputs[i]], mask[r, : inputs[i]] = sources[i], 1
                y[r, : outputs[i]] = targets[i]
            labels = torch.from_numpy(y)
            given = {"input_ids": torch.from_numpy(x), "attention_mask": torch.from_numpy(mask),
                     "labels": labels}  # fmt: skip
            groups = None if codes is None else {k: v[part] for k, v in codes.items()}
            located = np.stack([first + part, np.zeros_like(part)], axis=1)
            yield Block(int(first + part[0]), given, labels, groups, locator=located)
            start = end

    def _check_lengths(self, inputs: npt.NDArray[np.int64], outputs: npt.NDArray[np.int64],
                       first: int) -> None:  # fmt: skip
        """No pair is cut: a text the tokenizer makes no tokens of, or one past the limit, is
        named by its row."""
        import numpy as np

        for lengths, what, column in ((inputs, "input", self.text_column),
                                      (outputs, "target", self.target_column)):  # fmt: skip
            if len(lengths) and lengths.min() == 0:
                row = int(np.flatnonzero(lengths == 0)[0])
                raise self.where(first + row, f"the tokenizer makes no tokens of the {what} "
                                 "(it adds no special tokens to an empty text)",
                                 column)  # fmt: skip
            if self.context is not None and len(lengths) and lengths.max() > self.context:
                row = int(np.flatnonzero(lengths > self.context)[0])
                raise self.where(first + row, f"the {what} is {lengths[row]} tokens, longer "
                                 f"than the {self.context} positions the model takes "
                                 "(max_position_embeddings, or --context); evalloss never "
                                 "truncates: shorten it or leave it out", column)  # fmt: skip

    def at(self, block: Block, index: int, column: str, why: str | None = None) -> DataError:
        return self.where(int(block.locator[index, 0]), why or "bad value", self.text_column)

    def bad_target(self, block: Block, index: int, position: int, why: str) -> DataError:
        """Target token ``position`` of the pair (counted from 0, as the labels are)."""
        row = int(block.locator[index, 0])
        return self.where(row, why, self.target_column, position)
