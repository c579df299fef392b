"""One rule for numbers (docs/errors.md): the same integers give the same figure in Parquet and
in CSV, as features and as targets, past float32's 2**24 and float64's 2**53 (rounded to the
nearest float of the run, never refused in one form and read in the other)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import evalloss

BIG = [2**24 + 1, 2**53 + 1, 2**63 - 1, -(2**63)]


@pytest.mark.parametrize("precision", ["float32", "float64"])
@pytest.mark.parametrize("column", ["a", "y"])
@pytest.mark.parametrize(("value", "kind"), [*((v, pa.int64()) for v in BIG),
                                             (2**64 - 1, pa.uint64())])  # fmt: skip
def test_parquet_and_csv_integers_agree(
    tmp_path: Path, precision: str, column: str, value: int, kind: pa.DataType
) -> None:
    checkpoint = tmp_path / "m.safetensors"
    evalloss.save(torch.nn.Sequential(torch.nn.Linear(1, 1)), checkpoint, loss="mse")
    ints = pa.array([1, value, 3], kind)
    floats = pa.array([1.5, 2.5, 3.5])
    table = pa.table({"a": ints, "y": floats} if column == "a" else {"a": floats, "y": ints})
    pq.write_table(table, tmp_path / "d.parquet")
    rows = zip(*(table.column(c).to_pylist() for c in ("a", "y")), strict=True)
    (tmp_path / "d.csv").write_text("a,y\n" + "".join(f"{a},{y}\n" for a, y in rows))
    parquet, csv = (evalloss.compare([checkpoint], data=tmp_path / f"d.{s}", precision=precision)
                    .models[0] for s in ("parquet", "csv"))  # fmt: skip
    assert parquet.items == csv.items == 3
    assert parquet.loss_sum == csv.loss_sum
