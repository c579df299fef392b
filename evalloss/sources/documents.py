"""Documents of token ids: Parquet or JSON Lines with a list-of-integers column.

One row is one document and one item (``--tokens-column``, default ``input_ids``; an optional
``labels`` list column of the same lengths masks tokens with -100). Documents are read a chunk
at a time (`CHUNK_DOCS`), sorted by length within the chunk and packed into forward passes of
at most ``--batch-tokens`` tokens, padding included: exact sums are order-free, so the figure
does not depend on the packing. Without ``--context`` a document is scored whole; with it, a
longer one is scored in windows (`windows`), joined back into one item by the pass. Under
torchrun each process takes Parquet row groups, or every K-th chunk of a JSON Lines file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evalloss.errors import DataError, OptionError
from evalloss.io import remote
from evalloss.sources import jsonlines, prefix, slicing, textlabels, windows
from evalloss.sources.base import Block, Gather, OneFile

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch

    from evalloss.options import Options

JSONL_SUFFIXES = (".jsonl", ".ndjson")
PARQUET_SUFFIXES = (".parquet", ".pq")
CHUNK_DOCS = 8192  # documents read, sorted and packed together
LABELS = "labels"


def accepts(path: str, options: Options) -> bool:
    """JSON Lines, or Parquet with a list-of-integers column (a tabular file has none) or
    whose tokens column is a list of anything (``list<double>``: refused by row, here)."""
    lower = path.lower()
    if lower.endswith(JSONL_SUFFIXES):
        return True
    if not lower.endswith(PARQUET_SUFFIXES):
        return False
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with remote.arrow_input(path) as where:
            schema = pq.read_schema(where)
    except (pa.ArrowException, OSError, ValueError, DataError):
        return False  # parquetfile says what is wrong with it
    named = options.tokens_column in schema.names
    return any(_token_list(t) for t in schema.types) or (
        named and _listed(schema.field(options.tokens_column).type)
    )


def _listed(kind: Any) -> bool:
    import pyarrow as pa

    return bool(pa.types.is_list(kind) or pa.types.is_large_list(kind))


def _token_list(kind: Any) -> bool:
    import pyarrow as pa

    return _listed(kind) and bool(pa.types.is_integer(kind.value_type))


def open_source(path: str, options: Options) -> Documents:
    """Check the tokens column (and a labels column, if any) are lists of integers."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl = path.lower().endswith(JSONL_SUFFIXES)
    try:
        schema = reader(path, [], 0, 1).schema if jsonl else pq.read_schema(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise unreadable(path, exc, {options.tokens_column: jsonlines.IDS}) from exc
    names = list(schema.names)
    column = options.tokens_column
    if column not in names or not _listed(schema.field(column).type):
        raise DataError(
            "no list-of-integers column of token ids here"
            + (f" and no text column {options.text_column!r}" if options.tokenizer else "")
            + "; columns are: " + ", ".join(names),
            path=path,
            key=column,
        )
    tagged = bool(options.target)  # --target: per-token class ids for a classifier
    labels = LABELS if LABELS in names and _listed(schema.field(LABELS).type) else None
    if tagged:
        labels = options.target[0]
        if len(options.target) > 1 or labels not in names or not _listed(
            schema.field(labels).type
        ):
            raise DataError("token classification needs one list-of-integers label column "
                            "beside the token ids", path=path, key=labels)  # fmt: skip
    for name, rule in ((column, jsonlines.IDS), (labels, jsonlines.LABELS)):
        if name is not None and not _token_list(schema.field(name).type):
            raise not_integers(path, name, rule, str(schema.field(name).type))
    return Documents(path, column, labels, options.context, options.stride,
                     options.batch_tokens, options.checksum, options.ordered,
                     targets=(labels,) if tagged and labels else ("next token",),
                     tagged=tagged, pad_id=options.pad_id,
                     slicing=open_slicing(path, names, options, tagged),
                     prefix=prefix.of(options, tagged))  # fmt: skip


def open_slicing(
    path: str, names: list[str], options: Options, tagged: bool = False
) -> slicing.Slicing | None:
    """The ``--slice`` columns of a documents or text table: metadata beside the tokens."""
    if tagged and options.slice:
        raise OptionError("not yet with class labels (sequence or token classification)",
                          key="--slice")
    slicing.check_names(path, names, options.slice)
    return slicing.open_slicing(path, options.slice, options.slice_bins,
                                lambda name: read_column(path, name))  # fmt: skip


def read_column(path: str, name: str) -> Any:
    """One column, whole: a Parquet column chunk; JSON Lines or CSV parsed, one column kept."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    lower = path.lower()
    try:
        if lower.endswith(PARQUET_SUFFIXES):
            return pq.read_table(path, columns=[name]).column(name)
        if lower.endswith(JSONL_SUFFIXES):
            return pajson.read_json(path).column(name)
        parse = pacsv.ParseOptions(delimiter="\t" if lower.endswith(".tsv") else ",",
                                   newlines_in_values=True)  # fmt: skip
        return pacsv.read_csv(path, parse_options=parse,
                              convert_options=pacsv.ConvertOptions(include_columns=[name])
                              ).column(name)  # fmt: skip
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"cannot read it ({str(exc).splitlines()[0]})", path=path,
                        key=name) from exc  # fmt: skip


def unreadable(path: str, exc: Exception, wanted: dict[str, str]) -> DataError:
    """What pyarrow could not read: a JSON Lines file's first bad line (`jsonlines`), else
    pyarrow's own first line."""
    if path.lower().endswith(JSONL_SUFFIXES) and not remote.is_uri(path):
        found = jsonlines.diagnose(path, wanted)
        if found is not None:
            return found
    return DataError(f"cannot read it ({str(exc).splitlines()[0]})", path=path)


def not_integers(path: str, name: str, rule: str, kind: str) -> DataError:
    """A tokens or labels column that is not lists of integers: its first value that is not
    one, by line (JSON Lines) or row (Parquet), as written."""
    if path.lower().endswith(JSONL_SUFFIXES):
        found = jsonlines.diagnose(path, {name: rule})
        if found is not None:
            return found
        return DataError(f"token ids must be lists of integers; pyarrow reads {kind}", path=path,
                         key=name)  # fmt: skip
    import pyarrow.parquet as pq

    first = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=CHUNK_DOCS, columns=[name]):
        for row, value in enumerate(batch.column(0).to_pylist()):
            if value is None:
                return DataError(f"row {first + row + 1}: no token list (null)", path=path,
                                 key=name)  # fmt: skip
            for index, token in enumerate(value):
                if isinstance(token, bool) or not isinstance(token, int):
                    return DataError(f"row {first + row + 1}, token {index}: "
                                     f"{jsonlines.written(token)} is not an integer (the "
                                     f"column holds lists of {batch.schema.types[0].value_type})",
                                     path=path, key=name)  # fmt: skip
        first += batch.num_rows
    return DataError(f"token ids must be lists of integers, not {kind}", path=path, key=name)


