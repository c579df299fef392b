"""Short model names for narrow tables: cut what names share, keep what tells them apart."""

from __future__ import annotations

import re
from collections.abc import Sequence

_ELLIPSIS = "..."  # ASCII: safe on any console encoding
_SEPARATORS = "-_./ "
_WORDS = re.compile(r"([-_./ ])")  # split at a separator, keeping it


def shorten(names: Sequence[str], limit: int | Sequence[int]) -> list[str]:
    """Every name in at most ``limit`` characters (one limit, or one per name), keeping the
    part that tells them apart.

    Names of one experiment share words: whole words every name has in the same place give
    way to "..." first, longest first (``runA/checkpoint-300``, ``runB/checkpoint-300`` ->
    ``runA/...-300``, ``runB/...-300``), so that no word is cut. Where that is not enough, the
    long prefix and suffix they share (``run-lr0.001-bs10-final``, ``run-lr0.001-bs50-final``)
    are cut, at their inner ends, so the distinctive middle survives.
    """
    limits = [limit] * len(names) if isinstance(limit, int) else list(limit)
    if len(names) < 2:
        return [_cut(n, k) for n, k in zip(names, limits, strict=True)]
    elided = _elided(names, limits)
    if elided is not None:
        return elided
    pre, suf = _shared(names)
    out = [_keep_core(n, pre, suf, k) for n, k in zip(names, limits, strict=True)]
    if len(set(out)) == len(set(names)):
        return out
    return [_cut(n, k) for n, k in zip(names, limits, strict=True)]


def _elided(names: Sequence[str], limits: Sequence[int]) -> list[str] | None:
    """``names`` with the words they share, in the same places, elided (the longest first)
    until each fits its limit; None where that is not enough."""
    split = [_WORDS.split(n) for n in names]  # words at even places, separators between
    if len({len(p) for p in split}) > 1:
        return None
    first = split[0]
    shared = [i for i in range(0, len(first), 2)  # words worth eliding, in every name
              if len(first[i]) > len(_ELLIPSIS) and all(p[i] == first[i] for p in split)]
    shared.sort(key=lambda i: -len(first[i]))
    for i in shared:
        if all(len(n) <= k for n, k in zip(names, limits, strict=True)):
            break
        for parts in split:
            parts[i] = _ELLIPSIS
        names = ["".join(p) for p in split]
    return list(names) if all(len(n) <= k for n, k in zip(names, limits, strict=True)) else None


def _keep_core(name: str, pre: int, suf: int, limit: int) -> str:
    """``name`` in ``limit`` characters, cutting its first ``pre`` and last ``suf`` first."""
    if len(name) <= limit:
        return name
    prefix, core, suffix = name[:pre], name[pre : len(name) - suf], name[len(name) - suf :]
    room = limit - len(core)
    dots = len(_ELLIPSIS)
    need = (dots if prefix else 0) + (dots if suffix else 0)
    if room < need:
        return _cut(name, limit)
    # each shared part shows in full, or as its outer end plus "..."
    pre_room = min(len(prefix), max(dots if prefix else 0, room // 2))
    suf_room = min(len(suffix), room - pre_room)
    pre_room = min(len(prefix), room - suf_room)
    if pre_room < len(prefix):
        prefix = prefix[: pre_room - dots] + _ELLIPSIS
    if suf_room < len(suffix):
        suffix = _ELLIPSIS + suffix[len(suffix) - (suf_room - dots) :]
    return prefix + core + suffix


def _shared(names: Sequence[str]) -> tuple[int, int]:
    """Lengths of the prefix and suffix all ``names`` share, ending at a separator."""
    shortest = min(map(len, names))
    pre = _common(names)
    while pre and names[0][pre - 1] not in _SEPARATORS:
        pre -= 1
    suf = _common([n[::-1] for n in names])
    suf = min(suf, shortest - pre)
    while suf and names[0][len(names[0]) - suf] not in _SEPARATORS:
        suf -= 1
    return pre, suf


def _common(names: Sequence[str]) -> int:
    """Length of the prefix every name shares."""
    first = names[0]
    for i, c in enumerate(first):
        if any(i >= len(n) or n[i] != c for n in names):
            return i
    return len(first)


def _cut(name: str, limit: int) -> str:
    """``name`` in at most ``limit`` characters, cut in the middle."""
    if len(name) <= limit:
        return name
    keep = limit - len(_ELLIPSIS)
    head = (keep + 1) // 2
    return name[:head] + _ELLIPSIS + name[len(name) - (keep - head) :]
