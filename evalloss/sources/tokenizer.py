"""A model folder's ``tokenizer.json``, untrusted input run by the `tokenizers` library (Rust):
loaded and used here only, every failure one line.

The file's regexes (a pre-tokenizer's ``Split``, a normalizer's ``Replace``) run in Oniguruma;
a pattern that backtracks past its retry limit makes the library *panic*, which reaches Python
as ``pyo3_runtime.PanicException``, a `BaseException` (not an `Exception`) that cannot be
imported, so it is caught by name. Rust prints its own panic lines to the process's stderr
(file descriptor 2) before Python sees anything: while the library runs, descriptor 2 is held
in a temporary file, passed on unchanged when the call returns and dropped when it failed (the
run then ends with its one error line).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from evalloss.errors import DataError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

_HELD = threading.Lock()  # one holder of descriptor 2 at a time
# what turns a text into ids; ``truncation`` and ``padding`` (switched off by `load`), the
# decoder and the version do not
DECIDING = ("model", "normalizer", "pre_tokenizer", "post_processor", "added_tokens")


def identity(content: bytes) -> bytes:
    """What decides a ``tokenizer.json``'s ids (`DECIDING`), as canonical JSON: two files with
    the same identity turn every text into the same ids. A file that is not a JSON object is
    its own bytes (loading it then says what is wrong)."""
    import json

    try:
        value = json.loads(content)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return content
    if not isinstance(value, dict):
        return content
    deciding = {k: value.get(k) for k in DECIDING}
    deciding["post_processor"] = _post_processor(deciding["post_processor"])
    try:
        return json.dumps(deciding, sort_keys=True).encode()
    except (ValueError, RecursionError):  # too deep to write back
        return content


def _post_processor(spec: Any) -> Any:
    """A post-processor as far as it decides the ids of one text: None for one that adds no
    token (``ByteLevel``, which only moves offsets; a ``TemplateProcessing`` whose single
    template is the text alone, which transformers 5 writes where the file had none), and a
    ``Sequence`` of such steps left out."""
    if not isinstance(spec, dict):
        return spec
    kind = spec.get("type")
    if kind == "ByteLevel":
        return None
    if kind == "TemplateProcessing":
        single = spec.get("single")
        alone = (isinstance(single, list) and len(single) == 1 and isinstance(single[0], dict)
                 and list(single[0]) == ["Sequence"] and isinstance(single[0]["Sequence"], dict)
                 and single[0]["Sequence"].get("id") == "A")  # fmt: skip
        return None if alone else {"type": kind, "single": single,
                                   "special_tokens": spec.get("special_tokens")}  # fmt: skip
    steps = spec.get("processors")
    if kind == "Sequence" and isinstance(steps, list):
        kept = [p for p in map(_post_processor, steps) if p is not None]
        if len(kept) < 2:
            return kept[0] if kept else None
        return {"type": kind, "processors": kept}
    return spec


def load(path: str) -> Any:
    """A ``tokenizer.json``, with the truncation and padding it may ask for switched off."""
    from tokenizers import Tokenizer

    try:
        with _stderr_held():
            tokenizer = Tokenizer.from_file(path)
    except BaseException as exc:  # a bare Exception for a bad file; a panic by name
        if not (isinstance(exc, Exception) or panicked(exc)):
            raise
        raise DataError(f"cannot load the tokenizer ({_first(exc)})", path=path) from exc
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def encode(tokenizer: Any, texts: list[str], path: str, data: str, first: int, *,
           special: bool = True) -> list[npt.NDArray[np.int64]]:  # fmt: skip
    """Each document's token ids, special tokens included (``special``: as the
    post-processor adds them): one batch, every core. ``path`` names the tokenizer, ``data``
    and ``first`` (0-based) the documents, for the error."""
    import numpy as np

    encoded = encodings(tokenizer, texts, path, data, first, special=special, offsets=False)
    return [np.asarray(e.ids, dtype=np.int64) for e in encoded]


def encodings(tokenizer: Any, texts: list[str], path: str, data: str, first: int, *,
              special: bool, offsets: bool = True) -> list[Any]:  # fmt: skip
    """The `tokenizers` encodings of ``texts`` (with ``offsets``: their characters' spans
    too), every failure one line (`encode`)."""
    try:
        with _stderr_held():
            batch = tokenizer.encode_batch if offsets else tokenizer.encode_batch_fast
            encoded: list[Any] = batch(texts, add_special_tokens=special)
    except BaseException as exc:
        if not (isinstance(exc, Exception) or panicked(exc)):
            raise
        what = "panicked" if panicked(exc) else "failed"
        raise DataError(f"the tokenizer {what} on documents {first + 1}-{first + len(texts)} "
                        f"of {data} ({_first(exc)}): a regex in it that backtracks without "
                        "end? The tokenizer cannot be used", path=path) from exc  # fmt: skip
    return encoded


def panicked(exc: BaseException) -> bool:
    """Whether ``exc`` is a Rust panic (pyo3's ``PanicException``, not importable by name)."""
    return any(c.__name__ == "PanicException" for c in type(exc).__mro__)


def _first(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= 200 else text[:197] + "..."


@contextlib.contextmanager
def _stderr_held() -> Iterator[None]:
    """Descriptor 2 into a temporary file for the block: passed on when it returns, dropped
    when it raises (a panic's own lines). A closed descriptor 2 is left as it is."""
    with _HELD, tempfile.TemporaryFile() as held:
        with contextlib.suppress(ValueError, OSError):
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # stderr closed: nothing to hold
            yield
            return
        os.dup2(held.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            with contextlib.suppress(ValueError, OSError):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            if not failed:
                held.seek(0)
                with contextlib.suppress(OSError), open(2, "wb", closefd=False) as out:
                    shutil.copyfileobj(held, out)
