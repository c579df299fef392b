"""Bad tensor files and bad Dataset factories: exit 2 and one stderr line naming the file (or
the factory) and the key; nothing unpickled, nothing written."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from torch import nn

from tests.conftest import run
from tests.datasets import images

DATASETS = str(Path(__file__).parent / "datasets.py")


@pytest.fixture
def ckpt(save) -> Path:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return save(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), loss="cross-entropy")


def _error(ckpt: Path, data: object, *extra: str, output: Path | None = None) -> str:
    more = ("-o", output) if output is not None else ()
    result = run("compare", ckpt, "--data", data, *extra, *more)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert output is None or not output.exists()
    return lines[0].replace(str(data), "DATA")


def _good() -> dict[str, np.ndarray]:
    x, y = images(6)
    return {"inputs": x.numpy(), "targets": y.numpy()}


def test_missing_key(tmp_path: Path, ckpt: Path) -> None:
    np.savez(tmp_path / "d.npz", inputs=_good()["inputs"], labels=_good()["targets"])
    line = _error(ckpt, tmp_path / "d.npz")
    assert line == "evalloss: error: DATA: targets: no such array; arrays are: 'inputs', 'labels'"
    line = _error(ckpt, tmp_path / "d.npz", "--targets-key", "labels", "--inputs-key", "x")
    assert line == "evalloss: error: DATA: x: no such array; arrays are: 'inputs', 'labels'"
    save_file(_good(), str(tmp_path / "d.safetensors"))
    line = _error(ckpt, tmp_path / "d.safetensors", "--targets-key", "y")
    assert line == "evalloss: error: DATA: y: no such tensor; tensors are: 'inputs', 'targets'"


def test_item_count_mismatch(tmp_path: Path, ckpt: Path) -> None:
    good = _good()
    np.savez(tmp_path / "d.npz", inputs=good["inputs"], targets=good["targets"][:5])
    assert _error(ckpt, tmp_path / "d.npz") == (
        "evalloss: error: DATA: targets: 5 items, but inputs has 6: item i is "
        "(inputs[i], targets[i])"
    )


def test_object_arrays_are_never_unpickled(tmp_path: Path, ckpt: Path) -> None:
    targets = np.array([{"label": 1}] * 6, dtype=object)  # saved pickled inside the .npy
    np.savez(tmp_path / "d.npz", inputs=_good()["inputs"], targets=targets)
    line = _error(ckpt, tmp_path / "d.npz", output=tmp_path / "r.json")
    assert line.startswith("evalloss: error: DATA: targets: holds Python objects (dtype object")


def test_fortran_order_and_strings_are_refused(tmp_path: Path, ckpt: Path) -> None:
    good = _good()
    np.savez(tmp_path / "f.npz", inputs=np.asfortranarray(good["inputs"]), targets=good["targets"])
    assert "DATA: inputs: stored in Fortran order (not C-contiguous)" in _error(ckpt, tmp_path / "f.npz")
    np.savez(tmp_path / "s.npz", inputs=good["inputs"], targets=np.array(["cat"] * 6))
    assert "DATA: targets: dtype '<U3' is not numbers" in _error(ckpt, tmp_path / "s.npz")


def test_truncated_files(tmp_path: Path, ckpt: Path) -> None:
    import io

    good = _good()
    np.savez(tmp_path / "d.npz", **good)
    save_file(good, str(tmp_path / "d.safetensors"))
    for name, want in (("d.npz", "not a readable .npz (zip) file"),
                       ("d.safetensors", "not a readable safetensors file")):  # fmt: skip
        cut = tmp_path / f"cut-{name}"
        cut.write_bytes((tmp_path / name).read_bytes()[:-100])  # a download cut short
        assert _error(ckpt, cut).startswith(f"evalloss: error: DATA: {want}")
    # a whole zip whose inputs.npy holds less data than its header promises
    npy = io.BytesIO()
    np.save(npy, good["inputs"])
    with zipfile.ZipFile(tmp_path / "short.npz", "w") as z:
        z.writestr("inputs.npy", npy.getvalue()[:-184])
        z.writestr("targets.npy", _npy(good["targets"]))
    assert _error(ckpt, tmp_path / "short.npz") == (
        "evalloss: error: DATA: inputs: truncated: shape (6, 1, 8, 8) of uint8 needs 384 "
        "bytes, the file holds 200"
    )


def _npy(array: np.ndarray) -> bytes:
    import io

    out = io.BytesIO()
    np.save(out, array)
    return out.getvalue()


def test_compressed_npz_is_refused_by_name(tmp_path: Path, ckpt: Path) -> None:
    np.savez_compressed(tmp_path / "d.npz", **_good())
    assert _error(ckpt, tmp_path / "d.npz") == (
        "evalloss: error: DATA: inputs: the array is compressed (np.savez_compressed): tensor "
        "data is memory-mapped, which needs stored arrays; save it with np.savez"
    )


def test_not_a_zip(tmp_path: Path, ckpt: Path) -> None:
    (tmp_path / "d.npz").write_bytes(b"\x80\x04K\x01.")  # a pickle
    assert _error(ckpt, tmp_path / "d.npz").startswith(
        "evalloss: error: DATA: not a readable .npz (zip) file"
    )


def test_class_ids_out_of_range_outside_the_ignore_index(tmp_path: Path, save) -> None:  # type: ignore[no-untyped-def]
    x, _ = images(4)
    masks = np.zeros((4, 8, 8), dtype=np.uint8)
    masks[:, 0] = 255
    masks[2, 3, 5] = 7
    np.savez(tmp_path / "d.npz", inputs=x.numpy(), targets=masks)
    ckpt = save(nn.Sequential(nn.Conv2d(1, 3, 1)), loss="cross-entropy")
    assert _error(ckpt, tmp_path / "d.npz", "--ignore-index", "255") == (
        "evalloss: error: DATA: targets: item 3 at (3, 5): class label must be an integer in "
        "[0, 3) or the --ignore-index 255: 7"
    )
    masks[2, 3, 5] = 0
    masks[1] = 255  # an item with nothing counted
    np.savez(tmp_path / "d.npz", inputs=x.numpy(), targets=masks)
    line = _error(ckpt, tmp_path / "d.npz", "--ignore-index", "255")
    assert line.startswith(
        "evalloss: error: DATA: targets: item 2 at (0, 0): every target element is the "
        "--ignore-index 255"
    )
    line = _error(ckpt, tmp_path / "d.npz")  # without --ignore-index, 255 is a bad class id
    assert "item 1 at (0, 0): class label must be an integer in [0, 3): 255" in line
    line = _error(ckpt, tmp_path / "d.npz", "--ignore-index", "255", "--loss", "mse")
    assert line == "evalloss: error: --ignore-index: applies to cross-entropy and nll, not mse"


def test_nonfinite_inputs_are_named(tmp_path: Path, ckpt: Path) -> None:
    x = np.zeros((5, 1, 8, 8), dtype=np.float32)
    x[3, 0, 2, 2] = np.nan
    np.savez(tmp_path / "d.npz", inputs=x, targets=np.zeros(5, dtype=np.int64))
    assert _error(ckpt, tmp_path / "d.npz") == (
        "evalloss: error: DATA: inputs: item 4: value is not finite"
    )


@pytest.mark.parametrize(
    ("name", "want"),
    [
        ("raises", "raises() failed: ValueError: no such folder: /data/val"),
        ("not_a_dataset", "not_a_dataset() returned list, not a torch Dataset or IterableDataset"),
        ("singles", "item 1 is a Tensor, expected an (input, target) pair"),
        ("triples", "item 1 is a tuple of 3, expected an (input, target) pair"),
        ("text_targets", "items from 1: the target is not a tensor or a number"),
        ("fails_at_7", "reading items 1-10 failed: OSError: image 7 is truncated"),
        ("empty", "the Dataset has no items"),
        ("missing", f"{DATASETS} defines no 'missing'"),
    ],
)
def test_bad_factories_are_named(ckpt: Path, name: str, want: str) -> None:
    line = _error(ckpt, f"{DATASETS}:{name}", "--workers", "0")
    assert line.startswith(f"evalloss: error: DATA: {want}"), line


def test_a_failing_worker_is_one_line(ckpt: Path) -> None:
    line = _error(ckpt, f"{DATASETS}:fails_at_7", "--workers", "1", "--batch-size", "4")
    assert line == "evalloss: error: DATA: reading items 5-8 failed: OSError: image 7 is truncated"


def test_an_iterable_dataset_takes_no_workers(ckpt: Path) -> None:
    line = _error(ckpt, f"{DATASETS}:stream", "--workers", "2")
    assert line.startswith("evalloss: error: --workers: an IterableDataset is read in this process")


def test_a_factory_file_that_does_not_exist(ckpt: Path, tmp_path: Path) -> None:
    line = _error(ckpt, f"{tmp_path}/nope.py:Data")
    assert line == f"evalloss: error: {tmp_path}/nope.py: --data: no such file"
