"""The user's own architecture: ``--model path/to/file.py:Name`` or ``package.module:Name``.

The user typed the spec, so importing it is allowed; nothing read from a checkpoint is ever
imported (its ``evalloss.model`` is only shown, as a hint).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from evalloss.errors import ModelError
from evalloss.io import usercode
from evalloss.models.checkpoint import Checkpoint
from evalloss.models.loading import load_strict

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

    factory = usercode.load(spec, ModelError, "--model")
    name = spec.rpartition(":")[2]
    try:
        module = factory(**(kwargs or {}))
    except TypeError as exc:
        raise ModelError(f"cannot call {name} with --model-kwargs ({exc})", key=spec) from exc
    except (Exception, SystemExit) as exc:  # the user's code failed, or called sys.exit()
        raise ModelError(f"{name}(...) failed: {usercode.failure(exc)}", key=spec) from exc
    if not isinstance(module, nn.Module):
        raise ModelError(f"{name} returned {type(module).__name__}, not an nn.Module", key=spec)
    return module


source_file = usercode.source_file  # the file --model was imported from
