"""Every bad value in token or text documents is exit 2 with one stderr line naming the file
and the document's 1-based line (JSON Lines, CSV) or its row (Parquet), the column, the token
(counted from 0, as the list is indexed) and the value as written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import evalloss
from evalloss.sources import documents
from tests import lm
from tests.conftest import run

LM = f"{Path(lm.__file__)}:Causal"
GOOD = '{"input_ids": [1, 2, 3]}\n'


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(0)  # the tiny causal LM of tests/lm.py: a vocabulary of 11
    evalloss.save(lm.Causal(), tmp_path / "lm.safetensors", loss="causal-lm")
    return tmp_path / "lm.safetensors"


def _error(ckpt: Path, data: Path, *extra: str) -> str:
    result = run("compare", ckpt, "--data", data, "--model", LM, *extra)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0].replace(str(data), "DATA")


@pytest.mark.parametrize(
    ("lines", "want"),
    [
        (GOOD + "not json\n", "DATA:2: not JSON (Expecting value at column 1)"),
        (GOOD * 2 + "\n\n" + "{oops\n", "DATA:5: not JSON (Expecting property name enclosed in double quotes at column 2)"),
        (GOOD + "[1, 2, 3]\n", 'DATA:2: a JSON array, not an object: each line is one record, {"key": value}'),
        (GOOD + '{"input_ids": [1, 2.5]}\n', "DATA:2: input_ids: token 1: 2.5 is not an integer"),
        ('{"input_ids": [1.0, 2]}\n' + GOOD, "DATA:1: input_ids: token 0: 1.0 is not an integer"),
        (GOOD + '{"input_ids": [true]}\n', "DATA:2: input_ids: token 0: true is not an integer"),
        (GOOD + '{"input_ids": [1, "7"]}\n', 'DATA:2: input_ids: token 1: "7" is not an integer'),
        (GOOD + '{"input_ids": [[1, 2]]}\n', "DATA:2: input_ids: token 0: [1, 2] is not an integer"),
        (GOOD + '{"input_ids": [NaN]}\n', "DATA:2: input_ids: token 0: NaN is not an integer"),
        (GOOD + '{"input_ids": [1e400]}\n', "DATA:2: input_ids: token 0: 1e400 is not an integer"),
        (GOOD + '{"input_ids": "1 2 3"}\n', 'DATA:2: input_ids: token ids must be a list of integers, not "1 2 3"'),
        (GOOD + '{"input_ids": [18446744073709551617]}\n', "DATA:2: input_ids: token 0: token id 18446744073709551617 is past the int64 range"),
        (GOOD + '{"input_ids": [1], "input_ids": [2]}\n', "DATA:2: not JSON Lines (key 'input_ids' is given twice)"),
        (GOOD + "\n   \n" + '{"input_ids": [1, -4]}\n', "DATA:4: input_ids: token 1: negative token id -4"),
        (GOOD + "\n" + '{"input_ids": null}\n', "DATA:3: input_ids: no token list (null)"),
        (GOOD + "\n" + '{"other": 1}\n', "DATA:3: input_ids: no token list (null)"),
        (GOOD + "\n\n" + '{"input_ids": [1, 99, 2]}\n', "DATA:4: input_ids: token 1: token id 99 is outside the model's vocabulary [0, 11)"),
        (GOOD + "\n" + '{"input_ids": [1, 2, 99]}\n', "DATA:3: input_ids: token 2: token id 99 is outside the vocabulary [0, 11)"),
        ('{"input_ids": [1], "labels": [1]}\n{"input_ids": [1, 2], "labels": [1, 2.5]}\n', "DATA:2: labels: token 1: 2.5 is not an integer"),
        (GOOD + '{"input_ids": [1], "id": "a"}\n{"input_ids": [1], "id": 3}\n', 'DATA:3: id: 3 is a number; line 2 has a string'),
    ],
)  # fmt: skip
def test_bad_json_lines_name_the_line_and_the_value(
    ckpt: Path, tmp_path: Path, lines: str, want: str
) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text(lines, encoding="utf-8")
    assert _error(ckpt, data) == f"evalloss: error: {want}"


def test_a_bad_line_deep_in_a_large_file_gets_its_line(
    ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past pyarrow's first block (its rows counted from 0 within each block)."""
    monkeypatch.setattr(documents, "CHUNK_DOCS", 64)
    data = tmp_path / "d.jsonl"
    body = [GOOD] * 3000
    body[2500] = '{"input_ids": [1, 2.5]}\n'
    body.insert(100, "\n")
    data.write_text("".join(body))
    real = documents.reader

    def small(path: str, columns: list[str], rank: int, world: int) -> object:
        import pyarrow.json as pajson

        if path.endswith(".jsonl"):
            return pajson.open_json(path, read_options=pajson.ReadOptions(block_size=4096))
        return real(path, columns, rank, world)

    monkeypatch.setattr(documents, "reader", small)
    with pytest.raises(evalloss.DataError) as caught:
        evalloss.compare([ckpt], data=data, model=LM)
    assert str(caught.value) == f"{data}:2502: input_ids: token 1: 2.5 is not an integer"


