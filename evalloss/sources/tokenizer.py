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
    """Each document's token ids, special tokens included (unless not ``special``): one
    batch, every core. ``path`` names the tokenizer, ``data`` and ``first`` (0-based) the
    documents, for the error."""
    import numpy as np

    try:
        with _stderr_held():
            encoded = tokenizer.encode_batch_fast(texts, add_special_tokens=special)
    except BaseException as exc:
        if not (isinstance(exc, Exception) or panicked(exc)):
            raise
        what = "panicked" if panicked(exc) else "failed"
        raise DataError(f"the tokenizer {what} on documents {first + 1}-{first + len(texts)} "
                        f"of {data} ({_first(exc)}): a regex in it that backtracks without "
                        "end? The tokenizer cannot be used", path=path) from exc  # fmt: skip
    return [np.asarray(e.ids, dtype=np.int64) for e in encoded]


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
