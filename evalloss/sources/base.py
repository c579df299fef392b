"""What every data source gives the pass: blocks of items, and errors located in its own terms.

A source reads its file once, front to back (or this process's share of it), as `Block`s of
consecutive items. The pass only slices blocks into batches and hands ``inputs`` to the models
and ``targets`` to the loss; where a value turns out to be bad, it asks the source (`at`) to
name the file, line and column, using the block's ``locator``, which only the source reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import torch

    from evalloss.sources.slicing import Slicing

from evalloss.errors import DataError
from evalloss.io.files import stamp

Gather = Callable[[Any], list[Any]]  # every process's value, in rank order (`World.gather`)


@dataclass(frozen=True)
class Block:
    """Consecutive items. ``row``: 0-based index of the first one among the rows this reader
    yields (the data set's index at world size 1). ``inputs``: what the models take, batch
    first: one tensor, or a dict of tensors for models with several inputs. ``targets``: what
    the loss takes with the outputs, batch first. ``groups``: per-item keys of slices, if any.
    ``locator``: where the block came from, for the source's error messages (a CSV block's
    byte offset); nobody else reads it. ``items``: where an item takes several rows (the
    windows of a long document), each row's item, consecutive; the pass joins them."""

    row: int
    inputs: torch.Tensor | dict[str, torch.Tensor]
    targets: torch.Tensor
    groups: dict[str, Any] | None = None
    locator: Any = None
    items: npt.NDArray[np.int64] | None = None  # per row, its item where items span rows

    def __len__(self) -> int:
        return len(self.targets)

    def input_rows(self, start: int, end: int) -> torch.Tensor | dict[str, torch.Tensor]:
        """The inputs of items ``start`` to ``end``, contiguous: a view of a contiguous block,
        else a copy of the batch (a tabular block holds its columns side by side: one batch
        transposed while it is in the caches costs a third of the whole block at once)."""
        if isinstance(self.inputs, dict):
            return {k: v[start:end].contiguous() for k, v in self.inputs.items()}
        return self.inputs[start:end].contiguous()

    def pinned(self) -> Block:
        """The block contiguous in pinned memory, for non-blocking copies to a GPU."""
        inputs = self.inputs
        if isinstance(inputs, dict):
            inputs = {k: v.contiguous().pin_memory() for k, v in inputs.items()}
        else:
            inputs = inputs.contiguous().pin_memory()
        return replace(self, inputs=inputs, targets=self.targets.contiguous().pin_memory())


class DataSource(Protocol):
    """A data set opened and checked, not yet read. One module per form in `sources`."""

    path: str  # as given: shown in reports and errors
    targets: tuple[str, ...]  # what the targets are called (report, --per-item)
    features: tuple[str, ...]  # what the inputs are called (the report counts them)
    checksum: bool  # hash the bytes while reading them (provenance)

    @property
    def item_shape(self) -> tuple[int, ...] | None:
        """The shape of one item's input (a tabular row: its feature count), if fixed."""
        ...

    @property
    def slicing(self) -> Slicing | None:
        """The ``--slice`` columns, whose codes every block carries (``Block.groups``); None
        where the run is not sliced or the data has no columns to slice by."""
        ...

    def bytes_read(self) -> int | None:
        """The UTF-8 bytes of the documents this process read in its last pass (0 before
        one); None where the data is not text: its items are not weighed by bytes."""
        ...

    def document_bytes(self) -> npt.NDArray[np.int64] | None:
        """Each document's UTF-8 bytes, in the order the last pass read them (text data;
        else None)."""
        ...

    def words_read(self) -> int | None:
        """lm-evaluation-harness's word count of the documents this process read in its
        last pass (text data; else None)."""
        ...

    def for_pass(self, batch_size: int, device: torch.device) -> DataSource:
        """The source set up for a pass of ``batch_size`` items per forward pass on
        ``device``: sources that batch for themselves (a Dataset's ``DataLoader``, whole
        batches per block) take them; the others return themselves (`OneFile`)."""
        ...

    def blocks(
        self, dtype: torch.dtype, *, rank: int = 0, world: int = 1, gather: Gather | None = None
    ) -> Iterator[Block]:
        """This process's share of the items, in blocks, floats in ``dtype``. With ``world``
        > 1 every process calls it at once: ``gather`` lets them agree on how to cut."""
        ...

    def at(self, block: Block, index: int, column: str, why: str | None = None) -> DataError:
        """An error about item ``index`` of ``block`` in ``column``: file, line, value."""
        ...

    def stamp(self) -> tuple[int, int]:
        """(size, modification time in ns) of the data now (`files.stamp`)."""
        ...

    @property
    def opened(self) -> tuple[int, int]:
        """`stamp` when the source was opened: a pass that ends with another read a file
        that changed under it."""
        ...

    def bad_target(self, block: Block, index: int, column: int, why: str) -> DataError:
        """An error about target ``column`` (a target column, or a token position) of item
        ``index`` of ``block``, located in the file."""
        ...

    def sha256(self) -> dict[str, str]:
        """Every file the figures depend on -> its hex sha256 (kept from the pass if it
        hashed while reading, else read now)."""
        ...


def changed(path: str) -> DataError:
    """The error for a data file whose stamp at the end is not the one it was opened with."""
    return DataError("changed while it was being read (its size or modification time): the "
                     "figures would match neither version; run again on a file that stays put",
                     path=path)  # fmt: skip


class Plain:
    """What a source has by default: no fixed item shape, no batching of its own, no slice
    columns, no text (no bytes counted)."""

    @property
    def item_shape(self) -> tuple[int, ...] | None:
        return None

    def for_pass(self, batch_size: int, device: torch.device) -> Any:
        return self

    @property
    def slicing(self) -> Slicing | None:
        return None

    def bytes_read(self) -> int | None:
        return None

    def document_bytes(self) -> npt.NDArray[np.int64] | None:
        return None

    def words_read(self) -> int | None:
        return None


class OneFile(Plain):
    """What a source read from one file shares: the file's stamp when it was opened (a pass
    that ends with another one read a file that changed), its sha256 read on demand, and
    `Plain`'s defaults. For frozen dataclasses with a ``path`` field."""

    path: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "_opened", stamp(self.path))

    @property
    def opened(self) -> tuple[int, int]:
        opened: tuple[int, int] = getattr(self, "_opened", (0, 0))
        return opened

    def stamp(self) -> tuple[int, int]:
        return stamp(self.path)

    def sha256(self) -> dict[str, str]:
        from evalloss.io.hashing import sha256_of

        return {self.path: sha256_of(self.path)}
