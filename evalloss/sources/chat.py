"""Chat and instruction data, in the dataset formats of TRL's ``SFTTrainer``: JSON Lines or
Parquet with a ``messages`` column (conversations), or ``prompt`` and ``completion`` columns
(strings, or lists of messages), scored on what the model writes (``--score``; the contract's
"Chat and instruction data"). Token ids with ``completion_mask`` or ``assistant_masks`` are
`masks`' to read.

Records are read a chunk at a time (`documents.CHUNK_DOCS`): a JSON Lines file line by line by
Python's own parser (a bad record named by its line), a Parquet file by record batches (this
process's row groups). Each chunk is rendered and tokenized (`conversation`), its unscored
tokens labelled -100, and packed as token documents are (`documents.Documents`): windows,
packing, the figure, per-item export and slices are theirs. ``bytes`` counts the scored text.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalloss.errors import DataError, OptionError
from evalloss.io import remote
from evalloss.sources import conversation, documents, jsonlines, masks, text
from evalloss.sources.base import Block, Gather
from evalloss.sources.template import CONFIG_FILE, TEMPLATE_FILE, files, find, special_tokens
from evalloss.sources.tokenizer import load

if TYPE_CHECKING:
    import torch

    from evalloss.options import Options

MESSAGES, PROMPT, COMPLETION = "messages", "prompt", "completion"
PAIRS, CHAT_PAIRS = "pairs", "chat pairs"  # a Chat's form, beside MESSAGES
DEFAULT = {MESSAGES: "assistant", PAIRS: "completion", CHAT_PAIRS: "completion"}


def accepts(path: str, options: Options) -> bool:
    """JSON Lines or Parquet with a ``messages`` column, ``prompt`` and ``completion``
    columns, or token ids with a mask column (and no ``labels``: those are documents')."""
    names = _names(path)
    return names is not None and (
        _form(names) is not None or masks.masked(names, options.tokens_column)
    )


def _names(path: str) -> list[str] | None:
    """The columns: a Parquet file's schema, a JSON Lines file's first record's keys."""
    lower = path.lower()
    if lower.endswith(documents.JSONL_SUFFIXES):
        return None if remote.is_uri(path) else jsonlines.first_keys(path)
    if not lower.endswith(documents.PARQUET_SUFFIXES):
        return None
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with remote.arrow_input(path) as where:
            return list(pq.read_schema(where).names)
    except (pa.ArrowException, OSError, ValueError, DataError):
        return None


def _form(names: list[str]) -> str | None:
    if MESSAGES in names:
        return MESSAGES
    return PAIRS if PROMPT in names and COMPLETION in names else None


def open_source(path: str, options: Options) -> documents.Documents:
    """The form settled (its ``--score`` checked), the tokenizer and template loaded."""
    names = _names(path) or []
    form = _form(names)
    if form is None:
        return masks.open_source(path, names, options)
    if form == PAIRS and _conversational(path):
        form = CHAT_PAIRS
    score = options.score or DEFAULT[form]
    if score not in ("all", DEFAULT[form]):
        what = "a messages column" if form == MESSAGES else "prompt/completion pairs"
        raise OptionError(f"{score} does not apply to {what}: use {DEFAULT[form]} or all",
                          key="--score")  # fmt: skip
    if options.tokenizer is None:
        raise DataError("chat data needs a tokenizer: give Hugging Face model folders with a "
                        "tokenizer.json", path=path)  # fmt: skip
    if options.target:
        raise OptionError("chat data is scored as causal-lm text, without labels",
                          key="--target")  # fmt: skip
    load(options.tokenizer)  # a bad tokenizer.json fails here, before any model is built
    _reading(options.tokenizer, path, form, score, None)  # the template and EOS, checked
    sliced = documents.open_slicing(path, names, options) if options.slice else None
    column = MESSAGES if form == MESSAGES else COMPLETION
    return Chat(path, "input_ids", None, options.context, options.stride, options.batch_tokens,
                options.checksum, options.ordered, slicing=sliced, text_column=column,
                tokenizer=options.tokenizer, form=form, score=score)  # fmt: skip


def _conversational(path: str) -> bool:
    """Whether the pairs are lists of messages: the first record's prompt (as TRL decides)."""
    if path.lower().endswith(documents.JSONL_SUFFIXES):
        for _, raw in jsonlines.records(path):
            try:
                return isinstance(json.loads(raw).get(PROMPT), list)
            except (ValueError, AttributeError, RecursionError):
                return False
        return False
    import pyarrow as pa
    import pyarrow.parquet as pq

    kind = pq.read_schema(path).field(PROMPT).type
    return bool(pa.types.is_list(kind) or pa.types.is_large_list(kind))


def _reading(tokenizer_path: str, data: str, form: str, score: str,
             tokenizer: Any) -> conversation.Reading:  # fmt: skip
    """The template (conversations) or EOS (string pairs) beside the tokenizer, checked."""
    folder = Path(tokenizer_path).parent
    template, eos = None, None
    if form == PAIRS:
        eos = special_tokens(folder).get("eos_token")
        if eos is None:
            raise DataError("no eos_token: a completion ends with the tokenizer's EOS, as TRL's "
                            "SFTTrainer appends it", path=str(folder / CONFIG_FILE))  # fmt: skip
    else:
        template = find(tokenizer_path)
        if template is None:
            raise DataError(f"no chat template (chat_template in {CONFIG_FILE}, or "
                            f"{TEMPLATE_FILE}): conversations are rendered with the model's "
                            "own", path=str(folder))  # fmt: skip
        if score == "assistant" and not template.generation:
            raise DataError("the chat template has no {% generation %} blocks, so which tokens "
                            "are the assistant's is unknown: use a template with them, or "
                            "--score all", path=template.path)  # fmt: skip
    return conversation.Reading(tokenizer, tokenizer_path, data, template, eos, score)


def cache_key(source: Any, tokenizer: str | None) -> list[Any] | None:
    """What a chat source's figures depend on beyond the data and the tokenizer: the score
    and the files the template and EOS come from (their paths' names; the caller hashes)."""
    if not isinstance(source, Chat | masks.Masked) or tokenizer is None:
        return None
    return [source.score, files(tokenizer) if isinstance(source, Chat) else []]


def agree(source: Any, own: list[str | None], shared: tuple[str | None, ...]) -> None:
    """Models whose ``tokenizer.json`` files are the same read chat data once, with the first
    one's template: refused where their template or special tokens differ (``own``: each
    model's tokenizer, ``shared``: the one its group reads)."""
    if not isinstance(source, Chat):
        return
    for mine, used in zip(own, shared, strict=True):
        if mine is not None and used is not None and _beside(mine) != _beside(used):
            raise OptionError(f"{Path(mine).parent} and {Path(used).parent} have the same "
                              "tokenizer.json but not the same chat template or special "
                              "tokens: evaluate them in separate runs",
                              key="CHECKPOINT")  # fmt: skip


def _beside(tokenizer: str) -> tuple[str | None, dict[str, str]]:
    """The template and the special tokens beside a tokenizer."""
    template = find(tokenizer)
    return None if template is None else template.source, special_tokens(Path(tokenizer).parent)


@dataclass(frozen=True)
class Chat(text.Text):
    """A chat or instruction file opened: its form and score settled, nothing read yet."""

    form: str = MESSAGES
    score: str = "assistant"
    features: tuple[str, ...] = ("chat",)

    def blocks(
        self, dtype: torch.dtype, *, rank: int = 0, world: int = 1, gather: Gather | None = None
    ) -> Iterator[Block]:
        """This process's records, rendered, tokenized and packed a chunk at a time."""
        import numpy as np

        reading = _reading(self.tokenizer, self.path, self.form, self.score,
                           load(self.tokenizer))  # fmt: skip
        self.counted.update(bytes=0, documents=[])
        for first, records, table in self._records(rank, world):

            def bad(i: int, why: str, column: str, first: int = first) -> DataError:
                return self.where(first + i, why, column)

            if self.form == MESSAGES:
                ids, labels, sizes = conversation.conversations(reading, records, first, bad)
            else:
                ids, labels, sizes = conversation.pairs(reading, records, first, bad,
                                                        self.form == CHAT_PAIRS)  # fmt: skip
            counted = np.asarray(sizes, dtype=np.int64)
            self.counted["bytes"] += int(counted.sum())
            self.counted["documents"].append(counted)
            codes = None if self.slicing is None else self.slicing.encode(table)
            yield from self._pack(ids, labels, first, codes)

    def _records(self, rank: int, world: int) -> Iterator[tuple[int, list[dict[str, Any]], Any]]:
        """(first row, records, their slice columns' table) a chunk at a time: this
        process's chunks (JSON Lines: every K-th; Parquet: its row groups)."""
        wanted = [MESSAGES] if self.form == MESSAGES else [PROMPT, COMPLETION]
        extra = list(self.slicing.names) if self.slicing else []
        if self.path.lower().endswith(documents.JSONL_SUFFIXES):
            yield from _jsonl_chunks(self.path, rank, world, extra)
            return
        import pyarrow as pa

        first = _rows_before(self.path, rank, world)
        columns = wanted + [c for c in extra if c not in wanted]
        try:
            for batch in documents.reader(self.path, columns, rank, world):
                rows = batch.select(wanted).to_pylist()
                table = pa.table([batch.column(c) for c in extra], names=extra)
                yield first, rows, table
                first += batch.num_rows
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise DataError(f"cannot read it ({str(exc).splitlines()[0]})",
                            path=self.path) from exc  # fmt: skip


def _rows_before(path: str, rank: int, world: int) -> int:
    """The rows of the Parquet row groups before this process's share."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    groups = meta.num_row_groups
    return sum(meta.row_group(g).num_rows for g in range(groups * rank // world))


def _jsonl_chunks(path: str, rank: int, world: int, extra: list[str]
                  ) -> Iterator[tuple[int, list[dict[str, Any]], Any]]:  # fmt: skip
    """Every K-th chunk of a JSON Lines file's records, parsed by Python's own parser."""
    import pyarrow as pa

    chunk: list[dict[str, Any]] = []
    first = number = 0
    for line, raw in jsonlines.records(path):
        chunk.append(_record(path, line, raw) if number % world == rank else {})
        if len(chunk) == documents.CHUNK_DOCS:
            if number % world == rank:
                yield first, chunk, _table(path, chunk, extra, pa)
            first, chunk, number = first + len(chunk), [], number + 1
    if chunk and number % world == rank:
        yield first, chunk, _table(path, chunk, extra, pa)


def _record(path: str, line: int, raw: bytes) -> dict[str, Any]:
    try:
        record = json.loads(raw.decode("utf-8-sig" if line == 1 else "utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(f"not UTF-8 text (at byte {exc.start + 1})", path=path,
                        line=line) from None  # fmt: skip
    except json.JSONDecodeError as exc:
        raise DataError(f"not JSON ({exc.msg} at column {exc.colno})", path=path,
                        line=line) from None  # fmt: skip
    except (ValueError, RecursionError) as exc:
        raise DataError(f"not JSON Lines ({str(exc)[:80]})", path=path, line=line) from None
    if not isinstance(record, dict):
        raise DataError("not a JSON object: each line is one record, {\"key\": value}",
                        path=path, line=line)  # fmt: skip
    return record


def _table(path: str, chunk: list[dict[str, Any]], extra: list[str], pa: Any) -> Any:
    """The chunk's slice columns as an Arrow table."""
    try:
        return pa.table({name: pa.array([r.get(name) for r in chunk]) for name in extra})
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise DataError(f"a slice column holds values of several kinds ({str(exc)[:80]})",
                        path=path) from exc  # fmt: skip
