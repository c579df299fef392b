"""Shared fixtures: small data files and checkpoints made in the test, and a CLI runner."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result

import evalloss
from evalloss.cli import cli

NETS = str(Path(__file__).parent / "nets.py")


def net(name: str) -> str:
    """The --model spec of a factory in tests/nets.py."""
    return f"{NETS}:{name}"


@pytest.fixture
def write_csv(tmp_path: Path) -> Callable[..., Path]:
    """write_csv(rows, header=("a", "b"), name="data.csv") -> path; rows are lists or raw text."""

    def write(
        rows: Sequence[Sequence[object]] | str,
        header: Sequence[str] | None = None,
        name: str = "data.csv",
    ) -> Path:
        path = tmp_path / name
        if isinstance(rows, str):
            path.write_text(rows)
            return path
        sep = "\t" if name.endswith((".tsv", ".tab")) else ","
        lines = [sep.join(header)] if header is not None else []
        lines += [sep.join(str(v) for v in row) for row in rows]
        path.write_text("\n".join(lines) + "\n")
        return path

    return write


@pytest.fixture
def save(tmp_path: Path) -> Callable[..., Path]:
    """save(module, name="m", **metadata) -> path of a safetensors checkpoint."""

    def write(module: torch.nn.Module, name: str = "m", **metadata: str) -> Path:
        path = tmp_path / f"{name}.safetensors"
        evalloss.save(module, path, **metadata)
        return path

    return write


def run(*args: object) -> Result:
    """Invoke the CLI in-process; stdout and stderr are kept apart (click >= 8.2)."""
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def data_set(
    rows: int, features: int = 3, classes: int = 3, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """A reproducible classification data set, values rounded to 4 decimals."""
    g = torch.Generator().manual_seed(seed)
    x = torch.round(torch.randn(rows, features, generator=g) * 10_000) / 10_000
    y = torch.randint(0, classes, (rows,), generator=g)
    return x, y


def xy_csv(write_csv: Callable[..., Path], x: torch.Tensor, y: torch.Tensor) -> Path:
    """``data_set``'s tensors as a CSV: columns f0..fN-1 and ``label``."""
    header = [f"f{i}" for i in range(x.shape[1])] + ["label"]
    return write_csv(
        [[*row, label] for row, label in zip(x.tolist(), y.tolist(), strict=True)], header
    )


def seeded_mlps(
    save: Callable[..., Path], count: int = 3
) -> tuple[list[torch.nn.Module], list[Path]]:
    """``count`` MLPs from tests/nets.py (seeds 0, 1, ...) and their checkpoints m0, m1, ..."""
    from tests import nets

    models = []
    for seed in range(count):
        torch.manual_seed(seed)
        models.append(nets.mlp())
    return models, [save(m, f"m{i}") for i, m in enumerate(models)]
