"""Defaults from the project: ``[tool.evalloss]`` in ``pyproject.toml`` (found from the working
directory upwards, as black, ruff and pytest find theirs) or ``--config FILE``, then
``EVALLOSS_<OPTION>`` environment variables; the command line overrides them all.

A key is an option's long name (``batch-size`` or ``batch_size``); keys at the top apply to
every command that has the option, a ``[tool.evalloss.compare]`` table to one command. Each
value is checked as the option's own type would check it: an unknown key or a wrong type is
one exit-2 line naming the file, the key and its line. `settings` says what is in force and
where each value came from (``evalloss config``).
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from evalloss.errors import OptionError, shown

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENV_PREFIX = "EVALLOSS_"


@dataclass(frozen=True)
class Setting:
    command: str
    name: str  # the option's parameter name (batch_size)
    value: Any  # as the option's type made it
    source: str  # "path/to/pyproject.toml", "EVALLOSS_LOSS"
    option: str = ""  # as the command line spells it (--batch-size)
    given: Any = None  # as the file or the variable gave it


def find(start: Path) -> Path | None:
    """The first ``pyproject.toml`` with a ``[tool.evalloss]`` table, from ``start`` up. One
    that cannot be read or parsed but names evalloss is an error, never passed over: the
    defaults it holds (a gate among them) would silently not apply."""
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if not candidate.is_file():
            continue
        try:
            table = _read(candidate, key=None)
        except OptionError:
            if _mentions_evalloss(candidate):
                raise
            continue
        if "evalloss" in table.get("tool", {}):
            return candidate
    return None


def _mentions_evalloss(path: Path) -> bool:
    try:
        return b"evalloss" in path.read_bytes()
    except OSError:
        return True  # it may: say why it cannot be read


def settings(commands: Mapping[str, click.Command], config: str | None) -> list[Setting]:
    """Every default in force, command by command, in the order they apply: the file's keys
    for every command, its command tables, then the environment's."""
    path = Path(config) if config else find(Path.cwd())
    found: list[Setting] = []
    if path is not None:
        table = _read(path, key="--config" if config else None)
        if not config:
            table = table.get("tool", {}).get("evalloss", {})
        found += _from_file(table, commands, path)
    for command, cmd in commands.items():
        for key, param in _options(cmd).items():
            variable = ENV_PREFIX + key.upper()
            if variable in os.environ:
                raw = os.environ[variable]
                value = _check(param, raw, variable, None, None)
                found.append(
                    Setting(command, str(param.name), value, variable, param.opts[-1], raw)
                )
    return found


def default_map(found: list[Setting]) -> dict[str, dict[str, Any]]:
    """click's ``default_map``: a later setting over an earlier one."""
    out: dict[str, dict[str, Any]] = {}
    for setting in found:
        out.setdefault(setting.command, {})[setting.name] = setting.value
    return out


def _from_file(
    table: Mapping[str, Any], commands: Mapping[str, click.Command], path: Path
) -> list[Setting]:
    shared, own = [], []
    for key, value in table.items():
        if key in commands:
            if not isinstance(value, dict):
                raise OptionError("must be a table of options", path=path, key=key)
            own += [_one(commands[key], key, name, item, path) for name, item in value.items()]
            continue
        owners = [c for c, cmd in commands.items() if _key(key) in _options(cmd)]
        if not owners:
            raise _unknown(path, key, commands)
        shared += [_one(commands[c], c, key, value, path) for c in owners]
    return shared + own  # a command's own table over the keys for every command


def _one(cmd: click.Command, command: str, key: str, value: Any, path: Path) -> Setting:
    param = _options(cmd).get(_key(key))
    if param is None:
        raise _unknown(path, f"{command}.{key}", {command: cmd})
    checked = _check(param, value, key, path, _line(path, key))
    return Setting(command, str(param.name), checked, str(path), param.opts[-1], value)


