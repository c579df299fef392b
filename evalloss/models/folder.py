"""Hugging Face model folders: recognise, refuse, read headers. Nothing in the folder is imported
or run, and nothing is downloaded.

A folder is ``config.json`` with ``model.safetensors`` (or ``model.safetensors.index.json`` and
its shards), and ``tokenizer.json`` for text data. Refused, each by name, before any tensor is
read: a config with ``auto_map`` (remote code) or ``quantization_config``, at any depth (a
sub-config's too), a ``model_type`` transformers does not know, weights only in pickle form,
shards missing, unlisted or overlapping, and a tokenizer config with an ``auto_map`` at any
depth (code, whether or not a ``tokenizer.json`` is there). Every shard's header goes through
the same checks as a checkpoint file (`checkpoint.open_file`).
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any

from evalloss.errors import CheckpointError, shown
from evalloss.io.files import stamp
from evalloss.models.checkpoint import Checkpoint, open_file

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
TOKENIZER = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
PICKLED = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")
INSTALL = "pip install 'evalloss[hf]'"
CODE = "asks for remote code (auto_map), which evalloss never runs"
REFUSED = {"auto_map": f"{CODE}; use a model type transformers has",
            "quantization_config": "quantized models are not supported: evaluate the "
                                   "unquantized weights"}  # fmt: skip
# the loss a folder's own architecture implies, when --loss is not given
_HEADS = {"ForCausalLM": "causal-lm", "LMHeadModel": "causal-lm",
          "ForSequenceClassification": "cross-entropy",
          "ForTokenClassification": "cross-entropy"}  # fmt: skip
# an encoder-decoder's language-model heads (`encoder_decoder` decides, not the name alone)
SEQ2SEQ_HEADS = ("ForConditionalGeneration", "MTModel")


def open_folder(path: str) -> Checkpoint:
    """Check a model folder against the trust boundary and read its shards' headers."""
    folder = Path(path)
    config = _config(folder)
    shards, index = _shards(folder)
    shapes: dict[str, tuple[int, ...]] = {}
    for shard in shards:
        for name, shape in open_file(shard).shapes.items():
            if name in shapes:
                raise CheckpointError(f"tensor {shown(name)} is in two shards", path=shard)
            shapes[name] = shape
    if index is not None:
        _check_index(index, shapes)
    tokenizer = _tokenizer(folder)
    files = tuple(str(f) for f in (folder / CONFIG, *shards, *(
        [index[0]] if index else []), *([tokenizer] if tokenizer else [])))  # fmt: skip
    architectures = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    heads = [loss for end, loss in _HEADS.items() if any(a.endswith(end) for a in architectures)]
    if encoder_decoder(config) and any(a.endswith(SEQ2SEQ_HEADS) for a in architectures):
        heads = ["seq2seq-lm"]
    metadata = {"evalloss.loss": heads[0]} if heads else {}
    return Checkpoint(path=path, metadata=metadata, shapes=shapes, opened=stamp_of(files),
                      files=files, config=config,
                      tokenizer=str(tokenizer) if tokenizer else None)  # fmt: skip


def token_classifier(checkpoint: Checkpoint) -> bool:
    """A folder whose architecture is a token classifier (a label per token)."""
    names = (checkpoint.config or {}).get("architectures") or []
    return any(isinstance(a, str) and a.endswith("ForTokenClassification") for a in names)


def encoder_decoder(config: dict[str, Any] | None) -> bool:
    """The config is an encoder-decoder model's (T5, BART, ...): its ``is_encoder_decoder``,
    else its config class's default (transformers' own rule)."""
    if config is None:
        return False
    given = config.get("is_encoder_decoder")
    if isinstance(given, bool):
        return given
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    kind = config.get("model_type")
    default = getattr(CONFIG_MAPPING[kind], "is_encoder_decoder", False) if (
        isinstance(kind, str) and kind in CONFIG_MAPPING) else False  # fmt: skip
    return default is True


def stamp_of(files: tuple[str, ...]) -> tuple[int, int]:
    """One stamp for several files: their total size and latest modification time."""
    stamps = [stamp(f) for f in files]
    return sum(s[0] for s in stamps), max(s[1] for s in stamps)


def _json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CheckpointError(f"cannot read it as JSON ({exc})", path=str(path)) from exc
    if not isinstance(value, dict):
        raise CheckpointError("is not a JSON object", path=str(path))
    return value


