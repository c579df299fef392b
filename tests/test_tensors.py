"""Tensor data of any shape (.npz, .safetensors) against float64 oracles written out by hand:
one item at a time, every element's loss by its formula (tests/oracles.py), summed with fsum."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from torch import nn

import evalloss
from evalloss.options import Options
from evalloss.sources import open_data
from tests import oracles
from tests.conftest import run
from tests.datasets import images
from tests.test_schema import _check as _check_schema


def _write(tmp_path: Path, kind: str, name: str = "d", **arrays: np.ndarray) -> Path:
    path = tmp_path / f"{name}.{kind}"
    if kind == "npz":
        np.savez(path, **arrays)  # type: ignore[arg-type]
    else:
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))
    return path


def _outputs(net: nn.Module, x: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return net.double()(torch.from_numpy(x).double())


def _item_figures(name: str, out: torch.Tensor, y: np.ndarray, ignore: int | None = None):  # type: ignore[no-untyped-def]
    """Per item: (sum of its counted elements' losses, counted), each element by hand."""
    figures = []
    for o, t in zip(out.tolist(), y.tolist(), strict=True):
        if name in ("cross-entropy", "nll"):  # o: (C, *d), t: (*d)
            logits = np.moveaxis(np.array(o), 0, -1).reshape(-1, len(o)).tolist()
            ts = np.array(t).reshape(-1).tolist()
            values = [oracles.item_loss(name, z, [c]) for z, c in zip(logits, ts, strict=True)
                      if c != ignore]  # fmt: skip
        else:
            values = [oracles.item_loss(name, [a], [b]) for a, b in
                      zip(np.ravel(o).tolist(), np.ravel(t).tolist(), strict=True)]  # fmt: skip
        figures.append((math.fsum(values), len(values)))
    return figures


def _cnn(classes: int = 10) -> nn.Sequential:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, classes)
    )


@pytest.mark.parametrize("kind", ["npz", "safetensors"])
@pytest.mark.parametrize("batch_size", [1, 5, 64])
def test_image_classifier_against_the_oracle(tmp_path: Path, save, kind: str, batch_size: int) -> None:  # type: ignore[no-untyped-def]
    x, y = (t.numpy() for t in images())
    data = _write(tmp_path, kind, inputs=x, targets=y)
    net = _cnn()
    ckpt = save(net, loss="cross-entropy")
    report = evalloss.compare([ckpt], data=data, precision="float64", batch_size=batch_size)
    out = _outputs(net, x)
    figures = _item_figures("cross-entropy", out, y)
    model = report.models[0]
    assert model.items == len(y) == report.data.items
    assert model.loss_sum == pytest.approx(math.fsum(s / w for s, w in figures), rel=1e-12)
    assert model.accuracy == sum(int(o.argmax() == t) for o, t in zip(out, y, strict=True)) / len(y)
    assert "loss_per_element" not in report.to_dict()["models"][0]  # every item weighs one
    assert report.data.targets == ("targets",)


@pytest.mark.parametrize("kind", ["npz", "safetensors"])
def test_segmentation_with_ignore_index(tmp_path: Path, save, kind: str) -> None:  # type: ignore[no-untyped-def]
    """(N, C, H, W) against (N, H, W) masks with 255: an item is the mean over its counted
    pixels, loss_per_element the pixel-weighted figure, accuracy per counted pixel."""
    x, _ = images(9)
    g = torch.Generator().manual_seed(3)
    masks = torch.randint(0, 3, (9, 8, 8), generator=g, dtype=torch.uint8)
    masks[torch.rand(9, 8, 8, generator=g) < torch.linspace(0, 0.9, 9)[:, None, None]] = 255
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1))
    data = _write(tmp_path, kind, images=x.numpy(), masks=masks.numpy())
    ckpt = save(net, loss="cross-entropy")
    result = run("compare", ckpt, "--data", data, "--inputs-key", "images", "--targets-key",
                 "masks", "--ignore-index", "255", "--precision", "float64", "--batch-size", "4",
                 "--format", "json")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    _check_schema(document)
    model = document["models"][0]
    out = _outputs(net, x.numpy())
    figures = _item_figures("cross-entropy", out, masks.numpy(), ignore=255)
    assert len({w for _, w in figures}) > 1  # the items differ in weight
    assert model["loss_sum"] == pytest.approx(math.fsum(s / w for s, w in figures), rel=1e-12)
    assert model["loss_per_item"] == pytest.approx(model["loss_sum"] / 9, rel=1e-15)
    weight = sum(w for _, w in figures)
    assert model["weight"] == weight
    assert model["loss_per_element"] == pytest.approx(
        math.fsum(s for s, _ in figures) / weight, rel=1e-12
    )
    counted = masks != 255
    correct = ((out.argmax(1) == masks.long()) & counted).sum()
    assert model["accuracy"] == int(correct) / int(counted.sum())


@pytest.mark.parametrize(
    ("loss", "shape"), [("mse", (2, 3)), ("l1", (4,)), ("smooth-l1", (2, 2, 3)), ("bce-logits", (5,))]
)
def test_regression_and_multilabel_shapes(tmp_path: Path, save, loss: str, shape: tuple[int, ...]) -> None:  # type: ignore[no-untyped-def]
    g = torch.Generator().manual_seed(4)
    x = torch.randn(17, *shape[:-1], 3, generator=g, dtype=torch.float64)
    y = torch.randn(17, *shape, generator=g, dtype=torch.float64)
    if loss == "bce-logits":  # multi-label: K labels of 0/1 per item
        y = (y > 0).to(torch.float32)
    torch.manual_seed(5)
    net = nn.Sequential(nn.Linear(3, shape[-1]))
    data = _write(tmp_path, "npz", inputs=x.numpy(), targets=y.numpy())
    report = evalloss.compare([save(net)], data=data, loss=loss, precision="float64", batch_size=4)
    figures = _item_figures(loss, _outputs(net, x.numpy()), y.numpy())
    assert report.models[0].loss_sum == pytest.approx(math.fsum(s / w for s, w in figures), rel=1e-12)
    if loss == "bce-logits":  # accuracy per label
        out = _outputs(net, x.numpy())
        assert report.models[0].accuracy == float(((out > 0) == (y > 0.5)).double().mean())


