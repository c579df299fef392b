"""Every bad cell is exit 2 with one stderr line naming the file, its line, the column, the value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests import nets
from tests.conftest import run

GOOD = "a,b,c,y\n1,2,3,0\n4,5,6,1\n7,8,9,2\n"


@pytest.fixture
def ckpt(save) -> Path:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return save(nets.mlp(), loss="cross-entropy")


def _error(write_csv, ckpt: Path, text: str, *extra: str) -> str:  # type: ignore[no-untyped-def]
    path = write_csv(text)
    result = run("compare", ckpt, "--data", path, *extra)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0].replace(str(path), "DATA")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("a,b,c,y\n1,2,3,0\n4,x,6,1\n", "DATA:3: b: not a number: 'x'"),
        ("a,b,c,y\n1,2,3,0\n4,,6,1\n", "DATA:3: b: empty value"),
        ("a,b,c,y\n1,2,3,0\n4,nan,6,1\n", "DATA:3: b: not a finite number: 'nan'"),
        ("a,b,c,y\n1,2,3,0\n4,NA,6,1\n", "DATA:3: b: not a number: 'NA'"),  # no null spellings
        ("a,b,c,y\n1,2,3,NULL\n", "DATA:2: y: not a number: 'NULL'"),
        ("a,b,c,y\n1,2,3,0\n4,5,inf,1\n", "DATA:3: c: not a finite number: 'inf'"),
        ("a,b,c,y\n1,2,3,0\n4,5,6,1\n7,8,9,1,5\n", "DATA:4: expected 4 fields, found 5"),
        ("a,b,c,y\n1,2,3,0\n4,5,6\n", "DATA:3: expected 4 fields, found 3"),
        (
            "a,b,c,y\n1,2,3,0\n4,5,6,3\n",
            r"DATA:3: y: class label must be an integer in [0, 3): '3'",
        ),
        ("a,b,c,y\n1,2,3,0.5\n", r"DATA:2: y: class label must be an integer in [0, 3): '0.5'"),
        (
            "a,b,c,y\n1,2,3,0\n\n4,5,6,-1\n",
            r"DATA:4: y: class label must be an integer in [0, 3): '-1'",
        ),
        ("a,b,c,y\n", "DATA: no data rows"),
        ("", "DATA: empty file: no header and no data rows"),
    ],
)
def test_bad_cells_name_line_column_value(write_csv, ckpt: Path, text: str, want: str) -> None:  # type: ignore[no-untyped-def]
    assert _error(write_csv, ckpt, text) == f"evalloss: error: {want}"


def test_bad_value_deep_in_a_large_file_gets_its_line(write_csv, ckpt: Path) -> None:  # type: ignore[no-untyped-def]
    rows = ["a,b,c,y"] + [f"{i % 7},{i % 5},{i % 3},{i % 3}" for i in range(200_000)]
    rows[150_001] = "1,2,oops,0"
    assert (
        _error(write_csv, ckpt, "\n".join(rows) + "\n")
        == "evalloss: error: DATA:150002: c: not a number: 'oops'"
    )


def test_missing_column(write_csv, ckpt: Path) -> None:  # type: ignore[no-untyped-def]
    got = _error(write_csv, ckpt, GOOD, "--target", "label")
    assert got == "evalloss: error: DATA: label: no such column; columns are: a, b, c, y"


def test_feature_count_that_does_not_fit_the_model(write_csv, ckpt: Path) -> None:  # type: ignore[no-untyped-def]
    got = _error(write_csv, ckpt, GOOD, "--feature", "a", "--feature", "b")
    assert re.search(r"forward failed on rows 1-3 with input of shape \(3, 2\)", got)


def test_missing_data_file(ckpt: Path, tmp_path: Path) -> None:
    result = run("compare", ckpt, "--data", tmp_path / "nope.csv")
    assert result.exit_code == 2
    assert result.stderr.strip().endswith("nope.csv: no such file")


def test_no_header_names_columns_by_number(write_csv, ckpt: Path) -> None:  # type: ignore[no-untyped-def]
    got = _error(write_csv, ckpt, "1,2,3,0\n4,5,x,1\n", "--no-header")
    assert got == "evalloss: error: DATA:2: 2: not a number: 'x'"


def test_tsv_by_suffix(write_csv, ckpt: Path) -> None:  # type: ignore[no-untyped-def]
    path = write_csv("a\tb\tc\ty\n1\t2\t3\t0\n4\t5\t6\t1\n", name="d.tsv")
    result = run("compare", ckpt, "--data", path, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert '"items": 2' in result.stdout
