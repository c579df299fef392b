"""Safetensors checkpoints: recognise, refuse, read metadata and tensors. Never runs code.

Only safetensors is read: no pickle, no ``torch.load``, no import of any name found in a file.
A file is recognised by its structure (8-byte little-endian header length, then a JSON
object), not by one magic byte: a valid header of 128+ bytes begins with 0x80, as a pickle
does. Anything else is refused by name (PyTorch zip or pickle, Git LFS pointer). The
safetensors library validates the header; where its message would not help (duplicate
names, offsets, truncation), the header is diagnosed here in plain words.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from evalloss.errors import CheckpointError, EvallossWarning, shown
from evalloss.io import remote
from evalloss.io.files import stamp

if TYPE_CHECKING:
    import torch

HEADER_CAP = 100_000_000  # the safetensors library's own limit on the JSON header
_ONLY = "evalloss reads only safetensors files"
_CONVERT = f"{_ONLY} (docs/checkpoints.md shows how to convert one)"
# Element sizes in bits of every dtype the safetensors format names.
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32,
    "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}  # fmt: skip


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint's identity and header: metadata and tensor shapes, no tensor data."""

    path: str
    metadata: dict[str, str] = field(default_factory=dict)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    opened: tuple[int, int] = (0, 0)  # (size, mtime ns) when the header was read
    files: tuple[str, ...] = ()  # a model folder's files that the figure depends on
    config: dict[str, Any] | None = None  # a model folder's config.json
    tokenizer: str | None = None  # a model folder's tokenizer.json
    adapter: Adapter | None = None  # an adapter folder's own part (`peftfolder`)

    @property
    def name(self) -> str:
        return Path(self.path).name if self.config is not None else Path(self.path).stem

    @property
    def paths(self) -> tuple[str, ...]:
        """Every file the model is built from: the file itself, or a folder's files."""
        return self.files or (self.path,)

    @property
    def folders(self) -> dict[str, tuple[str, ...]]:
        """Each model folder the model is built from -> its files: a model folder's own; an
        adapter folder's and its base's (none for a file)."""
        if self.adapter is not None:
            return {self.path: self.adapter.files, **self.adapter.base.folders}
        return {self.path: self.files} if self.files else {}


@dataclass(frozen=True)
class Adapter:
    """An adapter folder's own part (`peftfolder`): its ``adapter_config.json``, its peft type,
    its own files, and the base model folder it adapts (``--base``, else the config's)."""

    config: dict[str, Any]
    peft_type: str
    files: tuple[str, ...]  # adapter_config.json, adapter_model.safetensors, tokenizer.json
    weights: Checkpoint  # adapter_model.safetensors: its header
    base: Checkpoint


def open_file(path: str) -> Checkpoint:
    """Read and validate the header of a safetensors file (or object in storage); refuse
    anything else by name."""
    if remote.is_uri(path):
        return _open_object(path)
    opened = stamp(path)
    raw, data_size = _read_header(path)
    return _checked(path, raw, data_size, opened)


def _open_object(uri: str) -> Checkpoint:
    """A checkpoint in object storage: its header fetched by a ranged read and validated by
    the safetensors library before any tensor is downloaded (`staging`)."""
    from evalloss.models.staging import stand_in

    opened = stamp(uri)
    if opened == (0, 0):
        raise remote.failure(uri, FileNotFoundError(uri), CheckpointError)
    try:  # unbuffered: exactly the length, then exactly the header, no tensor byte
        with remote.open_native(uri, CheckpointError) as f:
            raw, data_size = _header_of(f, opened[0], uri)
    except OSError as exc:
        raise remote.failure(uri, exc, CheckpointError) from exc
    with stand_in(uri, opened, struct.pack("<Q", len(raw)) + raw) as local:
        return _checked(uri, raw, data_size, opened, local)


def _checked(
    path: str, raw: bytes, data_size: int, opened: tuple[int, int], local: str | None = None
) -> Checkpoint:
    """The header parsed and validated (``local``: the file the library validates)."""
    header = _parse_header(raw, path)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise CheckpointError("__metadata__ must be a JSON object of strings", path=path)
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise CheckpointError(
                f"metadata value is {type(value).__name__}, not a string",
                path=path,
                key=key if key.isprintable() and len(key) <= 60 else shown(key),
            )
    _validate(local or path, header, data_size, path)
    shapes = {name: tuple(info["shape"]) for name, info in header.items()}
    return Checkpoint(path=path, metadata=metadata, shapes=shapes, opened=opened)


