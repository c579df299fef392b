"""An adapter attached to a base model through peft's own API, strictly: ``PeftModel`` (or its
``add_adapter`` for the next adapter of the same type), its weights read from
``adapter_model.safetensors`` here (`checkpoint.load_tensors`: never ``torch.load``, never
peft's own loader, which falls back to pickle and to the Hub) and set with peft's
``set_peft_model_state_dict``. Every tensor of the file must be one peft would save for the
adapter as attached (``get_peft_model_state_dict``), of the same shape, and every one it
would save must be in the file: a bad one is named, never left at its initial value.

The config is built by peft's class for its ``peft_type`` from the JSON `peftfolder` checked:
``auto_mapping`` is dropped (never imported), and ``init_lora_weights`` is off (every adapter
tensor is loaded, so the initial values are never used).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from evalloss.errors import CheckpointError, EvallossWarning, shown
from evalloss.models.checkpoint import Checkpoint, load_tensors

if TYPE_CHECKING:
    from torch import nn

_DROPPED = ("auto_mapping", "runtime_config")


def config_of(checkpoint: Checkpoint) -> Any:
    """peft's config object for the adapter; peft's own warnings (a key this peft does not
    know, ignored) as evalloss warnings naming the file."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    adapter = checkpoint.adapter
    assert adapter is not None
    where = adapter.files[0]
    raw = {k: v for k, v in adapter.config.items() if k not in _DROPPED}
    if "init_lora_weights" in raw:
        raw["init_lora_weights"] = False
    raw["inference_mode"] = True
    config_class: Any = next(v for k, v in PEFT_TYPE_TO_CONFIG_MAPPING.items()
                             if str(k.value) == adapter.peft_type)  # fmt: skip
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            config = config_class.from_peft_type(**raw)
        except Exception as exc:  # a value peft's config class refuses
            raise CheckpointError(f"peft refuses it ({_first(exc)})", path=where) from exc
    for warning in caught:
        warnings.warn(f"{where}: peft: {_first(warning.message)}", EvallossWarning, stacklevel=3)
    return config


def attach(peft: Any, model: nn.Module, name: str, checkpoint: Checkpoint) -> Any:
    """The adapter attached to ``model`` as ``name`` and its weights loaded: a new
    ``PeftModel`` (``peft`` None) or the next adapter of ``peft``. Returns the PeftModel."""
    from peft import PeftModel

    assert checkpoint.adapter is not None
    base = checkpoint.adapter.base.path
    config = config_of(checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft's notes on layer kinds: not the user's concern
        try:
            if peft is None:
                peft = PeftModel(model, config, adapter_name=name, autocast_adapter_dtype=False)
            else:
                peft.add_adapter(name, config)
        except Exception as exc:  # target modules that match nothing, a layer peft cannot adapt
            raise CheckpointError(f"peft cannot attach it to its base {base} ({_first(exc)})",
                                  path=checkpoint.path) from exc  # fmt: skip
        _load(peft, name, checkpoint)
    peft.eval()
    return peft


def _load(peft: Any, name: str, checkpoint: Checkpoint) -> None:
    """The file's tensors into adapter ``name``: each one peft would save for it, of its
    shape, none missing."""
    from peft.utils.save_and_load import get_peft_model_state_dict, set_peft_model_state_dict

    adapter = checkpoint.adapter
    assert adapter is not None
    path, base = adapter.weights.path, adapter.base.path
    wanted = get_peft_model_state_dict(peft, adapter_name=name, save_embedding_layers=False)
    expected = {k: tuple(v.shape) for k, v in wanted.items()}
    found = adapter.weights.shapes
    unexpected = sorted(set(found) - set(expected))
    if unexpected:
        raise CheckpointError(f"tensor {shown(unexpected[0])}{_more(unexpected)} matches no "
                              f"adapted module of the base {base}", path=path)  # fmt: skip
    wrong = sorted(k for k in found if found[k] != expected[k])
    if wrong:
        k = wrong[0]
        raise CheckpointError(f"tensor {shown(k)}{_more(wrong)} has shape {list(found[k])}; its "
                              f"module in the base {base} takes {list(expected[k])}",
                              path=path)  # fmt: skip
    missing = sorted(set(expected) - set(found))
    if missing:
        raise CheckpointError(f"has no tensor {shown(missing[0])}{_more(missing)}, which the "
                              "adapter's config asks for", path=path)  # fmt: skip
    tensors = load_tensors(adapter.weights)
    try:
        result: Any = set_peft_model_state_dict(peft, tensors, adapter_name=name)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(f"peft cannot load it ({_first(exc)})", path=path) from exc
    left = list(result.unexpected_keys)  # none, after the checks above: peft's own word
    if left:
        raise CheckpointError(f"tensor {shown(left[0])}{_more(left)} was not loaded by peft",
                              path=path)  # fmt: skip


def _more(keys: list[str]) -> str:
    return f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""


def _first(exc: object) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]
