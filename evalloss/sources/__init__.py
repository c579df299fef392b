"""Data sources: a ``--data`` path -> a `DataSource` that reads it as blocks of items.

Each source module has ``accepts(path)`` and ``open_source(path, options)``; the first module
in `SOURCES` that accepts a path opens it: `pairs` (input/target text for an encoder-decoder,
``seq2seq-lm``), `chat` (conversations, prompt-completion pairs and masked token ids: TRL's
dataset formats), `text` (text, where the models have a tokenizer),
`tokenstream` (``.bin`` token ids), `documents`
(JSON Lines, or Parquet with a list-of-token-ids column), `parquetfile` (``.parquet``/``.pq``),
`tensors` (``.npz``/``.safetensors`` arrays), then `csvfile` (any other file, as CSV/TSV text).
A ``--data`` that names code (``file.py:Name``, ``package.module:Name``) is the user's own
Dataset (`factory`, in `SPECS`: tried before the path is taken for a file). A new form of data
is one module here plus one line in `SOURCES`; see docs/architecture.md.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from evalloss.errors import DataError, OptionError
from evalloss.io import remote
from evalloss.sources import (
    chat,
    csvfile,
    documents,
    factory,
    masks,
    pairs,
    parquetfile,
    tensors,
    text,
    tokenstream,  # fmt: skip
)
from evalloss.sources.base import Block, DataSource

if TYPE_CHECKING:
    from evalloss.options import Options

__all__ = ["SOURCES", "SPECS", "Block", "DataSource", "open_data"]

# in this order: pairs claims every file for an encoder-decoder (seq2seq-lm); chat claims
# TRL's chat and instruction columns; text claims text where the models have a tokenizer;
# documents claims Parquet with a list column; csvfile takes any other file
SOURCES: tuple[ModuleType, ...] = (pairs, chat, text, tokenstream, documents, parquetfile, tensors,
                                   csvfile)  # fmt: skip
SPECS: tuple[ModuleType, ...] = (factory,)  # --data that names code, not a file


def open_data(path: str | os.PathLike[str], options: Options) -> DataSource:
    """Open ``path`` with the first source that accepts it: columns resolved, nothing read."""
    opened = _open(os.fspath(path), options)
    if options.prefix_token is not None and not isinstance(opened, documents.Documents):
        raise OptionError("is for documents and text, where each document gets the token "
                          "first; this data has no documents", key="--prefix-token")  # fmt: skip
    return opened


def _open(path: str, options: Options) -> DataSource:
    """`open_data`'s source, not yet checked against the options it cannot take."""
    if remote.is_uri(path):
        return _open_object(path, options)
    for spec in SPECS:
        if spec.accepts(path, options):
            made: DataSource = spec.open_source(path, options)
            return _scored(made, options)
    try:
        if not Path(path).is_file():
            why = "no such file" if not Path(path).exists() else "not a file"
            raise DataError(why, path=path)
    except OSError as exc:  # a name too long, a symlink loop
        raise DataError(f"cannot open it ({exc.strerror or exc})", path=path) from exc
    for source in SOURCES:
        if source.accepts(path, options):
            opened: DataSource = source.open_source(path, options)
            return _scored(opened, options)
    raise AssertionError("the last source accepts every path")


def _scored(source: DataSource, options: Options) -> DataSource:
    """``--score assistant`` or ``completion`` only where the data says what those are."""
    if options.score not in (None, "all") and not isinstance(source, chat.Chat | masks.Masked):
        raise DataError(f"--score {options.score} needs chat or instruction data: a messages "
                        "column, prompt and completion columns, or token ids with a "
                        "completion_mask or assistant_masks column (docs/chat-data.md)",
                        path=source.path)  # fmt: skip
    return source


# the forms read from object storage by ranges; the others need a local file
REMOTE: tuple[ModuleType, ...] = (tokenstream, parquetfile, csvfile)


def _open_object(uri: str, options: Options) -> DataSource:
    """An object in storage (``s3://``, ``gs://``, ``hf://``, ...): there, and of a form
    read by ranges; never code."""
    if any(spec.accepts(uri, options) for spec in SPECS):
        raise DataError("code is never read from object storage: --data file.py:Name names "
                        "a local file or an installed module", path=uri)  # fmt: skip
    remote.size(uri)  # the object is there, else one line naming the URI
    for source in SOURCES:
        if source.accepts(uri, options):
            if source not in REMOTE:
                name = source.__name__.rsplit(".", 1)[-1]
                raise DataError(
                    f"{name} data is not read from object storage: copy it to a local disk "
                    "(CSV, Parquet and .bin token streams are read in place)",
                    path=uri,
                )
            opened: DataSource = source.open_source(uri, options)
            return opened
    raise AssertionError("the last source accepts every path")
