"""PEFT adapter folders: recognise, refuse, read headers. Nothing in the folder is imported or
run, nothing unpickled, nothing downloaded.

An adapter folder is ``adapter_config.json`` with ``adapter_model.safetensors``, as
``PeftModel.save_pretrained`` writes it (a Trainer ``checkpoint-N/`` of a PEFT run included).
Its base is a model folder (`folder.open_folder`): ``--base``, else the config's
``base_model_name_or_path`` when that is a local folder. Refused, each by name, before any
tensor is read: weights only as ``adapter_model.bin`` (pickle); a ``peft_type`` the installed
peft does not know, or one that adds virtual tokens to the input (prompt learning); a config
that names code (``auto_mapping`` naming anything but a transformers class, which evalloss
never imports either way; ``megatron_config``; ``auto_map`` at any depth); a LoRA that trains
the base's own biases (``bias``) or whose initialisation rewrites the base's weights when it
is attached (PiSSA, OLoRA, LoftQ, ...): one base is shared by every adapter of a run.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evalloss.errors import CheckpointError, shown
from evalloss.models.checkpoint import Adapter, Checkpoint, open_file
from evalloss.models.folder import CODE, _json, _refuse_nested, _tokenizer, open_folder, stamp_of

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
PICKLED = "adapter_model.bin"
INSTALL = "pip install 'evalloss[peft]'"
BASE_KEY = "base_model_name_or_path"
# init_lora_weights values that leave the base as it is (every adapter tensor is loaded anyway)
SAFE_INITS = (True, False, "gaussian", "orthogonal", "eva")
_SHARED = "one base model is shared by every adapter of a run"


def is_adapter(path: str) -> bool:
    """A folder with ``adapter_config.json``: an adapter folder, whatever else it holds."""
    return (Path(path) / CONFIG).is_file()


def open_adapter(path: str, base: str | None = None) -> Checkpoint:
    """Check an adapter folder and its base against the trust boundary; read the headers of
    the adapter's weights and of the base's shards. ``base``: ``--base``."""
    folder = Path(path)
    config_path = folder / CONFIG
    config = _json(config_path)
    kind = _checked_config(config, config_path)
    weights = folder / WEIGHTS
    if not weights.is_file():
        if (folder / PICKLED).is_file():
            raise CheckpointError(f"its adapter weights are only in pickle form ({PICKLED}), which "
                                  "can run code when loaded; evalloss reads only safetensors "
                                  "(save with safe_serialization=True)", path=path)  # fmt: skip
        raise CheckpointError(f"an adapter folder without {WEIGHTS}", path=path)
    header = open_file(str(weights))
    base_checkpoint = _base(config, config_path, base)
    own_tokenizer = _tokenizer(folder)
    tokenizer = str(own_tokenizer) if own_tokenizer else base_checkpoint.tokenizer
    own = (str(config_path), str(weights), *([str(own_tokenizer)] if own_tokenizer else []))
    files = (*own, *base_checkpoint.files)
    adapter = Adapter(config=config, peft_type=kind, files=own, weights=header,
                      base=base_checkpoint)  # fmt: skip
    return Checkpoint(path=path, metadata=dict(base_checkpoint.metadata), shapes=header.shapes,
                      opened=stamp_of(files), files=files, config=base_checkpoint.config,
                      tokenizer=tokenizer, adapter=adapter)  # fmt: skip


def _checked_config(config: dict[str, Any], path: Path) -> str:
    """The config's peft type, once every refusal is checked."""
    _refuse_nested(config, path, {"auto_map": CODE})
    where = str(path)
    mapping = config.get("auto_mapping")
    if mapping is not None and not _transformers_class(mapping):
        raise CheckpointError("names a model class outside transformers (auto_mapping), which "
                              "evalloss never imports", path=where, key="auto_mapping")  # fmt: skip
    if config.get("megatron_config") is not None:
        raise CheckpointError("asks to import a Megatron module (megatron_config), which evalloss "
                              "never does", path=where, key="megatron_config")  # fmt: skip
    kind = config.get("peft_type")
    if not isinstance(kind, str):
        raise CheckpointError("no peft_type", path=where, key="peft_type")
    configs, layered = _peft_types(where)
    if kind not in configs:
        raise CheckpointError(f"adapter type {shown(kind)} is not one the installed peft knows",
                              path=where, key="peft_type")  # fmt: skip
    if kind not in layered:
        raise CheckpointError(f"adapter type {shown(kind)} adds virtual tokens to every input "
                              "(prompt learning): not supported; evalloss scores adapters that "
                              "change the base's layers (LoRA, IA3, LoHa, ...)", path=where,
                              key="peft_type")  # fmt: skip
    bias = config.get("bias", "none")
    if bias not in ("none", None):
        raise CheckpointError(f"bias {shown(bias)} trains the base model's own biases, and "
                              f"{_SHARED}: train with bias='none'", path=where,
                              key="bias")  # fmt: skip
    init = config.get("init_lora_weights", True)
    if not any(init is v or (isinstance(v, str) and init == v) for v in SAFE_INITS):
        raise CheckpointError(f"init_lora_weights {shown(init)} rewrites the base model's "
                              f"weights when the adapter is attached, and {_SHARED}: convert it "
                              "to a plain LoRA adapter (peft's docs show how)", path=where,
                              key="init_lora_weights")  # fmt: skip
    return kind


