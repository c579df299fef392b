"""`evalloss.save`: a training script's module -> a safetensors file ``compare`` can read alone.

An ``nn.Sequential`` of allow-listed layers gets an ``evalloss.layers`` spec; any other module
gets ``evalloss.model``, the import path of its class (shown, never imported). Metadata keys are
sorted, so a save is byte-for-byte repeatable; the file is written atomically (`files.atomic`).
"""

from __future__ import annotations

import json
import os
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from evalloss.errors import OptionError
from evalloss.io.files import atomic

if TYPE_CHECKING:
    import torch


def save(
    module: torch.nn.Module,
    path: str | os.PathLike[str],
    *,
    loss: str | None = None,
    target: str | Sequence[str] | None = None,
) -> None:
    """Write ``module``'s state dict as safetensors, with evalloss metadata for ``compare``.

    An ``nn.Sequential`` of allow-listed layers gets an ``evalloss.layers`` spec, so
    ``compare`` needs no ``--model``; any other module gets ``evalloss.model``, the import
    path of its class (shown to users, never imported). The file is written atomically.
    """
    from safetensors.torch import save as to_bytes

    from evalloss.losses import row
    from evalloss.models.layers import describe

    if loss is not None:
        row(loss, key="loss")  # a name of the loss table, or a LossError naming them
    metadata: dict[str, str] = {}
    spec = describe(module)
    if spec is not None:
        metadata["evalloss.layers"] = spec
    else:
        metadata["evalloss.model"] = _import_path(type(module))
    if loss is not None:
        metadata["evalloss.loss"] = loss
    if target is not None:
        targets = [target] if isinstance(target, str) else list(target)
        if not targets or any("," in t or not t.strip() for t in targets):
            raise OptionError(
                f"target columns must be non-empty names without commas, got {target!r}",
                key="target",
            )
        metadata["evalloss.target"] = ",".join(targets)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()}
    with atomic(path) as tmp:
        tmp.write_bytes(_sorted_metadata(to_bytes(tensors, metadata=metadata)))


def _sorted_metadata(raw: bytes) -> bytes:
    """The same file with its metadata keys sorted, so that a save is byte-for-byte repeatable."""
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)  # keep the data 8-byte aligned, as the library does
    return struct.pack("<Q", len(text)) + text + raw[8 + length :]


def _import_path(cls: type) -> str:
    """``package.module:Class``, or ``script.py:Class`` for a script run directly."""
    if cls.__module__ == "__main__":
        script = getattr(sys.modules.get("__main__"), "__file__", None)
        if script:
            return f"{Path(script).name}:{cls.__qualname__}"
    return f"{cls.__module__}:{cls.__qualname__}"
