"""`evalloss.compare` end to end against an independent float64 computation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import evalloss
from evalloss.sources.csvfile import CsvFile
from tests import nets, oracles
from tests.conftest import data_set, net, seeded_mlps, xy_csv


def _oracle(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str) -> float:
    """One float64 forward pass, then one item at a time with math.fsum."""
    with torch.no_grad():
        outputs = model.double()(x.double()).tolist()
    model.float()
    return oracles.loss_sum(loss, outputs, [[v] for v in y.tolist()])


@pytest.mark.parametrize("batch_size", [1, 7, 500])
def test_compare_matches_the_float64_oracle(write_csv, save, batch_size: int) -> None:  # type: ignore[no-untyped-def]
    x, y = data_set(131)
    path = xy_csv(write_csv, x, y)
    models, ckpts = seeded_mlps(save)
    report = evalloss.compare(ckpts, data=path, loss="cross-entropy", batch_size=batch_size)
    assert report.data.items == 131
    wanted = {f"m{i}": _oracle(m, x, y, "cross-entropy") for i, m in enumerate(models)}
    for m in report.models:
        assert m.items == 131
        assert m.loss_sum == pytest.approx(wanted[m.name], rel=1e-6)
        assert m.loss_per_item == pytest.approx(wanted[m.name] / 131, rel=1e-6)
    assert [m.name for m in report.models] == sorted(wanted, key=wanted.__getitem__)
    assert [m.rank for m in report.models] == [1, 2, 3]


def test_float64_precision_is_reference_grade(write_csv, save) -> None:  # type: ignore[no-untyped-def]
    x, y = data_set(50)
    torch.manual_seed(0)
    model = nets.mlp()
    report = evalloss.compare(
        [save(model)],
        data=xy_csv(write_csv, x, y),
        loss="cross-entropy",
        precision="float64",
    )
    assert report.models[0].loss_sum == pytest.approx(
        _oracle(model, x, y, "cross-entropy"), rel=1e-12
    )


def test_batch_size_changes_the_figure_only_by_float32_rounding(write_csv, save) -> None:  # type: ignore[no-untyped-def]
    x, y = data_set(300)
    torch.manual_seed(0)
    ckpt, path = save(nets.mlp()), xy_csv(write_csv, x, y)
    sums = {
        bs: evalloss.compare([ckpt], data=path, loss="cross-entropy", batch_size=bs)
        .models[0]
        .loss_sum
        for bs in (1, 7, 64, 4096)
    }
    assert max(sums.values()) - min(sums.values()) <= 1e-6 * max(sums.values())


def test_default_batch_size_holds_about_2048_rows_of_the_wide_mlp_on_the_cpu(write_csv, save) -> None:  # type: ignore[no-untyped-def]
    x, y = data_set(30)
    data = xy_csv(write_csv, x, y)

    def default(*modules: torch.nn.Module) -> int:
        ckpts = [save(m, f"m{i}") for i, m in enumerate(modules)]
        return evalloss.compare(ckpts, data=data, loss="cross-entropy").batch_size

    # the peak of any layer's input + output an item: 8 + 8 (Tanh) -> 2**20 // 16 -> 32768
    assert default(nets.mlp()) == 32768
    assert default(nets.mlp(hidden=100)) == 4096  # Tanh: 100 + 100 -> 5242 -> 4096
    assert default(nets.mlp(hidden=256), nets.mlp(hidden=1000)) == 2048  # the widest; floor
    assert evalloss.run.plan.default_batch_size(torch.device("cpu")) == 2048  # peak unknown
    assert evalloss.run.plan.default_batch_size(torch.device("cpu"), 512) == 2048
    assert evalloss.run.plan.default_batch_size(torch.device("cpu"), 48) == 16384
    assert evalloss.run.plan.default_batch_size(torch.device("cuda"), 48) == 4096


def test_k_models_read_the_data_once(write_csv, save, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    x, y = data_set(40)
    path = xy_csv(write_csv, x, y)
    ckpts = [save(nets.mlp(), f"m{i}") for i in range(4)]
    reads = []
    original = CsvFile.blocks

    def counting(self, dtype, **kw):  # type: ignore[no-untyped-def]
        reads.append(self.path)
        return original(self, dtype, **kw)

    monkeypatch.setattr(CsvFile, "blocks", counting)
    report = evalloss.compare(ckpts, data=path, loss="cross-entropy")
    assert reads == [str(path)]
    assert len(report.models) == 4


def test_nonfinite_model_ranks_last_with_null(write_csv, save) -> None:  # type: ignore[no-untyped-def]
    x, y = data_set(10)
    path = xy_csv(write_csv, x, y)
    good = nets.mlp()
    bad = nets.mlp()
    with torch.no_grad():
        bad[2].bias.fill_(float("nan"))
    with pytest.warns(evalloss.EvallossWarning, match=r"in 2\.bias \(3 of 3 values\)"):
        report = evalloss.compare(
            [save(bad, "bad"), save(good, "good")],
            data=path,
            loss="cross-entropy",
        )
    assert [m.name for m in report.models] == ["good", "bad"]
    last = report.to_dict()["models"][1]
    assert (
        last["loss_per_item"] is None and last["loss_sum"] is None and last["nonfinite_items"] == 10
    )
    json.dumps(report.to_dict(), allow_nan=False)


def test_clashing_stems_are_made_unique(write_csv, save, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    x, y = data_set(5)
    path = xy_csv(write_csv, x, y)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    model = nets.mlp()
    ckpts = [save(model, "a/model"), save(model, "b/model")]
    report = evalloss.compare(ckpts, data=path, loss="cross-entropy")
    assert sorted(m.name for m in report.models) == ["a/model", "b/model"]
    assert report.models[0].loss_sum == report.models[1].loss_sum  # a tie keeps command-line order
    assert report.models[0].name == "a/model"


def test_regression_loss_with_several_targets(write_csv, save) -> None:  # type: ignore[no-untyped-def]
    x, _ = data_set(30, features=4)
    header = ["a", "b", "t1", "t2"]
    path = write_csv(x.tolist(), header)
    torch.manual_seed(0)
    model = nets.linear(features=2, outputs=2)
    report = evalloss.compare(
        [save(model)],
        data=path,
        model=f"{net('linear')}",
        model_kwargs={"features": 2, "outputs": 2},
        loss="mse",
        target=["t1", "t2"],
    )
    with torch.no_grad():
        outputs = model.double()(x[:, :2].double()).tolist()
    want = oracles.loss_sum("mse", outputs, x[:, 2:].double().tolist())
    assert report.models[0].loss_sum == pytest.approx(want, rel=1e-6)
    assert report.models[0].accuracy is None
    assert report.data.targets == ("t1", "t2")
    assert math.isfinite(report.models[0].loss_per_item or math.nan)
