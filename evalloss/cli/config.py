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
    """The first ``pyproject.toml`` with a ``[tool.evalloss]`` table, from ``start`` up."""
    for folder in (start, *start.parents):
        candidate = folder / "pyproject.toml"
        if (
            candidate.is_file()
            and "tool" in (table := _read(candidate, quiet=True))
            and ("evalloss" in table["tool"])
        ):
            return candidate
    return None


def settings(commands: Mapping[str, click.Command], config: str | None) -> list[Setting]:
    """Every default in force, command by command, in the order they apply: the file's keys
    for every command, its command tables, then the environment's."""
    path = Path(config) if config else find(Path.cwd())
    found: list[Setting] = []
    if path is not None:
        table = _read(path)
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
    """The value as the option's type takes it; a wrong one is an `OptionError`."""
    if not param.multiple and isinstance(value, list):
        raise OptionError("expected one value, not a list", path=path, line=line, key=key)
    try:
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


def _read(path: Path, *, quiet: bool = False) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        if quiet:
            return {}
        why = exc.strerror if isinstance(exc, OSError) else str(exc)
        raise OptionError(f"cannot read it as TOML ({why})", path=path, key="--config") from exc
