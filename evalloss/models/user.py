"""The user's own architecture: ``--model path/to/file.py:Name`` or ``package.module:Name``.

The user typed the spec, so importing it is allowed; nothing read from a checkpoint is ever
imported (its ``evalloss.model`` is only shown, as a hint).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalloss.errors import ModelError

from .checkpoint import Checkpoint
from .loading import load_strict

if TYPE_CHECKING:
    from torch import nn


def accepts(checkpoint: Checkpoint) -> bool:
    """The last resort: any checkpoint (without ``--model`` it is refused with a hint)."""
    return True


def build(
    checkpoint: Checkpoint, spec: str | None, kwargs: dict[str, Any], wanted: object = None
) -> nn.Module:
    """``--model`` called with ``kwargs``, the checkpoint's tensors loaded strictly."""
    if spec is None:
        raise ModelError(
            "no architecture: the file has no evalloss.layers spec and no --model was given"
            + _model_hint(checkpoint.metadata.get("evalloss.model")),
            path=checkpoint.path,
        )
    module = from_spec(spec, kwargs)
    load_strict(module, checkpoint)
    return module


def _model_hint(name: str | None) -> str:
    """Show the file's ``evalloss.model`` (never imported) as a --model to pass."""
    if name is None:
        return ""
    module, sep, cls = name.partition(":")
    plain = re.fullmatch(r"[A-Za-z_][\w.]*", module) and re.fullmatch(r"[A-Za-z_]\w*", cls)
    if not (sep and plain) or len(name) > 200:
        return f"; its evalloss.model is {name[:200]!r}: pass --model file.py:Name to build it"
    if module.endswith(".py"):
        how = f"--model {name}"
    else:
        stem = module.rsplit(".", 1)[-1]
        how = f"--model {name} (if importable) or --model path/to/{stem}.py:{cls}"
    return f"; it was made by {name} (evalloss.model, never imported): pass {how} to build it"


def from_spec(spec: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """Import ``file.py:Name`` or ``module:Name`` and call it with ``kwargs``."""
    from torch import nn

    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name.isidentifier():
        raise ModelError("expected path/to/file.py:Name or package.module:Name", key=spec)
    factory = getattr(_import(target, spec), name, None)
    if factory is None:
        raise ModelError(f"{target} defines no {name!r}", key=spec)
    if not callable(factory):
        raise ModelError(f"{name!r} is not a class or function", key=spec)
    try:
        module = factory(**(kwargs or {}))
    except TypeError as exc:
        raise ModelError(f"cannot call {name} with --model-kwargs ({exc})", key=spec) from exc
    except (Exception, SystemExit) as exc:  # the user's code failed, or called sys.exit()
        raise ModelError(f"{name}(...) failed: {_failure(exc)}", key=spec) from exc
    if not isinstance(module, nn.Module):
        raise ModelError(f"{name} returned {type(module).__name__}, not an nn.Module", key=spec)
    return module


def _import(target: str, spec: str) -> object:
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target)
        if not _is_file(path):
            raise ModelError("no such file", path=target, key="--model")
        module_name = f"_evalloss_user_{path.stem}_{abs(hash(path.resolve()))}"
        if module_name in sys.modules:
            return sys.modules[module_name]
        loader_spec = importlib.util.spec_from_file_location(module_name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise ModelError("cannot import this file", path=target, key="--model")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[module_name] = module
        try:
            loader_spec.loader.exec_module(module)
        except (Exception, SystemExit) as exc:
            del sys.modules[module_name]
            raise ModelError(f"importing it failed: {_failure(exc)}", path=target) from exc
        return module
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        raise ModelError(f"no module named {exc.name!r}", key=spec) from exc
    except (Exception, SystemExit) as exc:
        raise ModelError(f"importing {target} failed: {_failure(exc)}", key=spec) from exc


def source_file(spec: str | None) -> str | None:
    """The file the user's ``--model`` was imported from (after `from_spec`), if any: an input
    that no output may overwrite, however the spec named it (``pkg.mod:Name`` too)."""
    target = (spec or "").rpartition(":")[0]
    if not target:
        return None
    if target.endswith(".py") or "/" in target or "\\" in target:
        return target if _is_file(Path(target)) else None
    module = sys.modules.get(target)
    file = getattr(module, "__file__", None)
    if module is None:  # not imported yet: where the import would find it
        try:
            found = importlib.util.find_spec(target)  # imports the parent packages only
        except (Exception, SystemExit):
            found = None
        file = None if found is None else found.origin
    return file if isinstance(file, str) and _is_file(Path(file)) else None


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long, a symlink loop
        return False


def _failure(exc: BaseException) -> str:
    """What went wrong in the user's code, on one line."""
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else '(no message)'}"