def _parquet(tmp_path: Path, column: pa.Array, **extra: pa.Array) -> Path:
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"input_ids": column, **extra}), path, row_group_size=2)
    return path


@pytest.mark.parametrize(
    ("column", "want"),
    [
        (pa.array([[1, 2], [3.0, 1.5]], pa.list_(pa.float64())),
         "DATA: input_ids: row 1, token 0: 1.0 is not an integer (the column holds lists of double)"),
        (pa.array([[True], [False]], pa.list_(pa.bool_())),
         "DATA: input_ids: row 1, token 0: true is not an integer (the column holds lists of bool)"),
        (pa.array([["1"], ["x"]], pa.list_(pa.string())),
         'DATA: input_ids: row 1, token 0: "1" is not an integer (the column holds lists of string)'),
        (pa.array([[1, 2], [3, (1 << 63) + 2]], pa.list_(pa.uint64())),
         "DATA: input_ids: row 2, token 1: token id 9223372036854775810 is past the int64 range"),
        (pa.array([[1, 2], [3, None, 4]], pa.list_(pa.int64())),
         "DATA: input_ids: row 2, token 1: a token id is null"),
        (pa.array([[1, 2], [3], None], pa.list_(pa.int64())),
         "DATA: input_ids: row 3: no token list (null)"),
        (pa.array([[1, 2], [3], [2, 2, -7]], pa.list_(pa.int32())),
         "DATA: input_ids: row 3, token 2: negative token id -7"),
        (pa.array([[1, 2], [], [], [2, 40]], pa.list_(pa.int16())),
         "DATA: input_ids: row 4, token 1: token id 40 is outside the vocabulary [0, 11)"),
    ],
)  # fmt: skip
def test_bad_parquet_documents_name_the_row_and_the_column(
    ckpt: Path, tmp_path: Path, column: pa.Array, want: str
) -> None:
    assert _error(ckpt, _parquet(tmp_path, column)) == f"evalloss: error: {want}"


def test_parquet_labels_of_floats_are_refused_not_ignored(ckpt: Path, tmp_path: Path) -> None:
    data = _parquet(tmp_path, pa.array([[1, 2], [3, 4]]),
                    labels=pa.array([[1, 2], [-100.0, 0.5]]))  # fmt: skip
    assert _error(ckpt, data) == ("evalloss: error: DATA: labels: row 1, token 0: 1.0 is not "
                                  "an integer (the column holds lists of double)")  # fmt: skip


def test_a_key_first_seen_past_pyarrows_first_block_is_ignored(
    ckpt: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pyarrow takes the schema from its first block and failed on a later new key ("unexpected
    field", no line): a key the run does not use is ignored wherever it first appears."""
    monkeypatch.setattr(documents, "JSON_BLOCK", 4096)
    rows = [f'{{"input_ids": [{i % 11}, {(i * 7) % 11}, 3]}}\n' for i in range(800)]
    plain, late = tmp_path / "plain.jsonl", tmp_path / "late.jsonl"
    plain.write_text("".join(rows))
    rows[700] = rows[700][:-2] + ', "source": "late"}\n'
    late.write_text("".join(rows))
    assert late.stat().st_size > 4 * 4096
    one, other = (evalloss.compare([ckpt], data=d, model=LM).models[0] for d in (plain, late))
    assert (one.items, one.tokens, one.loss_sum) == (other.items, other.tokens, other.loss_sum)
    assert one.items == 800


def test_a_good_file_with_blank_lines_is_read(ckpt: Path, tmp_path: Path) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("\ufeff" + GOOD + "\n \n" + '{"input_ids": [4, 5]}\r\n')
    report = evalloss.compare([ckpt], data=data, model=LM)
    assert (report.models[0].items, report.models[0].tokens) == (2, 3)
    assert np.isfinite(report.models[0].loss_sum or np.nan)
