"""Where the arrays of a tensor file lie, and reading a range of items from one.

An ``.npz`` is a zip of ``.npy`` files. A member that is stored (not compressed) is the
``.npy`` bytes themselves: its header gives dtype and shape, and the data that follows is
memory-mapped from the zip at its offset (``np.load(mmap_mode=...)`` cannot map an ``.npz``).
Compressed members (``np.savez_compressed``) are refused: reading them means inflating the
whole member, which is not a memory-mapped read. Nothing is ever unpickled: an array of
Python objects (a pickled ``.npy``) is refused by its header, before any of it is read.

A ``.safetensors`` file is read through ``safetensors.safe_open``: a slice of items at a time.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalloss.errors import DataError, shown

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

_LOCAL_HEADER = 30  # bytes of a zip local file header before its name and extra field
# numpy dtype kinds torch can take: bool, signed and unsigned integers, floats
_KINDS = "biuf"


@dataclass(frozen=True)
class Array:
    """One array of a tensor file: its name, element type, shape and (``.npz``) the byte
    offset of its data in the file."""

    key: str
    dtype: str  # numpy's name (uint8, float32, ...); bfloat16 for a safetensors BF16
    shape: tuple[int, ...]
    offset: int = -1  # .npz: where the C-ordered data starts in the file
    stored: str = ""  # .npz: the dtype as stored, with its byte order ('<f4', '>i8')


def npz_arrays(path: str, keys: Sequence[str]) -> dict[str, Array]:
    """The arrays ``keys`` of an ``.npz``, checked: present, stored, numeric, C-ordered,
    whole; every problem one `DataError` naming the file and the key."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            infos = {i.filename.removesuffix(".npy"): i for i in archive.infolist()}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise DataError(f"not a readable .npz (zip) file ({exc})", path=path) from exc
    found = {}
    for key in keys:
        info = infos.get(key)
        if info is None:
            names = ", ".join(shown(k, 40) for k in sorted(infos)[:20]) or "none"
            raise DataError(f"no such array; arrays are: {names}", path=path, key=key)
        if info.compress_type != zipfile.ZIP_STORED:
            raise DataError(
                "the array is compressed (np.savez_compressed): tensor data is memory-mapped, "
                "which needs stored arrays; save it with np.savez",
                path=path,
                key=key,
            )
        if info.flag_bits & 1:
            raise DataError("the array is encrypted", path=path, key=key)
        found[key] = _npy(path, key, info.header_offset, info.file_size)
    return found


def _npy(path: str, key: str, header_offset: int, size: int) -> Array:
    """The ``.npy`` header of a stored member: dtype, shape, where its data starts."""
    import numpy as np

    with open(path, "rb") as f:
        f.seek(header_offset)
        local = f.read(_LOCAL_HEADER)
        if len(local) < _LOCAL_HEADER or local[:4] != b"PK\x03\x04":
            raise DataError("truncated or damaged zip entry", path=path, key=key)
        name, extra = struct.unpack("<HH", local[26:30])
        start = header_offset + _LOCAL_HEADER + name + extra
        f.seek(start)
        try:
            version = np.lib.format.read_magic(f)
            read = (
                np.lib.format.read_array_header_1_0
                if version == (1, 0)
                else np.lib.format.read_array_header_2_0
            )
            shape, fortran, dtype = read(f)
        except (ValueError, OSError, SyntaxError) as exc:
            raise DataError(f"not a valid .npy array ({exc})", path=path, key=key) from exc
        data = f.tell()
    _check_dtype(path, key, dtype)
    if fortran and len(shape) > 1:
        raise DataError(
            "stored in Fortran order (not C-contiguous): items are not contiguous; save "
            "np.ascontiguousarray(array)",
            path=path,
            key=key,
        )
    needed = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    held = min(start + size, Path(path).stat().st_size) - data
    if needed > held:
        raise DataError(
            f"truncated: shape {tuple(shape)} of {dtype} needs {needed} bytes, the file holds "
            f"{max(held, 0)}",
            path=path,
            key=key,
        )
    return Array(key, dtype.newbyteorder("=").name, tuple(shape), data, dtype.str)


def _check_dtype(path: str, key: str, dtype: Any) -> None:
    if dtype.hasobject:
        raise DataError(
            "holds Python objects (dtype object, a pickled .npy): evalloss never unpickles "
            "data; store numbers",
            path=path,
            key=key,
        )
    if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in _KINDS:
        raise DataError(
            f"dtype {shown(str(dtype), 40)} is not numbers torch can take (bool, integers, "
            "floats)",
            path=path,
            key=key,
        )


def npz_read(path: str, array: Array, start: int, end: int) -> Any:
    """Items ``start`` to ``end`` of ``array``, memory-mapped for the copy only (the map is
    dropped after, so memory stays flat however large the file)."""
    import numpy as np

    row = int(np.prod(array.shape[1:], dtype=np.int64)) * np.dtype(array.dtype).itemsize
    if end <= start:
        return np.empty((0, *array.shape[1:]), dtype=array.dtype)
    offset = array.offset + start * row
    mapped = np.memmap(path, dtype=np.dtype(array.stored), mode="r", offset=offset,
                       shape=(end - start, *array.shape[1:]))  # fmt: skip
    items = np.array(mapped, dtype=array.dtype)  # a copy, in native byte order
    del mapped  # unmapped now: the pages it touched leave this process
    return items


_SAFETENSORS_DTYPES = {
    "BOOL": "bool", "U8": "uint8", "I8": "int8", "I16": "int16", "U16": "uint16",
    "I32": "int32", "U32": "uint32", "I64": "int64", "U64": "uint64",
    "F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64",
}  # fmt: skip


def safetensors_arrays(path: str, keys: Sequence[str]) -> dict[str, Array]:
    """The tensors ``keys`` of a ``.safetensors`` file: present, of a numeric dtype."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            names = set(f.keys())
            found = {}
            for key in keys:
                if key not in names:
                    listed = ", ".join(shown(k, 40) for k in sorted(names)[:20]) or "none"
                    raise DataError(f"no such tensor; tensors are: {listed}", path=path, key=key)
                sliced = f.get_slice(key)
                kind = str(sliced.get_dtype())
                if kind not in _SAFETENSORS_DTYPES:
                    why = f"dtype {shown(kind, 20)} is not supported"
                    raise DataError(why, path=path, key=key)
                found[key] = Array(key, _SAFETENSORS_DTYPES[kind], tuple(sliced.get_shape()))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise DataError(f"not a readable safetensors file ({exc})", path=path) from exc
    return found


def safetensors_read(path: str, key: str, start: int, end: int) -> torch.Tensor:
    """Items ``start`` to ``end`` of tensor ``key``: a slice read from the file."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as f:
            return f.get_slice(key)[start:end]  # type: ignore[no-any-return]
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise DataError(f"cannot read it ({exc})", path=path, key=key) from exc
