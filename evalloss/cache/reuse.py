"""A run with ``--cache``: the models whose results are cached are read from the cache, the
others evaluated (in one pass, or group by group: `sequential`) and their items recorded and
stored; then every model's items are replayed to the observers as one pass would show them.

The key of a model's entry (`key`) holds everything its figures depend on: the sha256 of
every file it is built from (a model folder's too), of the data and of its tokenizer, the
user's model code and keyword arguments, the loss, targets, features, the sequence options,
the precision, the device type, `disk.FIGURE_FORMAT`, and torch's major.minor where the run
is not float64 (kernels change between releases). Batch size, threads, format and progress
cannot change a figure and are not in it. The data is hashed before the pass (a model is
skipped before anything is read); with every model cached, no row is read at all.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from evalloss.cache import disk
from evalloss.errors import CheckpointError, EvallossWarning, OptionError
from evalloss.io.files import local_only
from evalloss.io.hashing import sha256_of
from evalloss.io.usercode import source_file
from evalloss.run import distributed, onepass, prepared
from evalloss.run.batch import ItemKeys
from evalloss.run.engine import Accumulator
from evalloss.run.sequential import Passes, Recorded, Recorder, record, replay
from evalloss.sources import chat as sources_chat
from evalloss.sources import prefix

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from evalloss.options import PathLike
    from evalloss.run.batch import Observer
    from evalloss.run.plan import Plan
    from evalloss.sources import DataSource


@dataclass(frozen=True)
class Lookup:
    """The cache's answer before a run: every model's key, and the entries found."""

    folder: PathLike
    max_size: int | None
    keys: list[dict[str, Any]]
    hits: dict[int, disk.Entry]


def settings(
    folder: PathLike | None, max_size: int | str | None
) -> tuple[PathLike, int | None] | None:
    """``--cache`` and ``--cache-max-size`` checked: the folder and the most bytes, or None."""
    if folder is None:
        if max_size is not None:
            raise OptionError("needs --cache", key="--cache-max-size")
        return None
    local_only(folder, "--cache")
    distributed.single_process_only("--cache", CACHE_WHY)
    return folder, None if max_size is None else disk.parse_size(max_size)


CACHE_WHY = "an entry holds every item of the data; run in one process to use the cache"


def lookup(plan: Plan, folder: PathLike, max_size: int | None, *, ordered: bool) -> Lookup | None:
    """Every model's key and the entries the cache holds; None where the cache cannot serve
    this run (text whose models' tokenizers differ: one warning). ``ordered``: the pass reads
    sequence data in file order (not packed by length: float32 figures may differ in their
    last bits, and the items come in another order)."""
    from evalloss.sources import factory

    text = plan.source.bytes_read() is not None
    why = None
    if text and len({t for t in plan.tokenizers if t is not None}) > 1:
        why = "where the models' tokenizers differ (the items are weighted by bytes)"
    elif factory.accepts(plan.options.data, plan.options):
        why = "with a Dataset factory (what it reads cannot be hashed)"
    elif sliced(plan) and plan.loss.per_token:
        why = "with --slice over documents (an entry does not keep a document's slices)"
    if why is not None:
        warnings.warn(f"--cache is not used {why}: every model is evaluated",
                      EvallossWarning, stacklevel=3)  # fmt: skip
        return None
    data = sorted(plan.source.sha256().values())
    keys = [key(plan, i, data, ordered=ordered) for i in range(len(plan.checkpoints))]
    hits = {}
    for i, k in enumerate(keys):
        entry = disk.load(folder, k)
        # per-slice accuracy needs each item's correct elements: an entry stored without
        # them (by a run without --slice) is evaluated again, and rewritten with them
        if entry is not None and not (sliced(plan) and plan.loss.has_accuracy
                                      and entry.correct is None):  # fmt: skip
            hits[i] = entry
    return Lookup(folder, max_size, keys, hits)


def sliced(plan: Plan) -> bool:
    return plan.source.slicing is not None


def key(plan: Plan, index: int, data: list[str], *, ordered: bool = False) -> dict[str, Any]:
    """Everything model ``index``'s figures (and its items' order) depend on, as plain JSON
    data; ``ordered`` counts for sequence data only (tabular data is always in file order)."""
    import torch

    checkpoint = plan.checkpoints[index]
    options = plan.options
    files = [[_relative(f, checkpoint.path), _sha256(f)] for f in checkpoint.paths]
    tokenizer = plan.tokenizers[index] if plan.tokenizers else None
    model_file = source_file(options.model)
    found = {
        "format": disk.FIGURE_FORMAT,
        "checkpoint": files,
        "data": data,
        "loss": plan.loss.name,
        "target": list(plan.source.targets),
        "feature": list(plan.source.features),
        "no_header": options.no_header,
        "sequence": [
            *plan.sequence(index), options.token_dtype, options.tokens_column,
            options.text_column, ordered if plan.loss.per_token else None,
            _prefix_id(plan, index),
        ],
        "tensors": [options.inputs_key, options.targets_key, options.ignore_index],
        "tokenizer": None if tokenizer is None else _sha256(tokenizer),
        "model": [options.model, None if model_file is None else _sha256(model_file)],
        "model_kwargs": json.dumps(dict(options.model_kwargs), sort_keys=True, default=repr),
        "precision": options.precision,
        "device": plan.device.type,
        "torch": None if options.precision == "float64" else _major_minor(torch.__version__),
    }
    chat = sources_chat.cache_key(plan.source, tokenizer)  # the score, the template's files
    if chat is not None:
        found["chat"] = [chat[0], [[Path(f).name, _sha256(f)] for f in chat[1]]]
    normal: dict[str, Any] = json.loads(json.dumps(found))  # tuples -> lists, as read back
    return normal


def _prefix_id(plan: Plan, index: int) -> int | None:
    """The token model ``index``'s documents get first (``--prefix-token``), as its source
    resolves it: by its own tokenizer for text, the run's for token ids."""
    text = plan.source.bytes_read() is not None
    tokenizer = plan.tokenizers[index] if text and plan.tokenizers else plan.options.tokenizer
    found = prefix.resolve(plan.options.prefix_token, tokenizer)
    return None if found is None else found.id


