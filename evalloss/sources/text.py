r"""Text, tokenized with a model folder's ``tokenizer.json``: ``.txt`` (one document per line),
or JSON Lines, Parquet or CSV with a text column (``--text-column``, default ``text``).

Read a chunk of documents at a time (`documents.CHUNK_DOCS`), tokenized in one batch by the
`tokenizers` library (Rust, on every core), special tokens as the tokenizer's post-processor
adds them; truncation and padding the file may ask for are switched off (a truncated document
would lose tokens silently). Then packed as token documents are (`documents.Documents`), so
windows, packing and the figure are theirs. The UTF-8 bytes and the words of every document
are counted as they go by (lm-evaluation-harness's counts: ``len(text.encode())`` and
``len(re.split(r"\s+", text))``): ``bits_per_byte`` = loss_sum / (bytes x ln 2) and
``word_perplexity`` = exp(loss_sum / words), its formulas (its figures too where the tokens
scored are its own: ``--prefix-token``, `prefix`). Under torchrun each process takes every
K-th chunk (Parquet: its row groups).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from evalloss.errors import DataError, OptionError, shown
from evalloss.io import remote
from evalloss.losses import ROWS as LOSSES
from evalloss.sources import csvtext, documents, jsonlines, prefix, slicing, textlabels
from evalloss.sources.base import Block, Gather
from evalloss.sources.tokenizer import encode, load

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch

    from evalloss.options import Options

TEXT_SUFFIXES = (".txt", ".text")
TABLE_SUFFIXES = (*documents.JSONL_SUFFIXES, *documents.PARQUET_SUFFIXES, ".csv", ".tsv")
SPACE = re.compile(r"\s+")  # lm-evaluation-harness's word boundary (`words`)


def accepts(path: str, options: Options) -> bool:
    """Text, where the run's models have a tokenizer: a ``.txt`` file (also for ``causal-lm``
    without one, to say it is needed), or a table without the token ids column (pre-tokenized
    data is read as it is)."""
    lower = path.lower()
    if lower.endswith(TEXT_SUFFIXES):  # else a .txt may be a CSV file of numbers
        return options.tokenizer is not None or _per_token(options.loss)
    if options.tokenizer is None or not lower.endswith(TABLE_SUFFIXES):
        return False
    try:
        names = _schema(path, options.text_column).names
    except DataError:  # JSON Lines pyarrow cannot read: text if its first record has no ids
        keys = jsonlines.first_keys(path) if lower.endswith(documents.JSONL_SUFFIXES) else None
        return keys is not None and options.tokens_column not in keys
    return options.tokens_column not in names


def open_source(path: str, options: Options) -> Text:
    """The tokenizer loaded and the text column checked; nothing read yet."""
    if options.tokenizer is None:
        raise DataError("text needs a tokenizer: give Hugging Face model folders with a "
                        "tokenizer.json, or token ids (docs/language-models.md)",
                        path=path)  # fmt: skip
    lower = path.lower()
    if not lower.endswith(TEXT_SUFFIXES):
        import pyarrow as pa

        schema = _schema(path, options.text_column)
        if options.text_column not in schema.names:
            raise DataError("no text column (nor token ids) here; columns are: "
                            + ", ".join(schema.names),
                            path=path, key=options.text_column)  # fmt: skip
        kind = schema.field(options.text_column).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            found = None
            if lower.endswith(documents.JSONL_SUFFIXES):  # its first line that is not text
                found = jsonlines.diagnose(path, {options.text_column: jsonlines.TEXT})
            raise found or DataError(f"the text column holds {kind}, not text", path=path,
                                     key=options.text_column)  # fmt: skip
    sliced = None
    if options.slice and lower.endswith(TEXT_SUFFIXES):
        raise OptionError("a .txt file has no columns to slice by: use JSON Lines, Parquet "
                          "or CSV with a metadata column", key="--slice")  # fmt: skip
    label = _label(path, options)
    if options.slice and not lower.endswith(TEXT_SUFFIXES):
        names = _schema(path, options.text_column).names
        sliced = documents.open_slicing(path, names, options, label is not None)
    load(options.tokenizer)  # a bad tokenizer.json fails here, before any model is built
    return Text(path, "input_ids", label, options.context, options.stride, options.batch_tokens,
                options.checksum, options.ordered, targets=(label,) if label else ("next token",),
                tagged=label is not None, pad_id=options.pad_id, slicing=sliced,
                prefix=prefix.of(options, label is not None),
                text_column=options.text_column, tokenizer=options.tokenizer)  # fmt: skip


def _label(path: str, options: Options) -> str | None:
    """The class-label column (sequence classification), where ``--target`` names one."""
    if not options.target:
        return None
    if len(options.target) > 1 or path.lower().endswith(TEXT_SUFFIXES):
        why = "one label column" if len(options.target) > 1 else "a table (a .txt has no labels)"
        raise DataError(f"text with labels needs {why}", path=path, key="--target")
    if options.target[0] not in _schema(path, options.text_column).names:
        raise DataError("no such label column", path=path, key=options.target[0])
    return options.target[0]


def _schema(path: str, text_column: str = "text") -> Any:
    """The columns of a JSON Lines, Parquet or CSV file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with remote.arrow_input(path) as where:
            if path.lower().endswith(documents.PARQUET_SUFFIXES):
                return pq.read_schema(where)
            return _table_reader(path, [], where=where).schema
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise documents.unreadable(path, exc, {text_column: jsonlines.TEXT}) from exc


