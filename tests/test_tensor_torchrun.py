"""Tensor data and Dataset factories under torchrun: two processes give the one-process report
(item shares, element sums and item weights merged exactly across ranks)."""

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
from tests.datasets import images
from tests.test_distributed import DRIVER, _torchrun

DATASETS = str(Path(__file__).parent / "datasets.py")


@pytest.mark.slow
def test_torchrun_tensor_data_equals_one_process(tmp_path: Path) -> None:
    x, y = images(23)
    masks = torch.randint(0, 3, (23, 8, 8), generator=torch.Generator().manual_seed(1))
    masks[:11, :3] = 255  # rank 0 has items 0-10: each rank uniform, the two ranks differ
    np.savez(tmp_path / "seg.npz", inputs=x.numpy(), targets=masks.numpy())
    save_file({"inputs": x.numpy(), "targets": y.numpy()}, str(tmp_path / "cls.safetensors"))
    seg, cls = [], []
    for i in range(2):
        torch.manual_seed(i)
        seg.append(str(tmp_path / f"seg{i}.safetensors"))
        evalloss.save(nn.Sequential(nn.Conv2d(1, 3, 3, padding=1)), seg[-1], loss="cross-entropy")
        cls.append(str(tmp_path / f"cls{i}.safetensors"))
        evalloss.save(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), cls[-1], loss="cross-entropy")
    common = ["--format", "json", "--precision", "float64", "--batch-size", "4"]
    cases = {
        "seg": ["compare", *seg, "--data", "seg.npz", "--ignore-index", "255", *common],
        "cls": ["compare", *cls, "--data", "cls.safetensors", "--baseline", cls[0], *common],
        "dataset": ["compare", *cls, "--data", f"{DATASETS}:digits", "--workers", "0", *common],
        "stream": ["compare", *cls, "--data", f"{DATASETS}:stream", *common],
    }
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    done = _torchrun(DRIVER, tmp_path / "cases.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    zero = json.loads((tmp_path / "cases.json.0.out").read_text())
    for name, args in cases.items():
        assert zero[name]["code"] in (None, 0), zero[name]["stderr"]
        many = json.loads(zero[name]["stdout"])
        data = args[args.index("--data") + 1]
        one = evalloss.compare(
            seg if name == "seg" else cls, data=data if ":" in data else tmp_path / data,
            precision="float64", batch_size=4, ignore_index=255 if name == "seg" else None,
            baseline=cls[0] if name == "cls" else None, workers=0 if name == "dataset" else None,
        ).to_dict()  # fmt: skip
        assert many["world_size"] == 2
        for a, b in zip(one["models"], many["models"], strict=True):
            assert (a["path"], a["items"], a["accuracy"]) == (b["path"], b["items"], b["accuracy"])
            assert math.isclose(a["loss_sum"], b["loss_sum"], rel_tol=1e-12)
            if name == "seg":
                assert a["weight"] == b["weight"] == 11 * 40 + 12 * 64
                assert math.isclose(a["loss_per_element"], b["loss_per_element"], rel_tol=1e-12)
            if a.get("vs_baseline"):
                assert math.isclose(a["vs_baseline"]["delta"], b["vs_baseline"]["delta"],
                                    rel_tol=1e-9)  # fmt: skip
