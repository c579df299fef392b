"""The result cache (``--cache DIR``): one entry per model and data set, a compressed Parquet
file of the model's per-item values (float64) and weights, in file order, with the model's
exact sums and counts (`engine.Accumulator.state`) and, for text, the data's UTF-8 bytes.

An entry is named by the sha256 of its key (`name`): a JSON object of everything a figure
depends on (built by `reuse.key`), stored again inside the entry with a checksum of the whole:
an entry that cannot be read, is truncated, fails its checksum or holds another key is one
warning line, ignored and rewritten. Entries are written through `files.atomic` (temp file,
fsync, rename), so a concurrent run sees a whole entry or none. A cache folder that cannot be
written is one warning; the run goes on. The folder is an input like any other: a name in it
that is a symlink or not a regular file (a FIFO, a device, a folder) is never opened, followed
or written through (one warning; the model is evaluated and not cached). `evict` keeps the
folder under ``--cache-max-size``, dropping the least recently used entries first (a hit
touches its entry's mtime).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalloss.errors import EvallossWarning, OptionError, shown
from evalloss.io.files import atomic

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

FIGURE_FORMAT = 2  # bump when what an entry's figures mean changes: every old entry misses
SUFFIX = ".parquet"
META = b"evalloss.cache"  # the footer's key (unchanged since v2: older entries still read)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclass(frozen=True)
class Entry:
    """One model's recorded pass: every item's value and weight, in file order; its
    accumulator's state (exact sums, counts); the text data's bytes, if any; the items'
    targets (n, T), for tabular data (the per-item export shows them)."""

    values: npt.NDArray[np.float64]
    weights: npt.NDArray[np.int64]
    state: dict[str, Any]
    text_bytes: int | None = None
    targets: npt.NDArray[np.float64] | None = None
    correct: npt.NDArray[np.int64] | None = None  # each item's correct and counted target
    counted: npt.NDArray[np.int64] | None = None  # elements: per-slice accuracy (--slice)
    text_words: int | None = None  # the text data's words (lm-evaluation-harness's count)


@dataclass(frozen=True)
class Listed:
    """An entry as ``evalloss cache list`` shows it."""

    path: Path
    size: int
    used: float  # last use (mtime), seconds since the epoch
    key: dict[str, Any] | None  # None: unreadable


def name(key: dict[str, Any]) -> str:
    """The entry's file name: the sha256 of its key as canonical JSON."""
    return hashlib.sha256(_canonical(key).encode()).hexdigest() + SUFFIX


def load(folder: str | os.PathLike[str], key: dict[str, Any]) -> Entry | None:
    """The entry for ``key``, or None: missing (quietly), or damaged, truncated or holding
    another key (one warning line: it is evaluated again and rewritten)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(folder) / name(key)
    kind = _kind(path)
    if kind is None:
        return None
    if kind != "file":
        _not_an_entry(path, kind)
        return None
    try:
        table = pq.ParquetFile(path).read()  # (read_table imports pandas: a second)
        meta = json.loads((table.schema.metadata or {})[META])
        values = _numpy(table.column("value"), np.float64)
        weights = _numpy(table.column("weight"), np.int64)
        named = [c for c in table.column_names if c.startswith("target")]
        targets = None
        if named:
            targets = np.stack([_numpy(table.column(c), np.float64) for c in named], axis=1)
        hits = [_numpy(table.column(c), np.int64) if c in table.column_names else None
                for c in ("correct", "counted")]  # fmt: skip
        entry = Entry(values, weights, meta["state"], meta["text_bytes"], targets, hits[0],
                      hits[1], meta["text_words"])  # fmt: skip
        why = None
        if meta.get("key") != key:
            why = "it holds another key"
        elif meta.get("checksum") != _checksum(key, entry):
            why = "its checksum does not match"
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException) as exc:
        why = f"it cannot be read ({type(exc).__name__})"
    if why is not None:
        warnings.warn(f"cache entry {shown(str(path))} ignored, {why}: evaluating the model "
                      "again", EvallossWarning, stacklevel=2)  # fmt: skip
        return None
    _touch(path)
    return entry


def store(folder: str | os.PathLike[str], key: dict[str, Any], entry: Entry,
          max_size: int | None = None) -> None:  # fmt: skip
    """Write ``entry`` under ``key`` atomically, then `evict` down to ``max_size``; a folder
    that cannot be written is one warning."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    meta = {"format": FIGURE_FORMAT, "key": key, "state": entry.state,
            "text_bytes": entry.text_bytes, "text_words": entry.text_words,
            "checksum": _checksum(key, entry)}  # fmt: skip
    columns = {"value": _arrow(entry.values, pa.float64()),
               "weight": _arrow(entry.weights, pa.int64())}  # fmt: skip
    if entry.targets is not None:
        for j in range(entry.targets.shape[1]):
            columns[f"target{j}"] = _arrow(entry.targets[:, j], pa.float64())
    for column, hits in (("correct", entry.correct), ("counted", entry.counted)):
        if hits is not None:
            columns[column] = _arrow(hits, pa.int64())
    table = pa.table(columns)
    table = table.replace_schema_metadata({META: json.dumps(meta).encode()})
    path = Path(folder) / name(key)
    kind = _kind(path)
    if kind not in (None, "file"):  # never written through, nor replaced (`load` warned)
        return
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with atomic(path) as tmp:
            # measured: level 1, and a dictionary for the weights and targets only (the values
            # rarely repeat), write 1M items in a fifth of the default's time, and smaller
            pq.write_table(table, tmp, compression="zstd", compression_level=1,
                           use_dictionary=[c for c in columns if c != "value"])  # fmt: skip
    except OSError as exc:
        warnings.warn(f"cache folder {shown(str(folder))} cannot be written "
                      f"({exc.strerror or type(exc).__name__}): results not cached",
                      EvallossWarning, stacklevel=2)  # fmt: skip
        return
    if max_size is not None:
        evict(folder, max_size)