JSON_BLOCK = 1 << 24  # bytes of JSON Lines pyarrow parses at once


def reader(path: str, columns: list[str], rank: int, world: int) -> Any:
    """Record batches of ``columns`` (all, if empty): this process's share."""
    import pyarrow.json as pajson
    import pyarrow.parquet as pq

    if path.lower().endswith(JSONL_SUFFIXES):
        # pyarrow takes the schema from the first block and fails on a key that first appears
        # later ("unexpected field", no line): the first block's schema, later keys ignored.
        blocks = pajson.ReadOptions(block_size=JSON_BLOCK)
        schema = pajson.open_json(path, read_options=blocks).schema
        return pajson.open_json(path, read_options=blocks, parse_options=pajson.ParseOptions(
            explicit_schema=schema, unexpected_field_behavior="ignore"))  # fmt: skip
    parquet = pq.ParquetFile(path, pre_buffer=False)
    groups = parquet.metadata.num_row_groups
    mine = list(range(groups * rank // world, groups * (rank + 1) // world))
    return parquet.iter_batches(batch_size=CHUNK_DOCS, row_groups=mine, columns=columns or None)


@dataclass(frozen=True)
class Documents(OneFile):
    """A documents file opened: its columns checked, nothing read yet."""

    path: str
    column: str
    labels: str | None
    context: int | None
    stride: int | None
    budget: int  # tokens per forward pass, padding included
    checksum: bool = True
    ordered: bool = False  # file order (explain, per-item), else sorted by length in a chunk
    targets: tuple[str, ...] = ("next token",)
    features: tuple[str, ...] = ("token ids",)
    tagged: bool = False  # ``labels`` are a classifier's class ids, not a causal-lm mask
    pad_id: int = 0  # what a classifier's inputs are padded with (its config's pad token)
    slicing: slicing.Slicing | None = None  # --slice columns: metadata beside the tokens
    prefix: prefix.Prefix | None = None  # --prefix-token: every document's first token

    def blocks(
        self, dtype: torch.dtype, *, rank: int = 0, world: int = 1, gather: Gather | None = None
    ) -> Iterator[Block]:
        """This process's documents, packed by length into forward passes."""
        import pyarrow as pa

        jsonl = self.path.lower().endswith(JSONL_SUFFIXES)
        columns = [self.column, *([self.labels] if self.labels else [])]
        columns += [c for c in (self.slicing.names if self.slicing else ()) if c not in columns]
        first = 0
        try:
            for number, batch in enumerate(reader(self.path, columns, rank, world)):
                if not jsonl or number % world == rank:
                    tokens = _lists(batch.column(self.column), self, first, self.column)
                    labels = None
                    if self.labels:
                        labels = _lists(batch.column(self.labels), self, first, self.labels)
                    if self.tagged:  # token classification: whole documents, labels as given
                        yield from textlabels.pack(self, tokens, labels, first)
                    else:
                        codes = None if self.slicing is None else self.slicing.encode(batch)
                        yield from self._pack(tokens, labels, first, codes)
                first += batch.num_rows
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise unreadable(self.path, exc, self.rules()) from exc

    def rules(self) -> dict[str, str]:
        """What every record's columns must hold (`jsonlines.diagnose`)."""
        found = {self.column: jsonlines.IDS}
        if self.labels:
            found[self.labels] = jsonlines.LABELS
        extra = self.slicing.names if self.slicing else ()
        return found | {name: jsonlines.VALUE for name in extra if name not in found}

    def _pack(
        self,
        tokens: list[npt.NDArray[np.int64]],
        labels: list[npt.NDArray[np.int64]] | None,
        first: int,
        codes: dict[str, npt.NDArray[np.int64]] | None = None,
    ) -> Iterator[Block]:
        """One chunk's documents (the first is row ``first``) -> their windows' rows, sorted
        by length (unless ``ordered``), packed under the token budget. A document longer than
        the context is several rows (``Block.items`` joins them back into one item)."""
        import numpy as np

        order = range(len(tokens)) if self.ordered else np.argsort([len(t) for t in tokens])
        rows, where = [], []  # each row, and its (document row, window start)
        for i in order:
            ids, mask = self._sequence(tokens, labels, first, int(i))
            shift = 0 if self.prefix is None else 1  # the prefix is no token of the document
            for w in range(windows.count(len(ids), self.stride)):
                win = windows.window(len(ids), w, self.context, self.stride)
                rows.append(windows.row(ids, win, mask))
                where.append((first + int(i), win.start - shift))
        located = np.asarray(where, dtype=np.int64).reshape(-1, 2)
        joined = len(rows) > len(tokens)  # some document takes several windows
        start = 0
        while start < len(rows):
            end, longest = start + 1, len(rows[start][0])
            while end < len(rows):
                longest = max(longest, len(rows[end][0]))
                if (end - start + 1) * longest > self.budget:
                    break
                end += 1
            inputs, targets = windows.padded(rows[start:end])
            part = located[start:end]
            groups = None if codes is None else {k: v[part[:, 0] - first]
                                                 for k, v in codes.items()}  # fmt: skip
            yield Block(int(part[0, 0]), inputs, targets, groups, locator=part,
                        items=part[:, 0].copy() if joined else None)  # fmt: skip
            start = end

    def _sequence(
        self,
        tokens: list[npt.NDArray[np.int64]],
        labels: list[npt.NDArray[np.int64]] | None,
        first: int,
        i: int,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64] | None]:
        """Document ``i``'s sequence and its labels (if any): the prefix token first
        (``--prefix-token``), so that every token of the document is a target."""
        import numpy as np

        ids, mask = tokens[i], None if labels is None else labels[i]
        if mask is not None and len(mask) != len(ids):
            raise self.where(first + i, f"{len(mask)} labels for {len(ids)} tokens",
                             self.labels or LABELS)  # fmt: skip
        if self.prefix is None:
            return ids, mask
        ids = np.concatenate([np.array([self.prefix.id], dtype=np.int64), ids])
        if mask is not None:  # the prefix's own label: never a target
            mask = np.concatenate([np.array([windows.IGNORE], dtype=np.int64), mask])
        return ids, mask

    def at(self, block: Block, index: int, column: str, why: str | None = None) -> DataError:
        return self.where(int(block.locator[index, 0]), why or "bad value", self.column)

    def bad_target(self, block: Block, index: int, position: int, why: str) -> DataError:
        """Label ``position`` of a window: the token of its document it names (counted from
        0, as the list is indexed)."""
        row, start = (int(v) for v in block.locator[index])
        return self.where(row, why, self.labels or self.column, start + position + 1)

    def where(self, row: int, why: str, column: str, token: int | None = None) -> DataError:
        """An error about document ``row`` (0-based; ``token``: its token, from 0) in
        ``column``: JSON Lines by the document's line, Parquet by its row."""
        if self.path.lower().endswith(JSONL_SUFFIXES) and not remote.is_uri(self.path):
            at = "" if token is None else f"token {token}: "
            return DataError(at + why, path=self.path, line=jsonlines.line_of(self.path, row),
                             key=column)  # fmt: skip
        at = f"row {row + 1}" + ("" if token is None else f", token {token}")
        return DataError(f"{at}: {why}", path=self.path, key=column)


def _lists(column: Any, source: Documents, first: int, name: str) -> list[npt.NDArray[np.int64]]:
    """A list-of-integers column -> one int64 array per row (views of one buffer); a null, a
    negative token id (but labels) or one past int64 named by its document and token."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if column.null_count:
        row = int(np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))[0])
        raise source.where(first + row, "no token list (null)", name)
    flat = pc.list_flatten(column)
    offsets = _integers(column.offsets)
    offsets = offsets - offsets[0]

    def bad(at: int, why: str) -> DataError:
        row = int(np.searchsorted(offsets, at, side="right")) - 1
        return source.where(first + row, why, name, at - int(offsets[row]))

    if flat.null_count:
        raise bad(int(np.flatnonzero(flat.is_null().to_numpy(zero_copy_only=False))[0]),
                  "a token id is null")  # fmt: skip
    raw = _integers(flat)
    if raw.dtype == np.uint64 and len(raw) and int(raw.max()) > np.iinfo(np.int64).max:
        at = int(np.flatnonzero(raw > np.iinfo(np.int64).max)[0])
        raise bad(at, f"token id {int(raw[at])} is past the int64 range")
    values = raw.astype(np.int64)
    if name != source.labels and len(values) and values.min() < 0:
        at = int(np.flatnonzero(values < 0)[0])
        raise bad(at, f"negative token id {int(values[at])}")
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(column))]


def _integers(array: Any) -> npt.NDArray[Any]:
    """A null-free Arrow integer array as a NumPy view of its buffer (Arrow's ``to_numpy``
    imports pandas: a fifth of a second of every run)."""
    import numpy as np
    import pyarrow as pa

    kind = array.type
    dtype = np.dtype(("i" if pa.types.is_signed_integer(kind) else "u") + str(kind.bit_width // 8))
    return np.frombuffer(
        array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset * dtype.itemsize
    )