def _config(folder: Path) -> dict[str, Any]:
    path = folder / CONFIG
    if not path.is_file():
        raise CheckpointError(f"is a directory without {CONFIG}: neither a checkpoint file "
                              "nor a Hugging Face model folder", path=str(folder))  # fmt: skip
    config = _json(path)
    _refuse_nested(config, path)
    kind = config.get("model_type")
    if not isinstance(kind, str):
        raise CheckpointError("no model_type", path=str(path), key="model_type")
    if kind not in known_types(str(folder)):
        raise CheckpointError(f"model type {shown(kind)} is not one transformers knows "
                              "(evalloss never runs a folder's own code)", path=str(path),
                              key="model_type")  # fmt: skip
    return config


def _refuse_nested(config: dict[str, Any], path: Path, refused: dict[str, str] = REFUSED) -> None:
    """``auto_map`` (code) or ``quantization_config`` at any depth: transformers reads every
    nested config (``text_config``, ``vision_config``, ...) as it reads the top one. The
    shallowest is named, by its key path (``text_config.auto_map``)."""
    queue: deque[tuple[str, Any]] = deque([("", config)])
    while queue:  # breadth first, iterative: as deep as the JSON parser allowed
        where, value = queue.popleft()
        items: Any = ()
        if isinstance(value, dict):
            items = value.items()
        elif isinstance(value, list):
            items = ((f"[{i}]", v) for i, v in enumerate(value))
        for key, inner in items:
            name = f"{where}{key}" if key.startswith("[") or not where else f"{where}.{key}"
            if key in refused:
                raise CheckpointError(refused[key], path=str(path), key=name)
            queue.append((name, inner))


def known_types(path: str) -> frozenset[str]:
    """The model types of the installed transformers; a one-line error naming the extra if
    it is not installed."""
    try:
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    except ImportError as exc:
        raise CheckpointError(
            f"a Hugging Face model folder needs transformers and tokenizers: {INSTALL}",
            path=path,
        ) from exc
    return frozenset(CONFIG_MAPPING.keys())


def _shards(folder: Path) -> tuple[list[str], tuple[str, dict[str, str]] | None]:
    """The weight files, and the index (its path and weight map) where the model is sharded."""
    single, index = folder / WEIGHTS, folder / INDEX
    if index.is_file():
        raw = _json(index).get("weight_map")
        if not isinstance(raw, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in raw.items()
        ):
            raise CheckpointError("weight_map is not an object of names to files",
                                  path=str(index), key="weight_map")  # fmt: skip
        names = sorted(set(raw.values()))
        for name in names:
            if "/" in name or "\\" in name or name.startswith(".") or not name.endswith(
                ".safetensors"
            ):
                raise CheckpointError(f"shard {shown(name)} is not a .safetensors file in "
                                      "the folder", path=str(index), key="weight_map")  # fmt: skip
            if not (folder / name).is_file():
                raise CheckpointError(f"shard {shown(name)} is missing", path=str(index))
        return [str(folder / n) for n in names], (str(index), raw)
    if single.is_file():
        return [str(single)], None
    pickled = sorted(p.name for pattern in PICKLED for p in folder.glob(pattern))
    if pickled:
        raise CheckpointError(f"its weights are only in pickle form ({', '.join(pickled[:3])}), "
                              "which can run code when loaded; evalloss reads only safetensors "
                              "(save with safe_serialization=True)", path=str(folder))  # fmt: skip
    raise CheckpointError(f"no {WEIGHTS} or {INDEX}", path=str(folder))


def _check_index(index: tuple[str, dict[str, str]], shapes: dict[str, tuple[int, ...]]) -> None:
    path, weight_map = index
    unlisted = sorted(set(shapes) - set(weight_map))
    absent = sorted(set(weight_map) - set(shapes))
    if unlisted or absent:
        name = (unlisted or absent)[0]
        why = "is in a shard but not in the index" if unlisted else "is in no shard"
        raise CheckpointError(f"tensor {shown(name)} {why}", path=path, key="weight_map")


def _tokenizer(folder: Path) -> Path | None:
    """``tokenizer.json`` if there is one. A tokenizer config that asks for code is refused
    whether or not it would be used; one without ``tokenizer.json`` is ignored (text data then
    says that it needs one)."""
    config = folder / TOKENIZER_CONFIG
    if config.is_file():
        _refuse_nested(_json(config), config, {"auto_map": CODE})
    tokenizer = folder / TOKENIZER
    return tokenizer if tokenizer.is_file() else None
