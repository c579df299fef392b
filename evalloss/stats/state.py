"""Reducible state, declared once: a class names its fields and how each merges across
processes, and one `state` / `merge_states` serves every class (torchmetrics'
``add_state(name, default, dist_reduce_fx)`` is the model).

A `Reducible` subclass declares, for example::

    FIELDS = fields(items=SUM, loss_sum=EXACT, seconds=MAX, rows=CONCAT, paired=each(NESTED))

`Reducible.state` is plain, picklable data, field by field (`Merge.dump`);
`Reducible.merge_states` makes the object the merge of every process's state, in rank order
(this one's included), field by field (`Merge.merged`). Counts stay Python ints (`SUM`),
exact sums stay exact (`EXACT` merges `ExactSum` partials), and no figure is ever a mean of
means: what merges is sums and counts, and figures are computed from them afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar, Protocol

from evalloss.stats.exact import ExactSum


class Merge(Protocol):
    """How one field crosses processes: its plain data, and the merge of every process's."""

    def dump(self, value: Any) -> Any:
        """The field's value as plain, picklable data."""
        ...

    def merged(self, owner: Any, current: Any, states: list[Any]) -> Any:
        """The field's merged value: from every process's `dump`, in rank order; ``current``
        is this process's value (its own data is among ``states``), ``owner`` its object."""
        ...


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Fold:
    """A field whose merge is ``combine`` of every process's data, in rank order."""

    combine: Callable[[list[Any]], Any]
    save: Callable[[Any], Any] = _same

    def dump(self, value: Any) -> Any:
        return self.save(value)

    def merged(self, owner: Any, current: Any, states: list[Any]) -> Any:
        return self.combine(states)


def _concat(states: list[Any]) -> list[Any]:
    return [x for state in states for x in state]


SUM = Fold(sum)  # counts: Python ints, added exactly
MAX = Fold(max)
MIN = Fold(min)
CONCAT = Fold(_concat, save=list)  # rank 0's items first, then rank 1's, ...
EXACT = Fold(ExactSum.merged, save=ExactSum.state)  # an `ExactSum`: its partials, merged


class _Nested:
    """A field that is itself a `Reducible`: it merges its own fields, in place."""

    def dump(self, value: Reducible) -> Any:
        return value.state()

    def merged(self, owner: Any, current: Reducible, states: list[Any]) -> Reducible:
        current.merge_states(states)
        return current


NESTED = _Nested()


@dataclass(frozen=True)
class each:  # noqa: N801 - a merge kind, read like SUM and EXACT: ``each(EXACT)``
    """A list or dict of values of one kind, the same keys in every process (fixed by the
    constructor: one per model, say): merged key by key."""

    kind: Merge

    def dump(self, value: list[Any] | dict[Any, Any]) -> Any:
        if isinstance(value, dict):
            return {k: self.kind.dump(v) for k, v in value.items()}
        return [self.kind.dump(v) for v in value]

    def merged(self, owner: Any, current: list[Any] | dict[Any, Any], states: list[Any]) -> Any:
        if isinstance(current, dict):
            return {k: self.kind.merged(owner, v, [s[k] for s in states])
                    for k, v in current.items()}  # fmt: skip
        return [self.kind.merged(owner, v, [s[i] for s in states]) for i, v in enumerate(current)]


@dataclass(frozen=True)
class keyed:  # noqa: N801 - a merge kind, read like SUM and EXACT: ``keyed(NESTED, new=...)``
    """A dict whose keys differ between processes (a slice's value, say): the merged dict
    has every key seen, in the order first seen in rank order; a key's value starts as
    ``new(owner)`` and merges the states of the processes that have that key."""

    kind: Merge
    new: Callable[[Any], Any]

    def dump(self, value: dict[Any, Any]) -> dict[Any, Any]:
        return {k: self.kind.dump(v) for k, v in value.items()}

    def merged(self, owner: Any, current: Any, states: list[Any]) -> dict[Any, Any]:
        found: dict[Any, list[Any]] = {}
        for state in states:
            for key, value in state.items():
                found.setdefault(key, []).append(value)
        return {key: self.kind.merged(owner, self.new(owner), values)
                for key, values in found.items()}  # fmt: skip


def fields(**kinds: Merge) -> Mapping[str, Merge]:
    """A `Reducible`'s declaration: each field's name and merge kind, in `state`'s order."""
    return MappingProxyType(kinds)


class Reducible:
    """A state that merges exactly across processes, its fields declared in `FIELDS`: name
    -> merge kind (`SUM`, `EXACT`, `MAX`, `MIN`, `CONCAT`, `NESTED`, `each`, `keyed`, or a
    `Fold` of its own). A field may be a property with a setter (a view of other fields)."""

    __slots__ = ()
    FIELDS: ClassVar[Mapping[str, Merge]] = fields()

    def state(self) -> dict[str, Any]:
        """Plain, picklable data: every declared field's."""
        return {name: kind.dump(getattr(self, name)) for name, kind in self.FIELDS.items()}

    def merge_states(self, states: Sequence[Mapping[str, Any]]) -> None:
        """Become the merge of every process's `state` (this one's included, at least one),
        in rank order."""
        for name, kind in self.FIELDS.items():
            merged = kind.merged(self, getattr(self, name), [s[name] for s in states])
            setattr(self, name, merged)

    def merge(self, other: Reducible) -> None:
        """Fold in another shard's state (another process's, say), as if its items came here."""
        self.merge_states([self.state(), other.state()])
