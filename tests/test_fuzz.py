"""Fuzzing through the CLI: whatever arrives, exit 0 or 2, one line, no traceback, no half report.

Random mutations of valid safetensors files (anywhere in the file, several at once: header,
offsets, tensor bytes) and random CSV text (commas, quotes, CR/LF, BOM, NUL, numbers in every
form). The property, for each run with ``-o``: exit 0 with a complete JSON report and no error
line, or exit 2 with exactly one ``evalloss: error:`` line, empty stdout and no output file;
never a traceback, never a temporary file left behind. ``evalloss: warning:`` lines (e.g. NaN
weights) may come on top. Derandomized and bounded: the whole file runs in seconds.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch import nn

import evalloss
from tests import faulty
from tests.conftest import run

FAULTY = str(Path(faulty.__file__).resolve())
SETTINGS = settings(
    derandomize=True,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def check(result, out: Path) -> None:  # type: ignore[no-untyped-def]
    """The property every fuzzed run must have."""
    assert result.exit_code in (0, 2), (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if not ln.startswith("evalloss: warning: ")]
    if result.exit_code == 2:
        assert len(lines) == 1 and lines[0].startswith("evalloss: error: "), result.stderr
        assert result.stdout == ""
        assert not out.exists(), "exit 2 but an output file was written"
    else:
        assert lines == [], result.stderr
        report = json.loads(out.read_text())
        assert report["data"]["items"] >= 1
    assert [p.name for p in out.parent.iterdir() if p.name.endswith((".tmp", ".probe"))] == []


# -- checkpoints ---------------------------------------------------------------------------

DATA = "a,b,c,y\n1,2,3,0\n4,5,6,1\n7,8,9,2\n-1.5,0,2e-3,1\n"


def _bases(folder: Path) -> dict[str, bytes]:
    """Two valid files: one needing --model (faulty.Fine), one carrying its evalloss.layers."""
    torch.manual_seed(0)
    evalloss.save(faulty.Fine(), folder / "fine.safetensors", loss="cross-entropy")
    evalloss.save(
        nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 3)),
        folder / "layers.safetensors",
        loss="cross-entropy",
        target="y",
    )
    return {k: (folder / f"{k}.safetensors").read_bytes() for k in ("fine", "layers")}


_JSON_BITS = [
    b'"', b"{", b"}", b"[", b"]", b",", b":", b"null", b"1e999", b"-1", b"\\u0000",
    b'"F16"', b'"I64"', b'"BOOL"', b"18446744073709551615", b"\xff", b" ",
]  # fmt: skip
_EDIT = st.one_of(
    st.tuples(st.just("set"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 16), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 16), st.integers(1, 64)),
    st.tuples(st.just("cut"), st.integers(0, 1 << 16), st.just(0)),
    st.tuples(st.just("length"), st.integers(-64, 64), st.just(0)),
    st.tuples(
        st.just("text"),
        st.integers(0, 1 << 16),
        st.sampled_from(_JSON_BITS),
    ),
)


def _mutate(raw: bytes, edits: list[tuple[str, int, object]]) -> bytes:
    for kind, at, arg in edits:
        pos = at % (len(raw) + 1)
        if kind == "set":
            raw = raw[:pos] + bytes(arg) + raw[pos + len(bytes(arg)) :]  # type: ignore[call-overload]
        elif kind in ("insert", "text"):
            raw = raw[:pos] + bytes(arg) + raw[pos:]  # type: ignore[call-overload]
        elif kind == "delete":
            raw = raw[:pos] + raw[pos + int(arg) :]  # type: ignore[call-overload]
        elif kind == "cut":
            raw = raw[:pos]
        elif len(raw) >= 8:  # "length": shift the header length field
            (n,) = struct.unpack("<Q", raw[:8])
            raw = struct.pack("<Q", max(0, n + at)) + raw[8:]
    return raw


@SETTINGS
@given(base=st.sampled_from(["fine", "layers"]), edits=st.lists(_EDIT, min_size=1, max_size=4))
@example(base="layers", edits=[("text", 30, b"null")])
@example(base="fine", edits=[("length", 1, 0)])
def test_mutated_checkpoints(folder: Path, base: str, edits: list[tuple[str, int, object]]) -> None:
    bases = _bases(folder) if not (folder / "fine.safetensors").exists() else {
        k: (folder / f"{k}.safetensors").read_bytes() for k in ("fine", "layers")
    }  # fmt: skip
    data = folder / "data.csv"
    data.write_text(DATA)
    path = folder / "mutant.safetensors"
    path.write_bytes(_mutate(bases[base], edits))
    out = folder / "report.json"
    out.unlink(missing_ok=True)
    model = ("--model", f"{FAULTY}:Fine") if base == "fine" else ()
    result = run("compare", path, "--data", data, *model, "--format", "json", "-o", out)
    check(result, out)


# -- CSV text ------------------------------------------------------------------------------

_VALID = st.one_of(
    st.integers(-999, 999).map(str),
    st.floats(-1e6, 1e6).map(repr),
    st.floats(-1e6, 1e6).map(lambda v: f"{v:.3e}"),
    st.sampled_from(["+1", " 1", "2 ", ".5", "5.", "1E-3", "1e+2", "-0", "0001", '"1"']),
)
_ODD = [
    "0x10", "1_0", "nan", "NaN", "NA", "-inf", "Infinity", "1e400", "-1e-400", "", " ",
    '"2', '""', '"1,2"', '"1\n2"', '"1\r\n2"', "\x00", "1\x00", "\ufeff1", "١", "1,5",
    "\t", "x", "TRUE", "-", "1.5f", '1"', "'1'", "\u2028", "\x0c",
]  # fmt: skip
_HOSTILE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True, width=64).map(repr),
    st.sampled_from(_ODD),
    st.text(max_size=4),
)
_NAME = st.sampled_from(["a", "b", "c", "y", "z", '"q"', "", " a", "a\x00", "\ufeffy", "a b"])


@st.composite
def csv_text(draw: st.DrawFn, tsv: bool = False) -> bytes:
    """Mostly a table that fits faulty.Fine (3 features, class 0-2), with hostile slips."""

    def rare(odds: int) -> bool:  # True about once in ``odds`` draws
        return draw(st.integers(0, odds - 1)) == 0

    header = ["a", "b", "c", "y"] if not rare(5) else [draw(_NAME) for _ in range(4)]
    rows = [header] if not rare(6) else []
    for _ in range(draw(st.integers(0, 6))):
        width = 4 if not rare(8) else draw(st.integers(1, 6))
        row = [draw(_HOSTILE if rare(12) else _VALID) for _ in range(width)]
        if not rare(8):
            row[-1] = draw(st.sampled_from(["0", "1", "2", "2.0", " 1"]))
        elif rare(2):
            row[-1] = draw(st.sampled_from(["3", "-1", "0.5", "1e0", "nan"]))
        rows.append(row)
    usual = "\t" if tsv else ","
    sep = usual if not rare(6) else draw(st.sampled_from(["\t", ";", ", ", ","]))
    newline = "\r" if rare(12) else draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join(sep.join(row) for row in rows)
    text += newline if draw(st.booleans()) else ""
    if rare(4):
        text = "\ufeff" + text
    if rare(5):
        text = text.replace(newline, newline * 2, 1)  # a blank line
    raw = text.encode("utf-8")
    if rare(10):  # not UTF-8 at all
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xe2\x82", b"\x80"])) + raw[at:]
    return raw


_GOOD = "a,b,c,y\n1,2,3,0\n4,5,6,1\n"


@SETTINGS
@given(
    raw_suffix=st.one_of(
        csv_text().map(lambda raw: (raw, ".csv")), csv_text(tsv=True).map(lambda raw: (raw, ".tsv"))
    ),
    options=st.one_of(
        st.just([]),
        st.lists(
            st.sampled_from([("--no-header",), ("--target", "y"), ("--feature", "a")]),
            max_size=2,
            unique=True,
        ),
    ),
)
@example(raw_suffix=(_GOOD.encode(), ".csv"), options=[])
@example(raw_suffix=(b"a,b,c,y\r1,2,3,0\r", ".csv"), options=[])
@example(raw_suffix=(b"a,b,c,y\n1,2,3,0\n4," + b"9" * 200_000 + b",6,1\n", ".csv"), options=[])
@example(raw_suffix=(b'a,b,c,y\n1,2,3,0\n4,"5,6,1\n', ".csv"), options=[])
@example(raw_suffix=(b"\xef\xbb\xbf1,2,3,0\r\n4,5,6,1", ".csv"), options=[("--no-header",)])
@example(raw_suffix=(b"a,b,c,y\n1_0,2,3,0\n", ".csv"), options=[])  # python's float() took it
def test_random_csv_text(
    folder: Path, raw_suffix: tuple[bytes, str], options: list[tuple[str, ...]]
) -> None:
    raw, suffix = raw_suffix
    if not (folder / "fine.safetensors").exists():
        _bases(folder)
    data = folder / f"data{suffix}"
    data.write_bytes(raw)
    out = folder / "report.json"
    out.unlink(missing_ok=True)
    flat = [part for option in options for part in option]
    result = run(
        "compare", folder / "fine.safetensors", "--data", data, "--model", f"{FAULTY}:Fine",
        "--format", "json", "-o", out, "--precision", "float64", *flat,
    )  # fmt: skip
    check(result, out)
    if result.exit_code == 0 and flat in ([], ["--no-header"]):  # the figures, not just the code
        model = json.loads(out.read_text())["models"][0]
        items, want = _oracle(folder / "fine.safetensors", raw, suffix, header=not flat)
        assert model["items"] == items
        assert model["loss_sum"] == pytest.approx(want, rel=1e-9, abs=1e-12)


def _oracle(ckpt: Path, raw: bytes, suffix: str, *, header: bool) -> tuple[int, float]:
    """Items and cross-entropy loss sum, read with the csv module and summed with math.fsum:
    an independent reading of the same bytes (BOM, CRLF, quotes, blank lines, spaces)."""
    import csv
    import io
    import math

    from safetensors.torch import load_file

    text = raw.decode("utf-8-sig")
    first = text.splitlines()[0] if text else ""
    sep = "\t" if suffix == ".tsv" or ("\t" in first and "," not in first) else ","
    records = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=sep) if r]
    rows = records[1:] if header else records
    tensors = load_file(ckpt)
    w, b = tensors["linear.weight"].tolist(), tensors["linear.bias"].tolist()
    losses = []
    for *x, y in ([float(v) for v in row] for row in rows):
        z = [
            math.fsum([*(wi * xi for wi, xi in zip(w[k], x, strict=True)), b[k]]) for k in range(3)
        ]
        top = max(z)
        losses.append(top + math.log(math.fsum(math.exp(v - top) for v in z)) - z[int(y)])
    return len(rows), math.fsum(losses)


# -- Parquet files -------------------------------------------------------------------------


def _parquet(folder: Path) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {"a\u00e9": [1.0, 4.0, 7.0], "b": [2.0, 5.0, 8.0], "c": [3.0, 6.0, 9.0], "y": [0, 1, 2]}
    )
    pq.write_table(table, folder / "base.parquet", store_schema=False)
    return (folder / "base.parquet").read_bytes()


def test_parquet_column_name_that_is_not_utf8(folder: Path) -> None:
    """Found by fuzzing: pyarrow raised UnicodeDecodeError reading the schema: exit 3."""
    if not (folder / "fine.safetensors").exists():
        _bases(folder)
    data = folder / "names.parquet"
    data.write_bytes(_parquet(folder).replace(b"a\xc3\xa9", b"a\xff\xa9"))
    out = folder / "report.json"
    out.unlink(missing_ok=True)
    args = ("compare", folder / "fine.safetensors", "--data", data, "--model", f"{FAULTY}:Fine")
    result = run(*args, "-o", out)
    check(result, out)
    assert result.stderr.startswith(f"evalloss: error: {data}: not a readable Parquet file (")


@settings(
    derandomize=True,
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(edits=st.lists(_EDIT, min_size=1, max_size=3))
def test_mutated_parquet(folder: Path, edits: list[tuple[str, int, object]]) -> None:
    if not (folder / "fine.safetensors").exists():
        _bases(folder)
    data = folder / "mutant.parquet"
    data.write_bytes(_mutate(_parquet(folder), edits))
    out = folder / "report.json"
    out.unlink(missing_ok=True)
    args = ("compare", folder / "fine.safetensors", "--data", data, "--model", f"{FAULTY}:Fine")
    check(run(*args, "--format", "json", "-o", out), out)
