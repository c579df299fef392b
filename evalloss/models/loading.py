"""Strict state-dict loading: the header's tensors against the module's, every bad key named."""

from __future__ import annotations

from typing import TYPE_CHECKING

from evalloss.errors import CheckpointError
from evalloss.models.checkpoint import Checkpoint, load_tensors

if TYPE_CHECKING:
    import torch
    from torch import nn


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
    load_into(module, load_tensors(checkpoint), checkpoint.path)


def load_into(
    module: nn.Module, tensors: dict[str, torch.Tensor], path: str, assign: bool = False
) -> None:
    try:
        module.load_state_dict(tensors, strict=True, assign=assign)
    except (RuntimeError, TypeError) as exc:  # e.g. a dtype torch cannot copy
        raise CheckpointError(f"cannot load state dict ({exc})", path=path) from exc