def _check(param: click.Option, value: Any, key: str, path: Path | None, line: int | None) -> Any:
    """The value as the option's type takes it; a wrong one is an `OptionError`. A TOML value
    is taken as the command line would take its text, never coerced: a boolean or a fraction
    is no integer (``batch-size = true`` is not 1), a boolean no number."""
    if not param.multiple and isinstance(value, list):
        raise OptionError("expected one value, not a list", path=path, line=line, key=key)
    try:
        if path is not None and not param.is_flag:
            for v in value if isinstance(value, list) else [value]:
                _typed(param, v)
        if param.is_flag:
            if isinstance(value, str) and path is None:  # from the environment
                return click.BOOL.convert(value, param, None)
            if not isinstance(value, bool):
                raise click.BadParameter(f"expected true or false, got {shown(value)}")
            return value
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, (dict, list)) for v in values):
            raise click.BadParameter(f"expected a value, got {shown(value)}")
        converted = [param.type.convert(v, param, None) for v in values]
    except click.BadParameter as exc:
        raise OptionError(exc.message, path=path, line=line, key=key) from None
    return tuple(converted) if param.multiple else converted[0]


def _typed(param: click.Option, value: Any) -> None:
    """Refuse what click's number types would coerce from a TOML value: ``True`` to 1, 2.5
    to 2 for an integer option; a boolean for a number; a table anywhere."""
    kind = param.type
    integer = isinstance(kind, click.types.IntParamType)
    number = integer or isinstance(kind, click.types.FloatParamType)
    if isinstance(value, bool) and (number or not isinstance(kind, click.types.BoolParamType)):
        raise click.BadParameter(f"expected {_what(param)}, got {str(value).lower()}")
    if integer and isinstance(value, float):
        raise click.BadParameter(f"expected an integer, got {value!r}")


def _what(param: click.Option) -> str:
    kind = param.type
    if isinstance(kind, click.types.IntParamType):
        return "an integer"
    if isinstance(kind, click.types.FloatParamType):
        return "a number"
    return "a value as the command line takes it"


def _options(cmd: click.Command) -> dict[str, click.Option]:
    """A command's options by long name, underscored (``batch_size`` for ``--batch-size``)."""
    return {
        p.opts[-1].lstrip("-").replace("-", "_"): p
        for p in cmd.params
        if isinstance(p, click.Option) and p.opts[-1].startswith("--")
    }


def _key(key: str) -> str:
    return key.replace("-", "_")


def _line(path: Path, key: str) -> int | None:
    """The line that sets ``key`` (tomllib gives no positions for keys)."""
    pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if pattern.match(text):
            return number
    return None


def _unknown(path: Path, key: str, commands: Mapping[str, click.Command]) -> OptionError:
    known = sorted({k.replace("_", "-") for c in commands.values() for k in _options(c)})
    line = _line(path, key.split(".")[-1])
    return OptionError(f"unknown option; known: {', '.join(known)}", path=path, line=line, key=key)


def _read(path: Path, *, key: str | None) -> dict[str, Any]:
    """The file as TOML; one that cannot be read, is not UTF-8 or is not TOML is one
    `OptionError` naming the file and, where the parser says, the line. A FIFO or a device is
    refused unopened (reading one could block for ever)."""
    try:
        if path.exists() and not path.is_file():
            raise OptionError("not a regular file", path=path, key=key)
        raw = path.read_bytes()
    except OSError as exc:
        raise OptionError(f"cannot read it ({exc.strerror or type(exc).__name__})",
                          path=path, key=key) from exc  # fmt: skip
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise OptionError(f"not UTF-8 text (byte 0x{raw[exc.start]:02x}): TOML is UTF-8",
                          path=path, line=line, key=key) from exc  # fmt: skip
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"\s*\(at line (\d+), column \d+\)$", str(exc))
        why = str(exc)[: found.start()] if found else str(exc)
        raise OptionError(f"cannot read it as TOML ({why})", path=path,
                          line=int(found[1]) if found else None, key=key) from exc  # fmt: skip