def test_evaluate_takes_the_same_shapes() -> None:
    """The API scores (N, C, H, W) against (N, H, W) and (N, 2, 3) against (N, 2, 3) without
    flattening them, and converts uint8 inputs on the model's device."""
    x, _ = images(6)
    masks = torch.randint(0, 3, (6, 8, 8), generator=torch.Generator().manual_seed(6))
    masks[0, :4] = 255
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1)).double()
    batches = [(x[:4], masks[:4]), (x[4:], masks[4:])]
    result = evalloss.evaluate(net, batches, "cross-entropy", ignore_index=255)
    figures = _item_figures("cross-entropy", _outputs(net, x.numpy()), masks.numpy(), ignore=255)
    assert result.loss_sum == pytest.approx(math.fsum(s / w for s, w in figures), rel=1e-12)
    assert result.weight == sum(w for _, w in figures) == 6 * 64 - 32
    assert result.loss_per_element == pytest.approx(
        math.fsum(s for s, _ in figures) / result.weight, rel=1e-12
    )
    y3 = torch.randn(6, 2, 3, dtype=torch.float64)
    z = evalloss.evaluate(nn.Identity(), [(torch.zeros(6, 2, 3, dtype=torch.float64), y3)], "mse")
    assert z.loss_sum == pytest.approx(math.fsum((y3**2).mean(dim=(1, 2)).tolist()), rel=1e-12)
    with pytest.raises(evalloss.LossError, match=r"needs model output of shape \(6, 2, 3\)"):
        evalloss.evaluate(nn.Flatten(), [(torch.zeros(6, 2, 3), y3)], "mse")


def test_uint8_stays_uint8_until_the_device(tmp_path: Path) -> None:
    x, y = images(5)
    data = _write(tmp_path, "npz", inputs=x.numpy(), targets=y.numpy())
    (block,) = open_data(data, Options(data=str(data))).blocks(torch.float64)
    assert block.inputs.dtype == torch.uint8 and torch.equal(block.inputs, x)  # type: ignore[union-attr]
    seen = []
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).double()
    net.register_forward_pre_hook(lambda _, args: seen.append(args[0].dtype))
    evalloss.evaluate(net, [(x, y)], "cross-entropy")
    assert seen == [torch.float64]


def test_blocks_are_mapped_then_unmapped(tmp_path: Path) -> None:
    """Memory flat in N: each block maps only its own items, and the map is gone after."""
    x = np.arange(4000 * 64, dtype=np.float32).reshape(4000, 64)
    data = _write(tmp_path, "npz", inputs=x, targets=np.zeros(4000, dtype=np.int64))
    source = open_data(data, Options(data=str(data))).for_pass(100, torch.device("cpu"))
    maps = Path("/proc/self/maps")
    for block in source.blocks(torch.float32):
        assert len(block) % 100 == 0
        assert torch.equal(block.inputs, torch.from_numpy(x[block.row : block.row + len(block)]))  # type: ignore[arg-type]
        if maps.exists():
            assert str(data) not in maps.read_text()


def test_shares_of_processes_cover_every_item_once(tmp_path: Path) -> None:
    x, y = images(23)
    data = _write(tmp_path, "safetensors", inputs=x.numpy(), targets=y.numpy())
    source = open_data(data, Options(data=str(data)))
    rows = [b.row + i for r in range(3) for b in source.blocks(torch.float32, rank=r, world=3)
            for i in range(len(b))]  # fmt: skip
    assert rows == list(range(23))


def test_first_nonfinite() -> None:
    from evalloss.sources.tensors import first_nonfinite

    x = torch.zeros(5, 2, 3)
    assert first_nonfinite(x) is None
    x[3, 1, 2] = float("-inf")
    x[4, 0, 0] = float("nan")
    assert first_nonfinite(x) == 3
    big = torch.full((4, 3), 3e38)  # finite, but its float32 sum overflows
    assert first_nonfinite(big) is None
    big[2, 1] = float("inf")
    assert first_nonfinite(big) == 2
    assert first_nonfinite({"a": torch.zeros(2), "b": torch.tensor([0.0, float("nan")])}) == 1


def test_models_one_at_a_time_read_tensor_data_once(tmp_path: Path, save, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """--one-at-a-time: the same report, and the file's blocks kept from the first pass."""
    from evalloss.sources import tensors

    x, y = images(23)
    data = _write(tmp_path, "npz", inputs=x.numpy(), targets=y.numpy())
    ckpts = []
    for i in range(2):
        torch.manual_seed(i)
        ckpts.append(save(_cnn(), name=f"m{i}", loss="cross-entropy"))
    together = evalloss.compare(ckpts, data=data, precision="float64", batch_size=5)
    reads = []
    real = tensors.TensorFile._read
    monkeypatch.setattr(tensors.TensorFile, "_read",
                        lambda self, *a: reads.append(a[1]) or real(self, *a))  # fmt: skip
    apart = evalloss.compare(ckpts, data=data, precision="float64", batch_size=5,
                             one_at_a_time=True)  # fmt: skip
    assert [m.loss_sum for m in apart.models] == [m.loss_sum for m in together.models]
    assert reads == [0, 0]  # inputs and targets once, one block, not once per model
