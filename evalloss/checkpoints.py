"""Safetensors checkpoints: recognise, refuse, read metadata and tensors. Never runs code.

Only safetensors is read: no pickle, no ``torch.load``, no import of any name found in a file.
A file is recognised by its structure (8-byte little-endian header length, then a JSON
object), not by one magic byte: a valid header of 128+ bytes begins with 0x80, as a pickle
does. Anything else is refused by name (PyTorch zip or pickle, Git LFS pointer).
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CheckpointError

if TYPE_CHECKING:
    import torch

HEADER_CAP = 100_000_000  # the safetensors library's own limit on the JSON header
_ONLY = "evalloss reads only safetensors files"


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint's identity and header: metadata and tensor shapes, no tensor data."""

    path: str
    metadata: dict[str, str] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return Path(self.path).stem


def open_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Read and validate the header of a safetensors file; refuse anything else by name."""
    path = os.fspath(path)
    header = _read_header(path)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise CheckpointError("__metadata__ must map strings to strings", path=path)
    shapes: dict[str, tuple[int, ...]] = {}
    for name, info in header.items():
        if not isinstance(info, dict) or not isinstance(info.get("shape"), list):
            raise CheckpointError("tensor entry has no shape", path=path, key=name)
        shapes[name] = tuple(int(d) for d in info["shape"])
    return Checkpoint(path=path, metadata=metadata, shapes=shapes)


def load_tensors(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """All tensors of the file, through the safetensors library (which validates offsets)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(checkpoint.path, device="cpu")
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        raise CheckpointError(
            f"not a valid safetensors file ({exc})", path=checkpoint.path
        ) from exc


def _read_header(path: str) -> dict[str, object]:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(
                    f"file is {len(head)} bytes, too short for safetensors; {_ONLY}", path=path
                )
            (length,) = struct.unpack("<Q", head)
            if length > HEADER_CAP or 8 + length > size:
                raise CheckpointError(_what_is_it(head, f, length, size), path=path)
            raw = f.read(length)
    except IsADirectoryError as exc:
        raise CheckpointError("is a directory, not a checkpoint file", path=path) from exc
    except FileNotFoundError as exc:
        raise CheckpointError("no such file", path=path) from exc
    except PermissionError as exc:
        raise CheckpointError("permission denied", path=path) from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read ({exc.strerror or exc})", path=path) from exc
    if not raw.lstrip(b" ").startswith(b"{"):
        raise CheckpointError(f"header is not a JSON object; {_ONLY}", path=path)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(
            f"header is not valid UTF-8 JSON ({exc}); {_ONLY}", path=path
        ) from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"header is not a JSON object; {_ONLY}", path=path)
    return header


def _what_is_it(head: bytes, f: object, length: int, size: int) -> str:
    """Name what a file that is not safetensors looks like."""
    if head.startswith(b"PK\x03\x04"):
        return f"a PyTorch zip checkpoint (torch.save), which can run code when loaded; {_ONLY}"
    if head[0] == 0x80 and 2 <= head[1] <= 5:
        return f"a pickle file (old torch.save format), which can run code when loaded; {_ONLY}"
    if head.startswith(b"version "):
        return "a Git LFS pointer, not the checkpoint itself: run `git lfs pull` to fetch it"
    if length > HEADER_CAP:
        return f"header length {length} exceeds the cap of {HEADER_CAP} bytes; {_ONLY}"
    return f"header length {length} runs past the end of the {size}-byte file; {_ONLY}"


def save(
    module: torch.nn.Module,
    path: str | os.PathLike[str],
    *,
    loss: str | None = None,
    target: str | Sequence[str] | None = None,
) -> None:
    """Write ``module``'s state dict as safetensors, with evalloss metadata for ``compare``."""
    from safetensors.torch import save_file

    metadata = {"evalloss.model": f"{type(module).__module__}.{type(module).__qualname__}"}
    if loss is not None:
        metadata["evalloss.loss"] = loss
    if target is not None:
        metadata["evalloss.target"] = target if isinstance(target, str) else ",".join(target)
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(tensors, os.fspath(path), metadata=metadata)