def _table_reader(path: str, columns: list[str], rank: int = 0, world: int = 1,
                  types: dict[str, str] | None = None, where: Any = None) -> Any:  # fmt: skip
    """Record batches of ``columns`` (all if empty; the first is text; ``types``: the other
    columns' CSV types): this process's share of a Parquet file's row groups, or the whole of
    a JSON Lines or CSV file."""
    import pyarrow.csv as pacsv

    lower = path.lower()
    if lower.endswith(documents.PARQUET_SUFFIXES):
        return documents.reader(path, columns, rank, world)
    if lower.endswith(documents.JSONL_SUFFIXES):
        return documents.reader(path, [], rank, world)
    # slice columns (``types``): missing values as every form has them (an empty text cell is
    # an empty document: `Text._chunks`)
    nulls = slicing.csv_nulls("double" in types.values()) if types else {}
    convert = pacsv.ConvertOptions(
        include_columns=columns or None,
        column_types={**(types or {}), columns[0]: "string"} if columns else None,
        **{"strings_can_be_null": False, **nulls},
    )  # fmt: skip
    parse = pacsv.ParseOptions(delimiter="\t" if lower.endswith(".tsv") else ",",
                               newlines_in_values=True)  # fmt: skip
    return pacsv.open_csv(where or path, read_options=pacsv.ReadOptions(block_size=1 << 24),
                          parse_options=parse, convert_options=convert)  # fmt: skip


