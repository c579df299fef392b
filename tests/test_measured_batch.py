"""The default batch size of a ``--model`` module: its activations measured on one item give
the same rule as a layers spec's (issue 35), and the figures do not move."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

import evalloss
from evalloss.models import activations
from tests import nets
from tests.conftest import data_set, xy_csv

USER = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, hidden)
        self.act = nn.Tanh()
        self.fc2 = nn.Linear(hidden, 3)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Bare(nn.Module):  # its work outside leaf modules: nothing to measure
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(3, 3))

    def forward(self, x):
        return x @ self.w
'''


def _user(tmp_path: Path, save, spec: torch.nn.Sequential, name: str) -> Path:  # type: ignore[no-untyped-def]
    """The spec MLP's weights as a ``Net`` checkpoint (no evalloss.layers spec)."""
    (tmp_path / "user.py").write_text(USER)
    names = {"0": "fc1", "2": "fc2"}
    state = {f"{names[k[0]]}{k[1:]}": v for k, v in spec.state_dict().items()}
    module = torch.nn.Module()
    for key, sub in (("fc1", spec[0]), ("act", spec[1]), ("fc2", spec[2])):
        module.add_module(key, sub)
    assert set(module.state_dict()) == set(state)
    return save(module, name)  # not an nn.Sequential: saved without a spec


@pytest.mark.parametrize(("hidden", "wanted"), [(8, 32768), (100, 4096), (1000, 2048)])
def test_a_user_module_gets_the_batch_of_its_layers_spec(write_csv, save, tmp_path, hidden, wanted) -> None:  # type: ignore[no-untyped-def]
    x, y = data_set(40)
    data = xy_csv(write_csv, x, y)
    torch.manual_seed(hidden)
    spec = nets.mlp(hidden=hidden)
    user = _user(tmp_path, save, spec, "user")
    by_spec = evalloss.compare([save(spec, "spec")], data=data, loss="cross-entropy")
    kw = {"data": data, "loss": "cross-entropy", "model": f"{tmp_path}/user.py:Net",
          "model_kwargs": {"hidden": hidden}}  # fmt: skip
    by_user = evalloss.compare([user], **kw)
    assert by_spec.batch_size == by_user.batch_size == wanted
    fixed = evalloss.compare([user], batch_size=2048, **kw)
    # the figure does not move with the batch, and is the spec's, bit for bit
    assert by_user.models[0].loss_sum == fixed.models[0].loss_sum == by_spec.models[0].loss_sum
    with torch.no_grad():
        rows = torch.log_softmax(spec.double()(x.double()), dim=1)
    oracle = math.fsum(-rows[i, int(y[i])].item() for i in range(len(y)))
    assert by_user.models[0].loss_sum == pytest.approx(oracle, rel=1e-6)


def test_nothing_measured_leaves_the_unknown_peak_default(write_csv, save, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    x, y = data_set(20)
    data = xy_csv(write_csv, x, y)
    (tmp_path / "user.py").write_text(USER)
    bare = tmp_path / "bare.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.eye(3)}, bare)
    kw = {"data": data, "loss": "cross-entropy"}
    report = evalloss.compare([bare], model=f"{tmp_path}/user.py:Bare", **kw)
    assert report.batch_size == 2048  # no leaf module: no bound known
    user = _user(tmp_path, save, nets.mlp(), "user")
    monkeypatch.setattr(activations, "MEASURED_PARAMETER_BYTES", 0)  # too big to build twice
    assert evalloss.compare([user], model=f"{tmp_path}/user.py:Net", **kw).batch_size == 2048


def test_measured_per_item_reads_the_leaf_modules(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "user.py").write_text(USER)
    spec = f"{tmp_path}/user.py:Net"
    assert activations.measured_per_item(spec, {"hidden": 50}, (3,), torch.float32) == 100
    assert activations.measured_per_item(spec, {"hidden": 50}, (4,), torch.float32) is None
