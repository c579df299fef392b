"""Tensor data: an ``.npz`` or ``.safetensors`` file holding inputs (N, ...) and targets (N, ...).

The arrays are named by ``--inputs-key`` (default ``inputs``) and ``--targets-key`` (default
``targets``); item i is ``(inputs[i], targets[i])``, of any shape: images (N, C, H, W) with
class ids (N,) or masks (N, H, W), regression targets, multi-label (N, K). Both files are read
a block of items at a time, memory-mapped (`arrays`): memory stays flat however many items the
file holds. Under torchrun each process takes a contiguous range of items.

What the models get: uint8 inputs stay uint8 until the batch is on the device, where they are
converted to the run's precision (values kept, 0..255: a model that wants [0, 1] divides by
255 itself); other floating-point or bool inputs become the run's precision here; other
integers become int64 (ids for an ``Embedding``). Targets keep their type (unsigned types
torch lacks become int64). Non-finite floating-point values are refused, item and key named.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from evalloss.errors import DataError
from evalloss.sources import arrays
from evalloss.sources.arrays import Array
from evalloss.sources.base import Block, Gather, OneFile

if TYPE_CHECKING:
    import torch

    from evalloss.options import Options

SUFFIXES = (".npz", ".safetensors")
BLOCK_BYTES = 32 << 20  # inputs read per block, about (whole batches)
MAX_BLOCK_ITEMS = 65_536


def accepts(path: str, options: Options) -> bool:
    return path.lower().endswith(SUFFIXES)


def open_source(path: str, options: Options) -> TensorFile:
    """Find both arrays and check they hold the same number of items."""
    keys = (options.inputs_key, options.targets_key)
    if path.lower().endswith(".npz"):
        found = arrays.npz_arrays(path, keys)
    else:
        found = arrays.safetensors_arrays(path, keys)
    x, y = found[keys[0]], found[keys[1]]
    for array in (x, y):
        if not array.shape:
            raise DataError("one number, not items: expected (N, ...)", path=path, key=array.key)
    if x.shape[0] != y.shape[0]:
        raise DataError(
            f"{y.shape[0]} items, but {x.key} has {x.shape[0]}: item i is "
            f"({x.key}[i], {y.key}[i])",
            path=path,
            key=y.key,
        )
    if x.shape[0] == 0:
        raise DataError("no items", path=path, key=x.key)
    return TensorFile(path, x, y, options.checksum, targets=(y.key,), features=(x.key,))


@dataclass(frozen=True)
class TensorFile(OneFile):
    """An ``.npz`` or ``.safetensors`` file opened: its two arrays, nothing read yet."""

    path: str
    x: Array  # the inputs
    y: Array  # the targets
    checksum: bool = True
    targets: tuple[str, ...] = ("targets",)
    features: tuple[str, ...] = ("inputs",)
    batch: int = 0  # items per forward pass (`for_pass`): blocks hold whole batches

    @property
    def item_shape(self) -> tuple[int, ...]:
        return self.x.shape[1:]

    def for_pass(self, batch_size: int, device: torch.device) -> TensorFile:
        sized = replace(self, batch=batch_size)
        object.__setattr__(sized, "_opened", self.opened)  # as opened, not as now
        return sized

    def blocks(
        self, dtype: torch.dtype, *, rank: int = 0, world: int = 1, gather: Gather | None = None
    ) -> Iterator[Block]:
        """Items ``[N r / K, N (r+1) / K)`` for process r of K, whole batches per block."""
        import numpy as np

        n = self.x.shape[0]
        first, last = n * rank // world, n * (rank + 1) // world
        row_bytes = max(1, int(np.prod(self.x.shape[1:], dtype=np.int64)) * 4)
        step = max(1, min(MAX_BLOCK_ITEMS, BLOCK_BYTES // row_bytes))
        if self.batch:
            step = max(self.batch, step // self.batch * self.batch)
        for start in range(first, last, step):
            end = min(start + step, last)
            x, y = self._read(self.x, start, end), self._read(self.y, start, end)
            block = Block(start, as_inputs(x, dtype), as_targets(y), locator=start)
            for values, key in ((block.inputs, self.x.key), (block.targets, self.y.key)):
                bad = first_nonfinite(values)
                if bad is not None:
                    raise self.at(block, bad, key)
            yield block

    def _read(self, array: Array, start: int, end: int) -> torch.Tensor:
        import torch

        if array.offset >= 0:
            values = arrays.npz_read(self.path, array, start, end)
            if values.dtype.kind == "u" and values.dtype.itemsize > 1:
                values = values.astype("int64")  # torch's uint16/32/64 do little
            return torch.from_numpy(values)
        tensor = arrays.safetensors_read(self.path, array.key, start, end)
        if tensor.dtype in (torch.uint16, torch.uint32, torch.uint64):
            tensor = tensor.to(torch.int64)
        return tensor

    def at(self, block: Block, index: int, column: str, why: str | None = None) -> DataError:
        return DataError(
            f"item {block.row + index + 1}: {why or 'value is not finite'}",
            path=self.path,
            key=column,
        )

    def bad_target(self, block: Block, index: int, column: int, why: str) -> DataError:
        return DataError(located(block, index, column, why), path=self.path, key=self.y.key)


def located(block: Block, index: int, element: int, why: str) -> str:
    """``item 7 at (3, 4): why: 21``: the item (1-based), the element's position in its
    targets (where an item has more than one) and the value there."""
    import numpy as np

    targets = block.targets[index]
    value = targets.reshape(-1)[element].item()
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    where = ""
    if targets.numel() > 1:
        where = f" at {tuple(int(i) for i in np.unravel_index(element, tuple(targets.shape)))}"
    return f"item {block.row + index + 1}{where}: {why}: {value!r}"


def as_inputs(x: Any, dtype: torch.dtype) -> Any:
    """A batch's inputs as the models take them (a dict: each value): uint8 kept (converted
    on the device), floating-point and bool in ``dtype``, other integers as int64."""
    import torch

    if isinstance(x, dict):
        return {k: as_inputs(v, dtype) for k, v in x.items()}
    if x.dtype == torch.uint8:
        return x
    if x.is_floating_point() or x.dtype == torch.bool:
        return x.to(dtype)
    return x.to(torch.int64)


def as_targets(y: torch.Tensor) -> torch.Tensor:
    """A batch's targets in their own type (bool as uint8)."""
    import torch

    return y.to(torch.uint8) if y.dtype == torch.bool else y


def first_nonfinite(values: Any) -> int | None:
    """The first item (index) holding a NaN or infinity, else None."""
    import torch

    if isinstance(values, dict):
        found = [i for i in map(first_nonfinite, values.values()) if i is not None]
        return min(found, default=None)
    if not values.is_floating_point() or values.numel() == 0:
        return None
    if bool(torch.isfinite(values.sum())):  # 30x faster; a NaN or inf makes the sum one
        return None  # (an overflowing sum of finite values falls through to the full check)
    bad = ~torch.isfinite(values).reshape(len(values), -1).all(dim=1)
    return int(torch.nonzero(bad)[0][0]) if bool(bad.any()) else None
