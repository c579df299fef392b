"""The activation bound of a layers spec, against torch's own forward pass (the oracle)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from evalloss.models import layers
from evalloss.models.activations import per_item
from evalloss.models.checkpoint import Checkpoint

SPECS = {
    "mlp": ([["Linear", {"in_features": 6, "out_features": 40}], ["ReLU", {}],
             ["Linear", {"in_features": 40, "out_features": 3}]], (6,)),
    "conv1d": ([["Unflatten", {"dim": 1, "unflattened_size": [2, 12]}],
                ["Conv1d", {"in_channels": 2, "out_channels": 5, "kernel_size": 3, "stride": 2,
                            "padding": 1, "dilation": 1}],
                ["MaxPool1d", {"kernel_size": 2, "ceil_mode": True}], ["Flatten", {}],
                ["Linear", {"in_features": 15, "out_features": 2}]], (24,)),
    "conv2d": ([["Unflatten", {"dim": 1, "unflattened_size": [1, 8, 8]}],
                ["Conv2d", {"in_channels": 1, "out_channels": 4, "kernel_size": [3, 5],
                            "padding": "same"}],
                ["AvgPool2d", {"kernel_size": 2, "stride": [2, 1], "padding": 1}],
                ["AdaptiveAvgPool2d", {"output_size": [3, 2]}], ["Flatten", {}],
                ["Linear", {"in_features": 24, "out_features": 2}]], (64,)),
    "dilated": ([["Unflatten", {"dim": 1, "unflattened_size": [3, 20]}],
                 ["Conv1d", {"in_channels": 3, "out_channels": 7, "kernel_size": 4,
                             "dilation": 3, "padding": "valid"}],
                 ["MaxPool1d", {"kernel_size": 3, "stride": 2, "dilation": 2}],
                 ["Flatten", {"start_dim": 0}]], (60,)),
    "cnn": ([["Unflatten", {"dim": 1, "unflattened_size": [2, 6, 5]}],
             ["ZeroPad2d", {"padding": [1, 0, 2, 3]}],
             ["Conv2d", {"in_channels": 2, "out_channels": 3, "kernel_size": 3}],
             ["ReflectionPad2d", {"padding": 1}], ["ConstantPad1d", {"padding": [2, 1], "value": 1.0}],
             ["Upsample", {"scale_factor": [2.5, 1.5], "mode": "nearest"}],
             ["ReplicationPad2d", {"padding": 2}], ["AdaptiveMaxPool2d", {"output_size": [4, 3]}],
             ["Upsample", {"size": [9, 7], "mode": "bilinear", "align_corners": True}],
             ["Dropout2d", {"p": 0.5}], ["Flatten", {}]], (60,)),
    "cnn1d": ([["Unflatten", {"dim": 1, "unflattened_size": [3, 10]}],
               ["ReplicationPad1d", {"padding": [0, 3]}], ["ZeroPad1d", {"padding": 2}],
               ["ReflectionPad1d", {"padding": 1}], ["AdaptiveMaxPool1d", {"output_size": 5}],
               ["Upsample", {"scale_factor": 3, "mode": "linear"}], ["Dropout1d", {"p": 0.1}]],
              (30,)),
    "embedding": ([["Embedding", {"num_embeddings": 10, "embedding_dim": 5}], ["Flatten", {}],
                   ["Linear", {"in_features": 15, "out_features": 2}]], (3,)),
}  # fmt: skip


def _oracle(module: nn.Module, item_shape: tuple[int, ...]) -> int:
    peak = 0

    def record(layer: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal peak
        peak = max(peak, args[0].numel() + output.numel())

    for layer in module:  # type: ignore[attr-defined]
        layer.register_forward_hook(record)
    with torch.inference_mode():
        module(torch.zeros((1, *item_shape)))
    return peak


@pytest.mark.parametrize("name", SPECS)
def test_the_bound_is_torchs_own_peak(name: str) -> None:
    spec, item_shape = SPECS[name]
    text = json.dumps(spec)
    module = layers.sequential(layers.parse(text)).to_empty(device="cpu")
    checkpoint = Checkpoint(path="m.safetensors", metadata={layers.KEY: text})
    assert per_item(checkpoint, item_shape) == _oracle(module, item_shape)


def test_no_bound_when_the_shapes_do_not_fit_or_there_is_no_spec() -> None:
    text = json.dumps([["Linear", {"in_features": 5, "out_features": 2}]])
    assert per_item(Checkpoint("m", {layers.KEY: text}), (4,)) is None
    assert per_item(Checkpoint("m", {}), (4,)) is None


def test_a_huge_spec_is_cut_or_refused_before_any_forward() -> None:
    from evalloss.errors import ModelError
    from evalloss.models.activations import ACTIVATION_BYTES, batch_limit

    wide = [["Linear", {"in_features": 2, "out_features": 1_000_000}]]
    ckpt = Checkpoint("w", {layers.KEY: json.dumps(wide)})
    assert batch_limit([ckpt], (2,), 4) == ACTIVATION_BYTES // (4 * (2 + 1_000_000))
    huge = [["Linear", {"in_features": 2, "out_features": 1000}],
            ["Unflatten", {"dim": 1, "unflattened_size": [1, 1000]}],
            ["Conv1d", {"in_channels": 1, "out_channels": 1_000_000, "kernel_size": 1}]]  # fmt: skip
    with pytest.raises(ModelError, match="GiB of activations for one item"):
        batch_limit([Checkpoint("h", {layers.KEY: json.dumps(huge)})], (2,), 4)
    assert math.isfinite(ACTIVATION_BYTES)
