"""The user's own code, named on the command line: ``path/to/file.py:Name`` or
``package.module:Name`` (``--model``, and ``--data`` for a data set factory).

The user typed the spec, so importing it is allowed; nothing read from a file (a checkpoint's
``evalloss.model``, a data file) is ever imported. One loader for every option that takes
code; each caller says which error class and option name its mistakes carry.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evalloss.errors import EvallossError

SPEC = re.compile(r"(?P<target>.+):(?P<name>[A-Za-z_]\w*)")
MODULE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def is_spec(text: str) -> bool:
    """``text`` reads as ``file.py:Name`` or ``package.module:Name`` (not checked further)."""
    match = SPEC.fullmatch(text)
    if match is None:
        return False
    target = match["target"]
    return target.endswith(".py") or MODULE.fullmatch(target) is not None


def load(spec: str, error: type[EvallossError], option: str) -> Callable[..., Any]:
    """Import ``spec``'s module and return its callable ``Name``; every mistake is one
    ``error`` naming the spec (or the file) and ``option``."""
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name.isidentifier():
        raise error("expected path/to/file.py:Name or package.module:Name", key=spec)
    found = getattr(_import(target, spec, error, option), name, None)
    if found is None:
        raise error(f"{target} defines no {name!r}", key=spec)
    if not callable(found):
        raise error(f"{name!r} is not a class or function", key=spec)
    return found  # type: ignore[no-any-return]


def _import(target: str, spec: str, error: type[EvallossError], option: str) -> object:
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target)
        if not is_file(path):
            raise error("no such file", path=target, key=option)
        module_name = f"_evalloss_user_{path.stem}_{abs(hash(path.resolve()))}"
        if module_name in sys.modules:
            return sys.modules[module_name]
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise error("cannot import this file", path=target, key=option)
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            del sys.modules[module_name]
            raise error(f"importing it failed: {failure(exc)}", path=target) from exc
        return module
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        raise error(f"no module named {exc.name!r}", key=spec) from exc
    except (Exception, SystemExit) as exc:
        raise error(f"importing {target} failed: {failure(exc)}", key=spec) from exc


def source_file(spec: str | None) -> str | None:
    """The file a spec's code was imported from (after `load`), if any: an input that no
    output may overwrite, however the spec named it (``pkg.mod:Name`` too)."""
    target = (spec or "").rpartition(":")[0]
    if not target:
        return None
    if target.endswith(".py") or "/" in target or "\\" in target:
        return target if is_file(Path(target)) else None
    module = sys.modules.get(target)
    file = getattr(module, "__file__", None)
    if module is None:  # not imported yet: where the import would find it
        try:
            found = importlib.util.find_spec(target)  # imports the parent packages only
        except (Exception, SystemExit):
            found = None
        file = None if found is None else found.origin
    return file if isinstance(file, str) and is_file(Path(file)) else None


def is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long, a symlink loop
        return False


def failure(exc: BaseException) -> str:
    """What went wrong in the user's code, on one line (a DataLoader worker's error: the
    original exception's last line, not "Caught ... in DataLoader worker process 0")."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) > 1 and "Original Traceback" in str(exc):
        return lines[-1].strip()
    return f"{type(exc).__name__}: {lines[0] if lines else '(no message)'}"