def _transformers_class(mapping: Any) -> bool:
    """``auto_mapping`` as peft writes it for a transformers model (never imported here)."""
    if not isinstance(mapping, dict) or set(mapping) - {"base_model_class", "parent_library"}:
        return False
    library, name = mapping.get("parent_library"), mapping.get("base_model_class")
    return (isinstance(library, str) and library.startswith("transformers.")
            and isinstance(name, str) and name.isidentifier())  # fmt: skip


def _peft_types(path: str) -> tuple[frozenset[str], frozenset[str]]:
    """The adapter types of the installed peft, and those that change the base's layers (not
    prompt learning, which adds virtual tokens); a one-line error naming the extra if peft is
    not installed."""
    try:
        from peft.config import PromptLearningConfig
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
    except ImportError as exc:
        raise CheckpointError(f"an adapter folder needs peft: {INSTALL}", path=path) from exc
    layered = frozenset(
        str(k.value) for k, config in PEFT_TYPE_TO_CONFIG_MAPPING.items()
        if k in PEFT_TYPE_TO_TUNER_MAPPING and not issubclass(config, PromptLearningConfig)
        and str(k.value) != "ADAPTION_PROMPT"
    )  # fmt: skip
    return frozenset(str(k.value) for k in PEFT_TYPE_TO_CONFIG_MAPPING), layered


def _base(config: dict[str, Any], config_path: Path, given: str | None) -> Checkpoint:
    """The base model folder: ``--base``, else the config's ``base_model_name_or_path`` when it
    names a local folder (absolute, or relative to the working directory)."""
    if given is not None:
        path, where, key = os.fspath(given), os.fspath(given), "--base"
    else:
        named = config.get(BASE_KEY)
        where, key = str(config_path), BASE_KEY
        if not isinstance(named, str) or not named:
            raise CheckpointError("names no base model: give --base FOLDER", path=where, key=key)
        if not Path(named).is_dir():
            raise CheckpointError(f"base model {shown(named)} is not a local folder, and evalloss "
                                  "downloads nothing: give --base FOLDER", path=where,
                                  key=key)  # fmt: skip
        path = named
    if not Path(path).is_dir():
        raise CheckpointError("is not a folder: --base is the base model's folder", path=where,
                              key=key)  # fmt: skip
    if is_adapter(path):
        raise CheckpointError("the base is itself an adapter folder: give the model folder it "
                              "adapts", path=where, key=key)  # fmt: skip
    return open_folder(path)


def bases(checkpoints: Sequence[Checkpoint]) -> dict[str, Checkpoint]:
    """The base folders of the adapters among ``checkpoints``, by real path, each once."""
    found: dict[str, Checkpoint] = {}
    for c in checkpoints:
        if c.adapter is not None:
            found.setdefault(os.path.realpath(c.adapter.base.path), c.adapter.base)
    return found


def rounds(checkpoints: Sequence[Checkpoint]) -> list[int]:
    """The round each model is attached to its base in: adapters of one base and one peft type
    together; peft holds one type on a model at a time, so a second type over the same base
    is a second round (its own pass). Models that are not adapters: round 0."""
    types: dict[str, list[str]] = {}
    found = []
    for c in checkpoints:
        if c.adapter is None:
            found.append(0)
            continue
        seen = types.setdefault(os.path.realpath(c.adapter.base.path), [])
        if c.adapter.peft_type not in seen:
            seen.append(c.adapter.peft_type)
        found.append(seen.index(c.adapter.peft_type))
    return found
