"""JSON Lines read exactly, line by line, where pyarrow's fast reader cannot say where.

pyarrow skips blank lines and counts its rows from 0 within each block it parses, and says
"no list-of-integers column" of a column whose first block held a float. So a bad record is
found again here, after pyarrow failed, with Python's own parser: the first line that is not
JSON, not an object, or whose value does not fit its column (`diagnose`), named by its 1-based
line and shown as written (``1.5``, ``NaN``, ``true``, ``"7"``); and a record's line from its
row (`line_of`), blank lines skipped as pyarrow skips them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from evalloss.errors import DataError, shown

IDS = "token ids"  # a list of non-negative integers
LABELS = "labels"  # a list of integers (-100: not scored)
TEXT = "text"  # a string
VALUE = "value"  # a slice value: a string, number or boolean, of one kind in every line
INT64_MAX = (1 << 63) - 1
SHOWN = 60  # characters of a value shown


class _Written(str):
    """A number or constant as the line wrote it (``1.5``, ``1e3``, ``NaN``)."""


def _loads(text: str) -> Any:
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for k, v in items:
            if k in found:
                raise ValueError(f"key {shown(k, 40)} is given twice")
            found[k] = v
        return found

    return json.loads(text, parse_float=_Written, parse_constant=_Written,
                      object_pairs_hook=pairs)  # fmt: skip


def written(value: Any) -> str:
    """A parsed JSON value as the line wrote it (ASCII, cut to about `SHOWN` characters)."""
    if isinstance(value, _Written):
        text = str(value)
    elif isinstance(value, bool) or value is None:
        text = json.dumps(value)
    elif isinstance(value, list):
        text = "[" + ", ".join(written(v) for v in value[:20]) + (", ...]" if len(value) > 20
                                                                  else "]")  # fmt: skip
    elif isinstance(value, dict):
        text = "{" + ", ".join(f"{json.dumps(k)}: {written(v)}" for k, v in
                               list(value.items())[:10]) + "}"  # fmt: skip
    else:
        text = json.dumps(value)
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


def records(path: str) -> Iterator[tuple[int, bytes]]:
    """(1-based line, bytes) of every record: every line but the blank ones."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            if raw.strip(b" \t\r\n"):
                yield number, raw


def line_of(path: str, row: int) -> int | None:
    """The 1-based line of record ``row`` (0-based, blank lines not counted), if it is there."""
    try:
        for i, (number, _) in enumerate(records(path)):
            if i == row:
                return number
    except OSError:
        return None
    return None


def diagnose(path: str, wanted: Mapping[str, str]) -> DataError | None:
    """The first line that is not a JSON object or whose value of a ``wanted`` column (name
    -> `IDS`, `LABELS`, `TEXT` or `VALUE`) does not fit; None if every line fits."""
    kinds: dict[str, tuple[str, int]] = {}  # each key's JSON kind, and its first line
    try:
        for number, raw in records(path):
            problem = _line_problem(raw, number == 1, wanted, kinds, number)
            if problem is not None:
                why, key = problem
                return DataError(why, path=path, line=number, key=key)
    except OSError as exc:
        return DataError(f"cannot read it ({exc.strerror or exc})", path=path)
    return None


def _line_problem(raw: bytes, first: bool, wanted: Mapping[str, str],
                  kinds: dict[str, tuple[str, int]], number: int
                  ) -> tuple[str, str | None] | None:  # fmt: skip
    """(what is wrong, the column) with one line, or None."""
    try:
        text = raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as exc:
        byte = shown(raw[exc.start : exc.start + 1])
        return f"not UTF-8 text (byte {byte} at column {exc.start + 1})", None
    try:
        record = _loads(text.rstrip("\r\n"))
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg} at column {exc.colno})", None
    except (ValueError, RecursionError) as exc:
        return f"not JSON Lines ({str(exc)[:80]})", None
    if not isinstance(record, dict):
        kind = _kind(record)
        return f"a JSON {kind}, not an object: each line is one record, {{\"key\": value}}", None
    for name, rule in wanted.items():
        why = _value_problem(record, name, rule)
        if why is not None:
            return why, name
    for name, value in record.items():  # pyarrow wants one kind of value per key
        kind = _kind(value)
        seen = kinds.setdefault(name, (kind, number))
        if "null" not in (kind, seen[0]) and seen[0] != kind:
            return f"{written(value)} is a{'n' * (kind[0] in 'ao')} {kind}; line {seen[1]} has " \
                   f"a{'n' * (seen[0][0] in 'ao')} {seen[0]}", name  # fmt: skip
        if seen[0] == "null":
            kinds[name] = (kind, number)
    return None


def first_keys(path: str) -> list[str] | None:
    """The keys of the first record, where it is a JSON object (None: it is not, or none)."""
    try:
        for _, raw in records(path):
            record = _loads(raw.decode("utf-8-sig"))
            return list(record) if isinstance(record, dict) else None
    except (OSError, ValueError, RecursionError):
        return None
    return None


def _value_problem(record: dict[str, Any], name: str, rule: str) -> str | None:
    value = record.get(name)
    if rule == VALUE:
        if _kind(value) in ("array", "object"):
            return f"a slice value is a string, number or boolean, not {written(value)}"
        return None
    if rule == TEXT:
        if value is None:
            return "no text (" + ("null)" if name in record else "no such key)")
        if isinstance(value, str) and not isinstance(value, _Written):
            return None
        return f"text must be a string, not {written(value)}"
    if value is None:
        return "no token list (" + ("null)" if name in record else "no such key)")
    if not isinstance(value, list):
        return f"token ids must be a list of integers, not {written(value)}"
    for index, token in enumerate(value):
        why = _token_problem(token, rule)
        if why is not None:
            return f"token {index}: {why}"
    return None


def _token_problem(token: Any, rule: str) -> str | None:
    if isinstance(token, bool) or not isinstance(token, int):
        return f"{written(token)} is not an integer"
    if token > INT64_MAX or token < -INT64_MAX - 1:
        return f"token id {token} is past the int64 range"
    if rule == IDS and token < 0:
        return f"negative token id {token}"
    return None


def _kind(value: Any) -> str:
    """A value's JSON kind: object, array, string, number, boolean, null."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, _Written | int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "null"
