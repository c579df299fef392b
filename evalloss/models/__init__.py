"""Model builders: a checkpoint -> an ``nn.Module``, never running code from the file.

`checkpoint` is the trust boundary (safetensors headers and tensors; everything else refused
by name). Each builder module has ``accepts(checkpoint)`` and ``build(checkpoint, spec,
kwargs, wanted)``; the first in `BUILDERS` that accepts a checkpoint builds it: `adapter` (a
PEFT adapter folder over its base, `peftfolder` checks both, `peftload` attaches it; its
`Shelf` keeps one copy of each base for the run), `hf` (a Hugging Face model folder, `folder`
checks it), `layers` (the file's own allow-listed ``evalloss.layers`` spec), then `user` (the
``--model`` the user typed). A new builder is one module here plus one
line in `BUILDERS`. `save` writes files they read.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import TYPE_CHECKING, Any

from evalloss.errors import EvallossWarning
from evalloss.io import remote
from evalloss.models import adapter, hf, layers, user
from evalloss.models.adapter import Shelf
from evalloss.models.checkpoint import Checkpoint, open_file
from evalloss.models.folder import open_folder
from evalloss.models.peftfolder import is_adapter, open_adapter

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["BUILDERS", "Checkpoint", "Shelf", "Wanted", "build", "open_checkpoint", "prepare"]

BUILDERS: tuple[ModuleType, ...] = (adapter, hf, layers, user)  # in order; `user` accepts any


@dataclass(frozen=True)
class Wanted:
    """What a run wants of every module: the loss it is scored with (a folder's head), the
    device and the dtype (a folder's weights are loaded straight into both)."""

    loss: str
    device: torch.device
    dtype: torch.dtype
    shelf: Shelf | None = field(default=None, compare=False)  # the run's shared bases


def open_checkpoint(path: str | os.PathLike[str], base: str | None = None) -> Checkpoint:
    """A checkpoint by its headers alone: a PEFT adapter folder and its base (`peftfolder`;
    ``base``: ``--base``), a Hugging Face model folder (`folder`), else a safetensors file or
    object (`checkpoint`); anything else refused by name."""
    path = os.fspath(path)
    if not remote.is_uri(path) and os.path.isdir(path):  # noqa: PTH112 - False for a long name
        return open_adapter(path, base) if is_adapter(path) else open_folder(path)
    return open_file(path)


def builder_for(checkpoint: Checkpoint) -> ModuleType:
    """The first builder module that accepts ``checkpoint``."""
    for builder in BUILDERS:
        if builder.accepts(checkpoint):
            return builder
    raise AssertionError("the last builder accepts every checkpoint")


def build(
    checkpoint: Checkpoint, spec: str | None, kwargs: dict[str, Any], wanted: Wanted
) -> nn.Module:
    """The checkpoint's module, weights loaded, by the first builder that accepts it: in eval
    mode on the wanted device and dtype, gradients off (`prepare`). A model folder that is
    the base of the run's adapters is their shared base, adapters off (`shelf`)."""
    if wanted.shelf is not None and wanted.shelf.shares(checkpoint):
        return prepare(wanted.shelf.plain(checkpoint, wanted), wanted.device, wanted.dtype)
    module: nn.Module = builder_for(checkpoint).build(checkpoint, spec, kwargs, wanted)
    return prepare(module, wanted.device, wanted.dtype)


def warn_if_unused(spec: str | None, checkpoints: Sequence[Checkpoint]) -> None:
    """``--model`` given while no checkpoint needs it (each has its own builder): say so."""
    if spec is not None and all(builder_for(c) is not user for c in checkpoints):
        warnings.warn(
            f"--model {spec} is not used: every checkpoint carries its own architecture",
            EvallossWarning,
            stacklevel=3,
        )


def prepare(module: nn.Module, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """The module in eval mode, on ``device``, in ``dtype``, with gradients off."""
    module = module.to(device=device, dtype=dtype).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module
