"""transformers' Trainer run folders (its ``output_dir``): the ``checkpoint-N/`` folders in step
order, and what the run logged at each step.

A directory that is neither a model folder (``config.json``) nor an adapter folder
(``adapter_config.json``) but holds ``checkpoint-N/`` folders is a run: it stands for its
checkpoints in increasing N (numerically). Each checkpoint is then opened as any folder is
(`models.open_checkpoint`); nothing else in it is opened. A model whose folder is named
``checkpoint-N``, or that has a ``trainer_state.json`` with a ``global_step``, has a step: N,
else that ``global_step``. Its logged ``eval_loss`` is the one Trainer logged at that step in
``log_history``: of its own ``trainer_state.json``, else of the run's latest (that of its
highest checkpoint that has one, then the run folder's own).

Only ``trainer_state.json`` is read (JSON), never the pickles Trainer saves beside the weights
(``optimizer.pt``, ``scheduler.pt``, ``rng_state*.pth``, ``training_args.bin``, ...). A state
file that is not a JSON object (unreadable, not JSON, nested past the parser's depth, larger
than `MAX_STATE_BYTES`) is one error naming it; inside one, what is not as Trainer writes it is
passed over: a ``global_step`` that is not a non-negative integer is no step, a log entry that
is not an object with an integer ``step`` is skipped, an ``eval_loss`` that is not a finite
number is null.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalloss.errors import CheckpointError, OptionError
from evalloss.io import remote
from evalloss.options import PathLike

STATE = "trainer_state.json"
MAX_STATE_BYTES = 256 * 2**20  # a long run's log is megabytes; past this it is not Trainer's
_CHECKPOINT = re.compile(r"checkpoint-([0-9]{1,30})")  # Trainer's PREFIX_CHECKPOINT_DIR-N
_FOLDER_FILES = ("config.json", "adapter_config.json")  # a model or adapter folder itself


@dataclass(frozen=True)
class Logged:
    """A checkpoint's place in its run: its step, and the ``eval_loss`` logged at it."""

    step: int
    eval_loss: float | None


def is_run(path: PathLike) -> bool:
    """A local directory that is not itself a model or adapter folder, with checkpoints."""
    folder = os.fspath(path)
    if remote.is_uri(folder) or not os.path.isdir(folder):  # noqa: PTH112 - False for a long name
        return False
    if any(Path(folder, name).exists() for name in _FOLDER_FILES):
        return False
    return bool(checkpoints(Path(folder)))


def checkpoints(run: Path) -> list[Path]:
    """The run's ``checkpoint-N/`` folders in increasing N (5, 10, 15; not 10, 15, 5)."""
    try:
        entries = list(run.iterdir())
    except OSError:
        return []  # opening the folder says why, with its name
    found = [(int(m[1]), e.name, e) for e in entries
             if (m := _CHECKPOINT.fullmatch(e.name)) and e.is_dir()]  # fmt: skip
    return [e for _, _, e in sorted(found)]


def expand(paths: Sequence[PathLike]) -> list[PathLike]:
    """Each run folder in ``paths`` replaced by its checkpoints, in step order; every other
    path as it is."""
    out: list[PathLike] = []
    for path in paths:
        if is_run(path):
            out += [os.path.join(os.fspath(path), c.name) for c in checkpoints(Path(path))]  # noqa: PTH118 - as given
        else:
            out.append(path)
    return out


def one_checkpoint(path: PathLike, option: str) -> PathLike:
    """``path`` where one checkpoint is wanted (``--baseline``, explain's CHECKPOINT): a run
    folder is refused, naming its first and last checkpoints."""
    if is_run(path):
        found = checkpoints(Path(path))
        raise OptionError(f"is a Trainer run folder ({len(found)} checkpoints, {found[0].name} "
                          f"to {found[-1].name}): name one of its checkpoints",
                          path=os.fspath(path), key=option)  # fmt: skip
    return path


def logged(paths: Sequence[str]) -> tuple[Logged | None, ...]:
    """Each checkpoint's step and logged ``eval_loss`` (None: no step), every state file read
    once."""
    states = _States()
    return tuple(_logged(Path(p), states) for p in paths)


def _logged(folder: Path, states: _States) -> Logged | None:
    if remote.is_uri(str(folder)) or not folder.is_dir():
        return None
    own = states.read(folder / STATE)
    named = _CHECKPOINT.fullmatch(folder.name)
    step = int(named[1]) if named else _global_step(own)
    if step is None:
        return None
    run = folder.parent  # the run's latest state: its highest checkpoint's, then its own
    saved = [c / STATE for c in checkpoints(run) if (c / STATE).is_file()]
    latest = [*saved[-1:], run / STATE] if named else []
    for state in (own, *(states.read(p) for p in latest)):
        loss = _eval_loss(state, step)
        if loss is not None:
            return Logged(step, loss)
    return Logged(step, None)


class _States:
    """``trainer_state.json`` files read once each: None where there is none."""

    def __init__(self) -> None:
        self._read: dict[Path, dict[str, Any] | None] = {}

    def read(self, path: Path) -> dict[str, Any] | None:
        if path not in self._read:
            self._read[path] = _state(path) if path.is_file() else None
        return self._read[path]


def _state(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            content = f.read(MAX_STATE_BYTES + 1)
        if len(content) > MAX_STATE_BYTES:
            raise CheckpointError(f"is larger than {MAX_STATE_BYTES // 2**20} MiB: not a "
                                  "trainer state evalloss reads", path=str(path))  # fmt: skip
        value = json.loads(content)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"cannot read it as JSON ({exc})", path=str(path)) from exc
    if not isinstance(value, dict):
        raise CheckpointError("is not a JSON object", path=str(path))
    return value


def _global_step(state: dict[str, Any] | None) -> int | None:
    step = None if state is None else state.get("global_step")
    return step if type(step) is int and step >= 0 else None


def _eval_loss(state: dict[str, Any] | None, step: int) -> float | None:
    """The last ``eval_loss`` logged at ``step``; None where there is none, or it is not a
    finite number."""
    history = None if state is None else state.get("log_history")
    if not isinstance(history, list):
        return None
    found: Any = None
    for entry in history:
        if isinstance(entry, dict) and type(entry.get("step")) is int and entry["step"] == step:
            found = entry.get("eval_loss", found)
    if type(found) not in (int, float):
        return None
    try:
        value = float(found)
    except OverflowError:  # an integer past float64
        return None
    return value if math.isfinite(value) else None
