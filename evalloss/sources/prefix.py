"""``--prefix-token``: lm-evaluation-harness's ``loglikelihood_rolling`` convention.

Each document gets one token first and every token of the document is scored, its first one
included (without it the first token of a document is never scored: nothing predicts it).
``auto`` is lm-evaluation-harness's choice (``HFLM.prefix_token_id``): the tokenizer's BOS
token where it has one, else its EOS; ``bos`` and ``eos`` ask for one of them; a number is the
token id itself. The BOS and EOS tokens are those the folder's ``tokenizer_config.json``
declares (``bos_token``, ``eos_token``: text, or an AddedToken's ``content``), else its
``special_tokens_map.json``; read as JSON, never run. A tokenizer that declares neither, a token
the tokenizer does not have, an id outside its vocabulary: one line.

The document's own tokens stay as the tokenizer's post-processor gives them (a BOS-adding
tokenizer under ``bos`` gives BOS twice, as lm-evaluation-harness does), with one rule of
``HFLM.tok_encode`` kept: a document whose text starts with the prefix token's own text is
tokenized without special tokens (`Prefix.marker`).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalloss.errors import DataError, OptionError, shown
from evalloss.losses import ROWS as LOSSES
from evalloss.options import PREFIX_NAMES as NAMES

if TYPE_CHECKING:
    from evalloss.options import Options

OPTION = "--prefix-token"
CONFIGS = ("tokenizer_config.json", "special_tokens_map.json")


@dataclass(frozen=True)
class Prefix:
    """The prefix token: its id, and its text as the tokenizer decodes it (``marker``; None
    without a tokenizer)."""

    id: int
    marker: str | None = None


def of(options: Options, tagged: bool = False) -> Prefix | None:
    """The run's prefix token for documents or text (``tagged``: with class labels, where
    there is none to give): a causal language model's, resolved (`resolve`)."""
    if options.prefix_token is None:
        return None
    row = LOSSES.get(options.loss) if options.loss is not None else None
    if tagged or row is None or not row.per_token:
        raise OptionError("is for causal language models (causal-lm) on documents or text, "
                          "not class labels", key=OPTION)  # fmt: skip
    return resolve(options.prefix_token, options.tokenizer)


def resolve(given: str | None, tokenizer: str | None) -> Prefix | None:
    """The prefix token ``given`` names (`options.prefix_token`'s text) for the
    ``tokenizer.json`` at ``tokenizer`` (None: token ids without a tokenizer, where only an id
    can be given)."""
    if given is None:
        return None
    if tokenizer is None:
        if given in NAMES:
            raise OptionError(f"{given} names a tokenizer's token, and the models have no "
                              "tokenizer.json: give the token id", key=OPTION)  # fmt: skip
        return Prefix(int(given))
    return _resolved(given, tokenizer)


@functools.lru_cache(maxsize=16)
def _resolved(given: str, path: str) -> Prefix:
    """`resolve` with a tokenizer (once per process: the source and the cache key ask)."""
    from evalloss.sources.tokenizer import load

    tokenizer = load(path)
    if given in NAMES:
        found = _declared(Path(path).parent)
        names = ("bos", "eos") if given == "auto" else (given,)
        name = next((n for n in names if found.get(n) is not None), None)
        token = None if name is None else found[name]
        if token is None:
            asked = "BOS or EOS" if given == "auto" else given.upper()
            raise OptionError(f"the tokenizer declares no {asked} token (bos_token, eos_token "
                              f"in {' or '.join(CONFIGS)}): give the token id",
                              path=path, key=OPTION)  # fmt: skip
        ident = tokenizer.token_to_id(token)
        if ident is None:
            raise DataError(f"the {str(name).upper()} token its folder declares, {shown(token)}, "
                            "is not in the tokenizer", path=path, key=OPTION)  # fmt: skip
    else:
        ident = int(given)
        size = tokenizer.get_vocab_size(with_added_tokens=True)
        if ident >= size:
            raise OptionError(f"token id {ident} is outside the tokenizer's vocabulary "
                              f"[0, {size})", path=path, key=OPTION)  # fmt: skip
    return Prefix(int(ident), _decoded(tokenizer, int(ident)))


def _declared(folder: Path) -> dict[str, str | None]:
    """The BOS and EOS tokens the folder's tokenizer config declares (the first file that
    names either)."""
    for name in CONFIGS:
        config = folder / name
        if not config.is_file():
            continue
        try:
            data = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise DataError(f"cannot read it ({type(exc).__name__})", path=str(config),
                            key=OPTION) from exc  # fmt: skip
        found = {n: _content(data.get(f"{n}_token")) for n in ("bos", "eos")} if isinstance(
            data, dict) else {}  # fmt: skip
        if any(v is not None for v in found.values()):
            return found
    return {}


def _content(value: Any) -> str | None:
    """A declared special token: its text, or an AddedToken's ``content``."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _decoded(tokenizer: Any, ident: int) -> str | None:
    """The token's text as lm-evaluation-harness decodes it (special tokens kept)."""
    try:
        return str(tokenizer.decode([ident], skip_special_tokens=False))
    except Exception:  # a decoder that cannot decode it (lm-evaluation-harness would fail)
        return None