def prepare(plan: Plan, cached: Lookup) -> Cached:
    """The plan's models but those ``cached``, ready (`run.prepared.prepare`)."""
    ready = prepared.prepare(plan, cached.hits)
    return Cached(ready.plan, ready.groups, ready.built, cached)


@dataclass(frozen=True)
class Cached(prepared.Prepared):
    """A run with ``--cache``: the models it does not hold evaluated as without it (in one
    pass, the models `built`, or group by group), recorded and stored; the others read."""

    cache: Lookup

    def evaluate(self, observers: Sequence[Observer], world: distributed.World) -> Passes:
        """The models missing from the cache evaluated, recorded and stored; the cached ones
        read; then every model's items to the ``observers``, as one pass would show them."""
        plan, cached = self.plan, self.cache
        models = len(plan.checkpoints)
        fresh, accumulators, source = self._fresh(world)
        text_bytes = None if source is None else source.bytes_read()
        words = None if source is None else source.words_read()
        groups = None  # sliced: the items' slice codes, from the pass's recorder (first) or,
        if sliced(plan):  # where no model ran, from the data alone
            groups = {} if fresh else _slice_codes(plan, world)
        recorders = list(fresh)
        for i, entry in cached.hits.items():
            accumulators[i] = _restored(plan, i, entry)
            recorders.append(([i], _recorded(entry, groups)))
            if text_bytes is None:
                text_bytes, words = entry.text_bytes, entry.text_words
        _store(cached, fresh, accumulators, (text_bytes, words))
        done = [a for a in accumulators if a is not None]
        assert len(done) == models
        shown = _targets(fresh[0][1]) if fresh else next(iter(cached.hits.values())).targets
        replay(recorders, recorders[0][1].weights, observers, models, plan.options.data, shown)
        return Passes(done, text_bytes, by_bytes=False, text_words=words)

    def _fresh(self, world: distributed.World
               ) -> tuple[Recorded, list[Accumulator | None], DataSource | None]:  # fmt: skip
        """The models the cache does not hold, evaluated and recorded (with their targets,
        for tabular data): each group's recorder, every model's accumulator (None where
        cached), and the source read (None where every model is cached)."""
        plan = self.plan
        accumulators: list[Accumulator | None] = [None] * len(plan.checkpoints)
        targets = not plan.loss.per_token  # tabular: the targets recorded too
        if self.built:  # one pass
            recorder = Recorder(targets=targets)
            onepass.one_pass(plan.source, plan.dtype, plan.device, self.built, [recorder],
                             plan.batch_size, world)  # fmt: skip
            for i, acc in zip(self.groups[0], self.built, strict=True):
                accumulators[i] = acc
            return [(self.groups[0], recorder)], accumulators, plan.source
        if self.groups:  # group by group
            accumulators, fresh, sources = record(self, world, targets=targets)
            return fresh, accumulators, next(iter(sources.values()))
        return [], accumulators, None


