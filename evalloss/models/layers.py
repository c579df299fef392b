"""The ``evalloss.layers`` spec: a JSON list in a checkpoint -> an ``nn.Sequential``.

A spec is a JSON list of ``[LayerName, {kwargs}]``. Nothing read from a file is imported or
looked up on a module: a layer name is only ever a key of the fixed tables in `allowlist`,
each keyword must be one the table lists for that layer, and each value is checked (JSON
scalars or lists of them). Sizes are capped and the parameter count is computed from the
keywords before anything is allocated; the layers are then built on the ``meta`` device, so a
spec such as ``Linear(10**9, 10**9)`` is refused, never attempted.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from evalloss.errors import CheckpointError, ModelError, shown
from evalloss.models.allowlist import ALLOWED, REQUIRED, classes, parameters
from evalloss.models.checkpoint import Checkpoint, load_tensors
from evalloss.models.loading import check_fit, load_into

if TYPE_CHECKING:
    from torch import nn

MAX_PARAMETERS = 1 << 30  # all parameters and buffers of one spec (1,073,741,824 elements)
MAX_LAYERS = 1000
KEY = "evalloss.layers"

Spec = list[tuple[str, dict[str, Any]]]


def accepts(checkpoint: Checkpoint) -> bool:
    """Checkpoints that carry their own ``evalloss.layers`` spec."""
    return KEY in checkpoint.metadata


def build(
    checkpoint: Checkpoint, spec: str | None, kwargs: dict[str, Any], wanted: object = None
) -> nn.Module:
    """Build the checkpoint's spec from the allow-list and load it (``--model`` is not used).

    The spec is checked and its shapes compared with the header before any storage exists.
    The file's tensors, cast to the layers' dtypes, replace the ``meta`` ones (``assign``):
    nothing is allocated twice, and ``to_empty``'s meta kernels (which import sympy, half a
    second) are not needed.
    """
    path = checkpoint.path
    module = sequential(parse(checkpoint.metadata[KEY], path), path)
    check_fit(module, checkpoint, f"its {KEY} spec")
    dtypes = {k: v.dtype for k, v in module.state_dict().items()}
    tensors = load_tensors(checkpoint)
    for key, tensor in tensors.items():
        try:
            tensors[key] = tensor.to(dtypes[key])
        except (RuntimeError, TypeError) as exc:  # a dtype torch cannot convert
            raise CheckpointError(
                f"tensor {shown(key)}: cannot convert {tensor.dtype} to {dtypes[key]}", path=path
            ) from exc
    load_into(module, tensors, path, assign=True)
    return module


def parse(text: str, path: str | None = None) -> Spec:
    """Check a spec's JSON text against the allow-list; refuse anything else by name."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ModelError(f"not valid JSON ({exc})", path=path, key=KEY) from None
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_LAYERS:
        raise ModelError(
            f"expected a JSON list of 1 to {MAX_LAYERS} [LayerName, {{kwargs}}] entries",
            path=path,
            key=KEY,
        )
    spec: Spec = []
    total = 0
    for i, entry in enumerate(raw):
        try:
            name, kwargs = _layer(entry)
            total += parameters(name, kwargs)
            if total > MAX_PARAMETERS:
                raise ValueError(
                    f"({name}): the spec needs more than {MAX_PARAMETERS} parameters "
                    "(the cap); refused before allocating anything"
                )
        except ValueError as exc:  # "(Name): why" once the name is known, else "why"
            why = str(exc)
            where = f"layer {i} " if why.startswith("(") else f"layer {i}: "
            raise ModelError(where + why, path=path, key=KEY) from None
        spec.append((name, kwargs))
    return spec


