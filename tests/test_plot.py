"""--plot: a PNG (or SVG/PDF) of the per-item loss distributions; a clear error without matplotlib."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

import evalloss
from evalloss.render import plot
from evalloss.report import Comparison
from tests.conftest import run

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "checkpoints"
CKPTS = [EXAMPLE / f"{n}.safetensors" for n in ("bs10", "bs50", "barely")]
ARGS = [*CKPTS, "--data", EXAMPLE / "train.csv"]
PNG = b"\x89PNG\r\n\x1a\n"


def test_plot_writes_a_png_and_the_report_is_unchanged(tmp_path: Path) -> None:
    out = tmp_path / "losses.png"
    result = run("compare", *ARGS, "--plot", out)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == run("compare", *ARGS).stdout
    assert out.read_bytes().startswith(PNG) and out.stat().st_size > 10_000
    assert [p.name for p in tmp_path.iterdir()] == ["losses.png"]
    mask = os.umask(0)
    os.umask(mask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~mask  # as any new file, not mkstemp's 0600


def test_plot_with_a_baseline_draws_the_paired_panels(tmp_path: Path) -> None:
    """A report with a baseline (comparisons filled by hand) gives the wider, paired figure."""
    report = evalloss.compare(CKPTS, data=EXAMPLE / "train.csv")
    names = ["bs10", "bs50", "barely"]
    rng = np.random.default_rng(0)
    values = rng.gamma(2.0, 0.3, size=(600, 3))
    models = tuple(
        dataclasses.replace(m, is_baseline=True)
        if m.name == "bs50"
        else dataclasses.replace(m, vs_baseline=Comparison(-0.01, -0.02, (-0.02, 0.0), 0.05, 0.55))
        for m in report.models
    )
    paired = dataclasses.replace(report, models=models, has_baseline=True)
    (tmp_path / "paired.png").write_bytes(plot.draw(paired, names, values, 600, "png"))
    (tmp_path / "plain.png").write_bytes(plot.draw(report, names, values, 600, "png"))
    from matplotlib.image import imread

    wide, plain = imread(tmp_path / "paired.png"), imread(tmp_path / "plain.png")
    assert wide.shape[1] > plain.shape[1]  # two columns of panels
    (tmp_path / "paired.svg").write_bytes(plot.draw(paired, names, values, 6000, "svg"))
    assert "a sample of 600 of 6,000 items" in (tmp_path / "paired.svg").read_text()


def test_missing_matplotlib_is_a_clear_exit_2_before_any_work(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "matplotlib" else real(name, *a),
    )
    out = tmp_path / "losses.png"
    result = run("compare", *ARGS, "--plot", out, "-o", tmp_path / "report.txt")
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == (
        "evalloss: error: --plot: needs matplotlib, which is not installed: "
        "pip install 'evalloss[plot]'\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_bad_plot_suffix_is_exit_2(tmp_path: Path) -> None:
    result = run("compare", *ARGS, "--plot", tmp_path / "losses.jpg")
    assert result.exit_code == 2
    assert "--plot: must end in .png, .svg, .pdf" in result.stderr


def test_plot_bins_follow_the_data() -> None:
    """Losses spanning decades get a log axis; a narrow, signed spread a linear one."""
    log, edges = plot.bin_edges(np.geomspace(1e-4, 10, 1000))
    assert log and edges[0] > 0 and edges[-1] <= 10
    log, edges = plot.bin_edges(np.linspace(-1, 1, 1000))
    assert not log and edges[0] == -1


@pytest.mark.parametrize("values", [np.empty((0, 2)), np.full((5, 2), np.nan)])
def test_plot_survives_no_finite_values(tmp_path: Path, values) -> None:  # type: ignore[no-untyped-def]
    report = evalloss.compare(CKPTS[:2], data=EXAMPLE / "train.csv")
    (tmp_path / "x.png").write_bytes(plot.draw(report, ["bs10", "bs50"], values, len(values), "png"))
    assert (tmp_path / "x.png").read_bytes().startswith(PNG)