@dataclass(frozen=True)
class Text(documents.Documents):
    """A text file opened: tokenizer loaded, column checked, nothing read yet."""

    text_column: str = "text"
    tokenizer: str = ""
    counted: dict[str, Any] = field(default_factory=dict, compare=False)
    features: tuple[str, ...] = ("text",)

    def blocks(
        self, dtype: torch.dtype, *, rank: int = 0, world: int = 1, gather: Gather | None = None
    ) -> Iterator[Block]:
        """This process's documents, tokenized a chunk at a time and packed by length."""
        import numpy as np
        import pyarrow as pa

        tokenizer = load(self.tokenizer)
        self.counted.update(bytes=0, words=0, documents=[])
        first = 0
        try:
            for number, (texts, labels, table) in enumerate(self._chunks(rank, world)):
                if self.path.lower().endswith(documents.PARQUET_SUFFIXES) or (
                    number % world == rank
                ):
                    sizes = np.fromiter((len(t.encode("utf-8")) for t in texts), np.int64)
                    self.counted["bytes"] += int(sizes.sum())
                    self.counted["documents"].append(sizes)
                    self.counted["words"] += words(texts)
                    ids = self._encoded(tokenizer, texts, first)
                    if labels is None:
                        codes = None if self.slicing is None else self.slicing.encode(table)
                        yield from self._pack(ids, None, first, codes)
                    else:
                        yield from textlabels.pack(self, ids, labels, first)
                first += len(texts)
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise documents.unreadable(self.path, exc, self.rules()) from exc

    def _encoded(self, tokenizer: Any, texts: list[str], first: int) -> list[
            npt.NDArray[np.int64]]:  # fmt: skip
        """The documents' token ids; under ``--prefix-token``, lm-evaluation-harness's rule
        (``HFLM.tok_encode``): a text that starts with the prefix token's own text is
        tokenized without special tokens."""
        ids = encode(tokenizer, texts, self.tokenizer, self.path, first)
        marker = None if self.prefix is None else self.prefix.marker
        if marker is not None:
            plain = [i for i, t in enumerate(texts) if t.startswith(marker)]
            again = encode(tokenizer, [texts[i] for i in plain], self.tokenizer, self.path,
                           first, special=False) if plain else []  # fmt: skip
            for i, found in zip(plain, again, strict=True):
                ids[i] = found
        return ids

    def rules(self) -> dict[str, str]:
        """What every record's columns must hold (`jsonlines.diagnose`)."""
        extra = [*([self.labels] if self.labels else []),
                 *(self.slicing.names if self.slicing else ())]  # fmt: skip
        found = {self.text_column: jsonlines.TEXT}
        return found | {name: jsonlines.VALUE for name in extra if name not in found}

    def _chunks(self, rank: int, world: int) -> Iterator[tuple[list[str], Any, Any]]:
        """The documents, a chunk at a time (a Parquet file: this process's row groups), with
        their labels' column where they have one, and the table of their slice columns."""
        import pyarrow as pa

        if self.path.lower().endswith(TEXT_SUFFIXES):
            yield from ((lines, None, None) for lines in _lines(self.path))
            return
        first = 0
        extra = self.slicing.names if self.slicing else ()
        columns = [self.text_column, *([self.labels] if self.labels else [])]
        columns += [c for c in extra if c not in columns]
        binned = self.slicing is not None and self.slicing.columns[0].edges is not None
        types = dict.fromkeys(extra, "double" if binned else "string")
        csv = not self.path.lower().endswith((*documents.PARQUET_SUFFIXES,
                                              *documents.JSONL_SUFFIXES))  # fmt: skip
        for batch in _table_reader(self.path, columns, rank, world, types):
            column = batch.column(self.text_column)
            if csv and column.null_count:  # an empty cell: an empty document
                column = column.fill_null("")
            if column.null_count:
                row = next(i for i, v in enumerate(column.is_valid().to_pylist()) if not v)
                raise self.where(first + row, "no text (null)", self.text_column)
            table = pa.table([batch.column(c) for c in extra], names=list(extra))
            texts = column.to_pylist()
            labels = batch.column(self.labels) if self.labels else None
            for start in range(0, len(texts), documents.CHUNK_DOCS):
                end = start + documents.CHUNK_DOCS
                yield (texts[start:end],
                       None if labels is None else labels.slice(start, end - start),
                       table.slice(start, end - start))  # fmt: skip
            first += len(texts)

    def at(self, block: Block, index: int, column: str, why: str | None = None) -> DataError:
        return self.where(int(block.locator[index, 0]), why or "bad value", self.text_column)

    def bad_target(self, block: Block, index: int, position: int, why: str) -> DataError:
        row, start = (int(v) for v in block.locator[index])
        return self.where(row, why, self.labels or self.text_column, start + position + 1)

    def where(self, row: int, why: str, column: str, token: int | None = None) -> DataError:
        """A document's error: by its line (a .txt file, CSV, JSON Lines) or row (Parquet)."""
        lower = self.path.lower()
        if lower.endswith(TEXT_SUFFIXES):
            at = "" if token is None else f" at token {token}"
            return DataError(why + at, path=self.path, line=row + 1)
        if lower.endswith((".csv", ".tsv")) and not remote.is_uri(self.path):
            line = csvtext.record_line(self.path, row, "\t" if lower.endswith(".tsv") else ",")
            if line is not None:
                at = "" if token is None else f"token {token}: "
                return DataError(at + why, path=self.path, line=line, key=column)
        return super().where(row, why, column, token)

    def bytes_read(self) -> int:
        """UTF-8 bytes of the documents this process read in its last pass (text: never
        None)."""
        return int(self.counted.get("bytes", 0))

    def words_read(self) -> int:
        """lm-evaluation-harness's word count of the documents this process read in its last
        pass (`words`)."""
        return int(self.counted.get("words", 0))

    def document_bytes(self) -> npt.NDArray[np.int64]:
        """Each document's UTF-8 bytes, in the order its last pass read them."""
        import numpy as np

        return np.concatenate(self.counted.get("documents") or [np.empty(0, np.int64)])


def words(texts: list[str]) -> int:
    r"""lm-evaluation-harness's words of each text, summed: ``len(re.split(r"\s+", text))``
    (an empty text is one word; a text with a space at each end, three)."""
    return sum(len(SPACE.split(t)) for t in texts)


def _per_token(loss: str | None) -> bool:
    """``loss`` makes the token the unit (``causal-lm``): text is its data."""
    row = LOSSES.get(loss) if loss is not None else None
    return row is not None and row.per_token


def _lines(path: str) -> Iterator[list[str]]:
    """A text file's lines (one document each, the line break not included), in chunks."""
    chunk: list[str] = []
    number = 0
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                chunk.append(raw.rstrip(b"\n").removesuffix(b"\r").decode("utf-8"))
            except UnicodeDecodeError as exc:
                byte = shown(raw[exc.start : exc.start + 1])
                raise DataError(f"not UTF-8 text (byte {byte} at column {exc.start + 1})",
                                path=path, line=number) from None  # fmt: skip
            if len(chunk) == documents.CHUNK_DOCS:
                yield chunk
                chunk = []
    if chunk:
        yield chunk