def load_tensors(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """All tensors of the file; warns (`EvallossWarning`) about NaN or Inf weights."""
    import torch
    from safetensors.torch import load_file

    try:
        if remote.is_uri(checkpoint.path):
            from evalloss.models.staging import staged

            with staged(checkpoint.path, checkpoint.opened) as local:
                tensors = load_file(local, device="cpu")
        else:
            tensors = load_file(checkpoint.path, device="cpu")
    except CheckpointError:
        raise
    except Exception as exc:  # SafetensorError, or a dtype this torch cannot hold, ...
        raise CheckpointError(
            f"cannot load its tensors ({_plain(exc)})", path=checkpoint.path
        ) from exc
    if stamp(checkpoint.path) != checkpoint.opened:  # its header and tensors may not match
        raise CheckpointError(
            "changed while it was being read (its size or modification time); run again once "
            "it is written",
            path=checkpoint.path,
        )
    bad = []
    for name, tensor in sorted(tensors.items()):
        if tensor.is_floating_point() or tensor.is_complex():
            try:  # one-byte floats (float8) in float32: isfinite misses or refuses their NaN
                wide = tensor.to(torch.float32) if tensor.element_size() == 1 else tensor
                count = int((~torch.isfinite(wide)).sum())
            except (RuntimeError, TypeError) as exc:
                raise CheckpointError(
                    f"tensor {shown(name)} has a dtype ({tensor.dtype}) evalloss cannot evaluate",
                    path=checkpoint.path,
                ) from exc
            if count:
                bad.append(f"{name} ({count} of {tensor.numel()} values)")
    if bad:
        warnings.warn(
            f"{checkpoint.path}: NaN or Inf weights in {', '.join(bad)}; "
            "its loss shows what they do",
            EvallossWarning,
            stacklevel=2,
        )
    return tensors


def _read_header(path: str) -> tuple[bytes, int]:
    """The raw JSON header and the size of the data section after it."""
    try:
        mode = Path(path).stat().st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            # a FIFO or device would block or never end: refuse before opening it
            raise CheckpointError("not a regular file", path=path)
        with open(path, "rb") as f:
            return _header_of(f, os.fstat(f.fileno()).st_size, path)
    except IsADirectoryError as exc:
        raise CheckpointError("is a directory, not a checkpoint file", path=path) from exc
    except FileNotFoundError as exc:
        raise CheckpointError("no such file", path=path) from exc
    except PermissionError as exc:
        raise CheckpointError("permission denied", path=path) from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read ({exc.strerror or exc})", path=path) from exc


def _header_of(f: BinaryIO, size: int, path: str) -> tuple[bytes, int]:
    """The raw JSON header of the ``size``-byte file ``f``, and the size of the data after it."""
    head = f.read(8)
    if len(head) < 8:
        raise CheckpointError(f"file is {len(head)} bytes, too short for safetensors; {_ONLY}",
                              path=path)  # fmt: skip
    (length,) = struct.unpack("<Q", head)
    if length > HEADER_CAP or 8 + length > size:
        raise CheckpointError(_what_is_it(head, length, size), path=path)
    return f.read(length), size - 8 - length


def _parse_header(raw: bytes, path: str) -> dict[str, Any]:
    if not raw.lstrip(b" ").startswith(b"{"):
        raise CheckpointError(f"header is not a JSON object; {_ONLY}", path=path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckpointError(
            f"header is not UTF-8 ({exc.reason} at byte {exc.start})", path=path
        ) from exc
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates)
    except _Duplicate as exc:
        raise CheckpointError("the header names it twice", path=path, key=str(exc)) from None
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"header is not valid JSON ({exc}); {_ONLY}", path=path) from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"header is not a JSON object; {_ONLY}", path=path)
    return header


class _Duplicate(Exception):  # noqa: N818 - internal signal
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _Duplicate(shown(key))
        result[key] = value
    return result


def _validate(local: str, header: dict[str, Any], data_size: int, path: str) -> None:
    """The safetensors library's own header validation of ``local`` (the file, or a stand-in
    for an object); its errors said plainly, naming ``path``."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(local, framework="pt") as f:
            f.keys()
    except (SafetensorError, ValueError, RuntimeError, OSError) as exc:
        why = _diagnose(header, data_size) or f"not a valid safetensors file ({_plain(exc)})"
        raise CheckpointError(why, path=path) from exc


def _diagnose(header: dict[str, Any], data_size: int) -> str | None:
    """Say what is wrong with a header the library refused, where its message is cryptic."""
    spans = []
    for name, info in header.items():
        if not isinstance(info, dict):
            return f"tensor {shown(name)}: entry is not a JSON object"
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in DTYPE_BITS:
            return f"tensor {shown(name)}: unknown dtype {shown(dtype)}"
        if not (
            isinstance(shape, list)
            and all(type(d) is int and d >= 0 for d in shape)
            and isinstance(offsets, list)
            and len(offsets) == 2
            and all(type(o) is int and o >= 0 for o in offsets)
            and offsets[0] <= offsets[1]
        ):
            return None  # the library's message says it
        elements = 1
        for d in shape:
            elements *= d
        need = (elements * DTYPE_BITS[dtype] + 7) // 8
        if offsets[1] - offsets[0] != need:
            return (
                f"tensor {shown(name)}: shape {shape} of {dtype} needs {need} bytes, "
                f"its offsets give {offsets[1] - offsets[0]}"
            )
        spans.append((offsets[0], offsets[1], name))
    end = 0
    for start, stop, name in sorted(spans):
        if start < end:
            return f"tensor {shown(name)}: its data overlaps the previous tensor's"
        if start > end:
            return f"tensor {shown(name)}: a gap of {start - end} bytes before its data"
        end = stop
    if end > data_size:
        return f"truncated: the tensors need {end} bytes of data, the file has {data_size}"
    if end < data_size:
        return f"{data_size - end} bytes of trailing data after the last tensor"
    return None


def _what_is_it(head: bytes, length: int, size: int) -> str:
    """Name what a file that is not safetensors looks like."""
    if head.startswith(b"PK\x03\x04"):
        return f"a PyTorch zip checkpoint (torch.save), which can run code when loaded; {_CONVERT}"
    if head[0] == 0x80 and 2 <= head[1] <= 5:
        return f"a pickle file (old torch.save format), which can run code when loaded; {_CONVERT}"
    if head.startswith(b"version "):
        return "a Git LFS pointer, not the checkpoint itself: run `git lfs pull` to fetch it"
    if length > HEADER_CAP:
        return f"header length {length} exceeds the cap of {HEADER_CAP} bytes; {_ONLY}"
    return f"header length {length} runs past the end of the {size}-byte file; {_ONLY}"


def _plain(exc: BaseException) -> str:
    text = str(exc).replace("Error while deserializing header: ", "")
    return text if len(text) <= 200 else text[:197] + "..."