def _store(cached: Lookup, fresh: list[tuple[list[int], Recorder]],
           accumulators: list[Accumulator | None],
           text: tuple[int | None, int | None]) -> None:  # fmt: skip
    """Every freshly evaluated model's entry (``text``: the text data's bytes and words)."""
    import numpy as np

    for group, recorder in fresh:
        values = np.concatenate(recorder.values) if recorder.values else np.empty((0, len(group)))
        weights = np.concatenate(recorder.weights) if recorder.weights else np.empty(0, np.int64)
        targets = _targets(recorder)
        hits = [(k.correct, k.counted) for k in recorder.keys
                if k.correct is not None and k.counted is not None]  # sliced, with accuracy
        if len(hits) < len(recorder.keys):
            hits = []
        counted = np.concatenate([n for _, n in hits]) if hits else None
        for column, i in enumerate(group):
            acc = accumulators[i]
            assert acc is not None
            state = {**acc.state(), "seconds": 0.0}
            correct = np.concatenate([c[column] for c, _ in hits]) if hits else None
            entry = disk.Entry(np.ascontiguousarray(values[:, column]), weights, state,
                                text[0], targets, correct, counted, text[1])  # fmt: skip
            disk.store(cached.folder, cached.keys[i], entry, cached.max_size)


def _restored(plan: Plan, index: int, entry: disk.Entry) -> Accumulator:
    """A cached model's accumulator: its exact sums and counts as the pass left them."""
    from torch import nn

    acc = Accumulator(nn.Identity(), plan.loss, plan.device, plan.checkpoints[index].path)
    acc.module = None  # type: ignore[assignment]  # no weights: the figures come from the entry
    acc.merge_states([entry.state])
    acc.cached = True
    return acc


def _targets(recorder: Recorder) -> npt.NDArray[np.float64] | None:
    """The recorded items' targets (n, T), where they were recorded."""
    import numpy as np

    if recorder.targets is None or len(recorder.targets) != len(recorder.values):
        return None
    return np.concatenate(recorder.targets) if recorder.targets else None


def _recorded(entry: disk.Entry, groups: dict[str, npt.NDArray[np.int64]] | None) -> Recorder:
    """A cached model's items as a pass would have recorded them; where the run is sliced,
    with their keys (``groups``: the slice codes, where no pass records them)."""
    recorder = Recorder()
    recorder.rows.append(0)
    recorder.values.append(entry.values[:, None])
    recorder.weights.append(entry.weights)
    if groups is not None:
        correct = None if entry.correct is None else (entry.correct,)
        recorder.keys.append(ItemKeys(groups, correct, entry.counted))
    return recorder


def _slice_codes(plan: Plan, world: distributed.World) -> dict[str, npt.NDArray[np.int64]]:
    """Every item's slice codes, read from the data without a model (every model cached)."""
    import numpy as np

    source = plan.source.for_pass(plan.batch_size, plan.device)
    blocks = [b.groups for b in source.blocks(plan.dtype, rank=world.rank, world=world.size)]
    assert plan.source.slicing is not None, "a sliced run"
    names = plan.source.slicing.names
    return {k: np.concatenate([g[k] for g in blocks if g is not None] or [np.empty(0, np.int64)])
            for k in names}  # fmt: skip


def _relative(file: str, root: str) -> str:
    """A model folder's file by its name in the folder; a lone checkpoint by no name (the
    same bytes under another name are the same model)."""
    path, base = Path(file), Path(root)
    return path.relative_to(base).as_posix() if path != base and base in path.parents else ""


def _sha256(file: str) -> str:
    """The file's sha256 (hashed once per process: `sha256_of`)."""
    try:
        return sha256_of(file)
    except OSError as exc:
        raise CheckpointError(f"cannot read it to hash it ({exc.strerror or exc})",
                              path=file) from exc  # fmt: skip


def _major_minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])
