"""Architectures: a checkpoint's layers spec or the user's ``--model`` -> an ``nn.Module``;
strict state-dict loading.

``--model path/to/file.py:Name`` or ``--model package.module:Name``. The user typed the spec,
so importing it is allowed; nothing read from a checkpoint is ever imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .checkpoints import Checkpoint, load_tensors
from .errors import CheckpointError, EvallossWarning, ModelError
from .layers import KEY

if TYPE_CHECKING:
    import torch
    from torch import nn


def warn_if_unused(spec: str | None, checkpoints: Sequence[Checkpoint]) -> None:
    """``--model`` with checkpoints that all carry their own layers spec goes unused: say so."""
    if spec is not None and all(KEY in c.metadata for c in checkpoints):
        warnings.warn(
            f"--model {spec} is not used: every checkpoint carries its own {KEY} spec",
            EvallossWarning,
            stacklevel=3,
        )


def build(checkpoint: Checkpoint, spec: str | None, kwargs: dict[str, Any]) -> nn.Module:
    """The checkpoint's own ``evalloss.layers`` spec if it has one, else ``--model``."""
    if KEY in checkpoint.metadata:
        return from_layers(checkpoint)
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


def parse_kwargs(text: str | None) -> dict[str, Any]:
    """``--model-kwargs`` JSON -> a dict of keyword arguments."""
    if text is None:
        return {}
    try:
        kwargs = json.loads(text)
    except ValueError as exc:
        raise ModelError(f"not valid JSON: {exc}", key="--model-kwargs") from exc
    if not isinstance(kwargs, dict):
        raise ModelError("must be a JSON object, e.g. '{\"hidden\": 64}'", key="--model-kwargs")
    return kwargs


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
    if not isinstance(module, nn.Module):
        raise ModelError(f"{name} returned {type(module).__name__}, not an nn.Module", key=spec)
    return module


def _import(target: str, spec: str) -> object:
    if target.endswith(".py") or "/" in target or "\\" in target:
        path = Path(target)
        if not path.is_file():
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
        except Exception as exc:
            del sys.modules[module_name]
            raise ModelError(
                f"importing it failed: {type(exc).__name__}: {exc}", path=target
            ) from exc
        return module
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        raise ModelError(f"no module named {exc.name!r}", key=spec) from exc
    except Exception as exc:
        raise ModelError(
            f"importing {target} failed: {type(exc).__name__}: {exc}", key=spec
        ) from exc


def from_layers(checkpoint: Checkpoint) -> nn.Module:
    """Build the checkpoint's ``evalloss.layers`` spec from the allow-list and load it.

    The spec is checked and its shapes compared with the header before any storage exists.
    The file's tensors, cast to the layers' dtypes, replace the ``meta`` ones (``assign``):
    nothing is allocated twice, and ``to_empty``'s meta kernels (which import sympy, half a
    second) are not needed.
    """
    from .layers import build, parse

    module = build(parse(checkpoint.metadata["evalloss.layers"], checkpoint.path), checkpoint.path)
    check_fit(module, checkpoint, "its evalloss.layers spec")
    dtypes = {k: v.dtype for k, v in module.state_dict().items()}
    tensors = {k: t.to(dtypes[k]) for k, t in load_tensors(checkpoint).items()}
    _load(module, tensors, checkpoint.path, assign=True)
    return module


def check_fit(module: nn.Module, checkpoint: Checkpoint, what: str = "the architecture") -> None:
    """Compare the module's state dict with the header's tensors; every bad key in one error."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    found = checkpoint.shapes
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    mismatched = sorted(
        f"{k} (checkpoint {found[k]}, model {expected[k]})"
        for k in set(expected) & set(found)
        if found[k] != expected[k]
    )
    problems = [
        f"{label}: {', '.join(keys)}"
        for label, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatch", mismatched),
        )
        if keys
    ]
    if problems:
        raise CheckpointError(f"does not fit {what}; " + "; ".join(problems), path=checkpoint.path)


def load_strict(module: nn.Module, checkpoint: Checkpoint) -> None:
    """Load the checkpoint's tensors into ``module``; every bad key named in one error."""
    check_fit(module, checkpoint)
    _load(module, load_tensors(checkpoint), checkpoint.path)


def _load(
    module: nn.Module, tensors: dict[str, torch.Tensor], path: str, assign: bool = False
) -> None:
    try:
        module.load_state_dict(tensors, strict=True, assign=assign)
    except RuntimeError as exc:  # e.g. a dtype torch cannot copy
        raise CheckpointError(f"cannot load state dict ({exc})", path=path) from exc