def _layer(entry: object) -> tuple[str, dict[str, Any]]:
    """One ``[LayerName, {kwargs}]`` entry, checked; ValueError says what is wrong."""
    if not isinstance(entry, list) or len(entry) not in (1, 2):
        raise ValueError(f"expected [LayerName, {{kwargs}}], got {shown(entry)}")
    name, given = entry[0], (entry[1] if len(entry) == 2 else {})
    if not isinstance(name, str) or name not in ALLOWED:
        raise ValueError(
            f"{shown(name)} is not in the allow-list of torch.nn layers (see docs/checkpoints.md)"
        )
    if not isinstance(given, dict):
        raise ValueError(f"({name}): kwargs must be a JSON object")
    kwargs: dict[str, Any] = {}
    for key, value in given.items():
        check = ALLOWED[name].get(key)
        if check is None:
            known = ", ".join(ALLOWED[name]) or "none"
            raise ValueError(f"({name}): unknown argument {shown(key)}; known: {known}")
        try:
            kwargs[key] = check(value)
        except ValueError as exc:
            raise ValueError(f"({name}): {key}: {exc}") from None
    missing = [k for k in REQUIRED.get(name, ()) if k not in kwargs]
    if missing:
        raise ValueError(f"({name}): missing argument {', '.join(missing)}")
    return name, kwargs


def sequential(spec: Spec, path: str | None = None) -> nn.Sequential:
    """The ``nn.Sequential`` a checked spec describes, on the ``meta`` device (no storage).

    Load the weights to use it (`build`).
    """
    import torch
    from torch import nn

    table = classes()
    layers = []
    with torch.device("meta"):
        for i, (name, kwargs) in enumerate(spec):
            try:
                layers.append(table[name](**kwargs))
            except (TypeError, ValueError, RuntimeError, AssertionError) as exc:
                raise ModelError(
                    f"layer {i} ({name}): cannot build it ({exc})", path=path, key=KEY
                ) from exc
    for layer in layers:
        if isinstance(layer, nn.Embedding):
            layer.register_forward_pre_hook(_as_indices)
    return nn.Sequential(*layers)


def _as_indices(layer: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Features arrive as floats; an Embedding takes them as indices if they are whole numbers."""
    x = args[0]
    if not x.is_floating_point():
        return args
    indices = x.long()
    if not bool((indices.to(x.dtype) == x).all()):
        raise ValueError("Embedding takes whole-number features (indices); got fractions")
    return (indices, *args[1:])


# Attributes that change what a layer computes but that no spec can express: a layer whose
# attribute differs from this value is saved with `evalloss.model` instead of a spec.
_FIXED: dict[str, dict[str, object]] = {
    "Embedding": {"max_norm": None},
    "MaxPool1d": {"return_indices": False},
    "MaxPool2d": {"return_indices": False},
    "AvgPool2d": {"divisor_override": None},
    "AdaptiveMaxPool1d": {"return_indices": False},
    "AdaptiveMaxPool2d": {"return_indices": False},
    "Upsample": {"recompute_scale_factor": None},
}


def describe(module: nn.Module) -> str | None:
    """The spec of ``module`` as JSON text, or None when it is not a plain allow-listed stack."""
    from torch import nn

    if type(module) is not nn.Sequential:
        return None
    names = {cls: name for name, cls in classes().items()}
    raw: list[list[object]] = []
    for i, (child, layer) in enumerate(module.named_children()):
        name = names.get(type(layer))
        if child != str(i) or name is None:
            return None
        if any(getattr(layer, a, v) != v for a, v in _FIXED.get(name, {}).items()):
            return None
        kwargs = {arg: _json(_attribute(layer, arg)) for arg in ALLOWED[name]}
        raw.append([name, kwargs])
    if not raw:
        return None
    text = json.dumps(raw, separators=(",", ":"))
    try:
        rebuilt = sequential(parse(text))
    except ModelError:
        return None
    mine = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    if mine != {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}:
        return None  # e.g. parameters added or removed by hand
    return text


def _attribute(layer: nn.Module, arg: str) -> object:
    if arg == "bias":  # Linear, Conv, LayerNorm take a flag and keep a tensor or None
        return getattr(layer, "bias", None) is not None
    return getattr(layer, arg)


def _json(value: object) -> object:
    return list(value) if isinstance(value, tuple) else value


def allow_list_markdown() -> str:
    """The allow-list as a Markdown table (docs/checkpoints.md embeds it; a test checks it)."""
    lines = ["| layer | keyword arguments (required in bold) |", "|---|---|"]
    for name, args in ALLOWED.items():
        required = REQUIRED.get(name, ())
        shown = [f"**{a}**" if a in required else a for a in args]
        lines.append(f"| `{name}` | {', '.join(shown) or '(none)'} |")
    return "\n".join(lines) + "\n"