def evict(folder: str | os.PathLike[str], max_size: int) -> list[Path]:
    """Remove the least recently used entries until the folder's entries take at most
    ``max_size`` bytes; returns what was removed."""
    found = sorted(entries(folder), key=lambda e: e.used)
    total = sum(e.size for e in found)
    removed = []
    for e in found:
        if total <= max_size:
            break
        try:
            e.path.unlink()
        except FileNotFoundError:  # another run removed it first
            pass
        except OSError:
            continue
        total -= e.size
        removed.append(e.path)
    return removed


def entries(folder: str | os.PathLike[str], *, keys: bool = False) -> list[Listed]:
    """The folder's entries (with ``keys``: each one's key, read from its footer)."""
    found = []
    try:
        paths = sorted(Path(folder).glob("*" + SUFFIX))
    except OSError:
        return []
    for path in paths:
        try:
            st = path.lstat()
        except OSError:
            continue
        if not stat.S_ISREG(st.st_mode):  # a link or a special file: never opened
            continue
        found.append(Listed(path, st.st_size, st.st_mtime, _key_of(path) if keys else None))
    return found


def clear(folder: str | os.PathLike[str]) -> int:
    """Remove every entry (and temp file left by a killed run); returns how many entries."""
    removed = 0
    for e in entries(folder):
        try:
            e.path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
    try:
        leftovers = list(Path(folder).glob(".*" + SUFFIX + "*.tmp"))
    except OSError:
        leftovers = []
    for tmp in leftovers:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return removed


def parse_size(text: str | int) -> int:
    """``--cache-max-size``: bytes, or a number with K, M, G or T (powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", str(text), re.IGNORECASE)
    if match is None:
        raise OptionError(f"must be a size such as 500M or 2G, got {shown(str(text))}",
                          key="--cache-max-size")  # fmt: skip
    return int(float(match[1]) * _UNITS[match[2].upper()])


def _arrow(values: npt.NDArray[Any], kind: Any) -> Any:
    """A NumPy column as an Arrow array, without a copy: `pyarrow.array` imports pandas on
    its first call (about a second)."""
    import numpy as np
    import pyarrow as pa

    values = np.ascontiguousarray(values, dtype=np.float64 if kind == pa.float64() else np.int64)
    return pa.Array.from_buffers(kind, len(values), [None, pa.py_buffer(values)])


def _numpy(column: Any, dtype: Any) -> npt.NDArray[Any]:
    """An Arrow column of ``dtype`` without nulls as NumPy (`_arrow`'s inverse; no pandas)."""
    import numpy as np
    import pyarrow as pa

    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    kind = pa.float64() if np.dtype(dtype) == np.float64 else pa.int64()
    if array.null_count or array.type != kind:
        raise ValueError("a cache column of another type, or with nulls")
    return np.frombuffer(array.buffers()[1], dtype=dtype, count=len(array), offset=array.offset)


def _key_of(path: Path) -> dict[str, Any] | None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.read_schema(path).metadata or {}
        key = json.loads(meta[META])["key"]
    except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
        return None
    return key if isinstance(key, dict) else None


def _checksum(key: dict[str, Any], entry: Entry) -> str:
    import numpy as np

    digest = hashlib.sha256(_canonical([key, entry.state, entry.text_bytes,
                                        entry.text_words]).encode())  # fmt: skip
    digest.update(np.ascontiguousarray(entry.values, dtype="<f8").tobytes())
    digest.update(np.ascontiguousarray(entry.weights, dtype="<i8").tobytes())
    for array, kind in ((entry.targets, "<f8"), (entry.correct, "<i8"), (entry.counted, "<i8")):
        if array is not None:
            digest.update(np.ascontiguousarray(array, dtype=kind).tobytes())
    return digest.hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)


def _kind(path: Path) -> str | None:
    """What is at ``path``, links not followed: None (nothing), ``"file"`` (a regular
    file), ``"symlink"``, or ``"special file"`` (a FIFO, socket, device or folder)."""
    try:
        mode = path.lstat().st_mode
    except OSError:  # nothing there, or a folder that cannot be searched (writing says so)
        return None
    if stat.S_ISLNK(mode):
        return "symlink"
    return "file" if stat.S_ISREG(mode) else "special file"


def _not_an_entry(path: Path, kind: str) -> None:
    warnings.warn(f"cache entry {shown(str(path))} is a {kind}, not a file evalloss wrote: "
                  "left alone (never followed or written through); the model is evaluated "
                  "and not cached", EvallossWarning, stacklevel=3)  # fmt: skip


def _touch(path: Path) -> None:
    """Mark a hit as recently used (least recently used entries go first)."""
    try:
        now = time.time()
        os.utime(path, (now, now))
    except OSError:
        pass
