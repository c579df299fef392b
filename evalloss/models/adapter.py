"""PEFT adapter folders -> their base model with the adapter switched on (`peftload` attaches
it through peft). The base is read once per run and kept once, however many adapters share it
(`Shelf`): every adapter of one peft type is attached to the one base model, and each model of
the run is a small module that sets its adapter active (peft's ``set_adapter``) before it
forwards; the base itself, where it is in the run (as a model or as ``--baseline``), is the
same module with the adapters off (peft's ``disable_adapter``). peft holds one adapter type on
a model at a time: a second type over the same base is attached in a later group
(`peftfolder.rounds`), after the first type is unloaded (peft's ``unload``: the base's own
layers back, unchanged).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from evalloss.models import hf
from evalloss.models.checkpoint import Checkpoint
from evalloss.models.peftload import attach

if TYPE_CHECKING:
    from torch import nn

    from evalloss.models import Wanted


def accepts(checkpoint: Checkpoint) -> bool:
    """Adapter folders (`peftfolder.open_adapter` read them and their base)."""
    return checkpoint.adapter is not None


def build(
    checkpoint: Checkpoint, spec: str | None, kwargs: dict[str, Any], wanted: Wanted
) -> nn.Module:
    """The base with the adapter on: over the run's shared base (``wanted.shelf``), else over
    a base of its own."""
    shelf = wanted.shelf if wanted.shelf is not None else Shelf()
    return shelf.adapted(checkpoint, wanted)


class Shelf:
    """The bases of a run's adapters, each loaded once (by real path) and kept for the run."""

    def __init__(self, bases: Iterable[str] = ()) -> None:
        self.bases = frozenset(os.path.realpath(b) for b in bases)  # the adapters' bases
        self.held: dict[str, Held] = {}

    def shares(self, checkpoint: Checkpoint) -> bool:
        """A model folder in the run that is also the base of its adapters."""
        return (checkpoint.adapter is None and checkpoint.config is not None
                and os.path.realpath(checkpoint.path) in self.bases)  # fmt: skip

    def plain(self, checkpoint: Checkpoint, wanted: Wanted) -> nn.Module:
        """The base model as it is: the shared module, adapters off."""
        held = self._held(checkpoint, wanted)
        return hf.with_head(_module(held, None), wanted.loss, held.head, checkpoint.path)

    def adapted(self, checkpoint: Checkpoint, wanted: Wanted) -> nn.Module:
        """The base with this adapter on: the shared module, this adapter active."""
        assert checkpoint.adapter is not None
        held = self._held(checkpoint.adapter.base, wanted)
        name = held.attach(checkpoint)
        return hf.with_head(_module(held, name), wanted.loss, held.head, checkpoint.path)

    def _held(self, base: Checkpoint, wanted: Wanted) -> Held:
        key = os.path.realpath(base.path)
        if key not in self.held:
            model, head = hf.load(base, wanted)
            self.held[key] = Held(model, head)
        return self.held[key]


class Held:
    """One base model, the adapters attached to it (one peft type at a time) and the one
    active now (None: adapters off)."""

    def __init__(self, model: nn.Module, head: str) -> None:
        self.model, self.head = model, head
        self.peft: Any = None  # the PeftModel around ``model``, once an adapter is attached
        self.peft_type: str | None = None
        self.count = 0
        self.active: str | None = None

    def attach(self, checkpoint: Checkpoint) -> str:
        """Attach the checkpoint's adapter; its name. A new peft type unloads the old one's."""
        assert checkpoint.adapter is not None
        kind = checkpoint.adapter.peft_type
        if self.peft is not None and self.peft_type != kind:
            self.model = self.peft.unload()  # the base's own layers back, not merged
            self.peft, self.active = None, None
        self.count += 1
        name = f"adapter{self.count}"
        self.peft = attach(self.peft, self.model, name, checkpoint)
        self.peft_type = kind
        self.active = self.peft.active_adapter
        return name

    def forward(self, name: str | None, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The base's forward with adapter ``name`` active (None: every adapter off)."""
        if self.peft is None:
            assert name is None, "an adapter's module outlived its type's group"
            return self.model(*args, **kwargs)
        if name is None:
            with self.peft.disable_adapter():
                return self.model(*args, **kwargs)
        assert name in self.peft.peft_config, "an adapter's module outlived its type's group"
        if self.active != name:
            self.peft.set_adapter(name, inference_mode=True)
            self.active = name
        return self.model(*args, **kwargs)


def _module(held: Held, name: str | None) -> nn.Module:
    """A module that forwards through the shared base with adapter ``name`` active."""
    from torch import nn

    class Adapted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = held.model  # registered: device, dtype, eval and parameters reach it

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            return held.forward(name, args, kwargs)

    return Adapted()
