"""The fast reader (byte ranges, fallbacks, shards) against an independent one-shot read.

The oracle parses the file with Python's ``csv`` module and ``float()``; the reader under test
is driven with tiny byte ranges so that ranges of one row, rows straddling ranges, blank lines
and quoted fields land in awkward places.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import evalloss
from evalloss import sources
from evalloss.errors import DataError
from evalloss.io import hashing
from evalloss.options import Options
from evalloss.run import readahead as evaluation
from evalloss.sources import chunks
from evalloss.sources.csvfile import CsvFile
from tests import nets
from tests.conftest import net


def _oracle(path: Path, features: list[str], targets: list[str]) -> tuple[list, list]:  # type: ignore[type-arg]
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = [r for r in csv.DictReader(f) if r]
    return (
        [[float(r[c]) for c in features] for r in rows],
        [[float(r[c]) for c in targets] for r in rows],
    )


def open_data(path: Path, **kw: object) -> sources.DataSource:
    """The data source of ``path``, opened with the library's options (``target=`` ...)."""
    return sources.open_data(path, Options.of(data=path, **kw))


def _read(path: Path, rank: int = 0, world: int = 1, **kw: object) -> tuple[list, list]:  # type: ignore[type-arg]
    ds = open_data(path, **kw)  # type: ignore[arg-type]
    xs, ys = [], []
    for block in ds.blocks(torch.float64, rank=rank, world=world):
        batch = block.input_rows(0, len(block))
        assert isinstance(batch, torch.Tensor)
        assert batch.is_contiguous() and batch.dtype == torch.float64
        xs += batch.tolist()
        ys += block.targets.tolist()
    return xs, ys


def _text(rows: int, newline: str = "\n", blank_every: int = 0) -> str:
    lines = ["a,b,y"]
    for i in range(rows):
        lines.append(f"{i * 0.5 - 3},{(i * 7) % 11},{i % 3}")
        if blank_every and i % blank_every == 0:
            lines.append("")
    return newline.join(lines) + newline


@pytest.mark.parametrize("range_bytes", [1, 7, 10, 11, 64, 1 << 20])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_ranges_anywhere_equal_a_one_shot_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, range_bytes: int, newline: str
) -> None:
    monkeypatch.setattr(chunks, "RANGE_BYTES", range_bytes)
    path = tmp_path / "d.csv"
    path.write_bytes(_text(57, newline, blank_every=13).encode())
    assert _read(path) == _oracle(path, ["a", "b"], ["y"])


def test_range_of_one_row_and_a_row_straddling_ranges(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "d.csv"
    path.write_text("a,b,y\n1,2,0\n3.25,4,1\n5,6,2\n")
    monkeypatch.setattr(chunks, "RANGE_BYTES", 6)  # ranges: "1,2,0\n", "3.25,4", ...
    got = list(chunks.ranges(str(path), 6, path.stat().st_size))
    assert [r.data for r in got] == [b"1,2,0\n", b"3.25,4,1\n", b"5,6,2\n"]
    assert [r.offset for r in got] == [6, 12, 21]
    ds = open_data(path)
    blocks = list(ds.blocks(torch.float32))
    assert [len(b.inputs) for b in blocks] == [1, 1, 1]
    assert [b.row for b in blocks] == [0, 1, 2]
    assert torch.cat([b.inputs for b in blocks]).tolist() == [[1, 2], [3.25, 4], [5, 6]]


def test_file_without_final_newline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunks, "RANGE_BYTES", 5)
    path = tmp_path / "d.csv"
    path.write_text(_text(9).rstrip("\n"))
    assert _read(path) == _oracle(path, ["a", "b"], ["y"])


def test_quoted_newline_falls_back_to_the_exact_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chunks, "RANGE_BYTES", 16)
    lines = ["a,b,note,y"] + [f"{i},{i + 1},x,{i % 2}" for i in range(20)]
    lines[12] = '11,12,"two\nlines, quoted",1'
    path = tmp_path / "d.csv"
    path.write_text("\n".join(lines) + "\n")
    streamed = []
    original = CsvFile._stream_blocks

    def spy(self, dtype, offset, row, rank, world):  # type: ignore[no-untyped-def]
        streamed.append((offset, row))
        return original(self, dtype, offset, row, rank, world)

    monkeypatch.setattr(CsvFile, "_stream_blocks", spy)
    xs, ys = _read(path, feature=["a", "b"])
    assert xs == [[float(i), float(i + 1)] for i in range(20)]
    assert ys == [[float(i % 2)] for i in range(20)]
    assert len(streamed) == 1 and 0 < streamed[0][1] <= 11  # fell back at a record start
    # a bad value after the quoted newline is still named by its true line
    lines[17] = "16,oops,x,0"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as err:
        _read(path, feature=["a", "b"])
    assert (err.value.line, err.value.key) == (19, "b")


@pytest.mark.parametrize("range_bytes", [9, 1 << 20])
def test_bad_values_in_later_ranges_name_their_line(
    write_csv, save, monkeypatch: pytest.MonkeyPatch, range_bytes: int
) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(chunks, "RANGE_BYTES", range_bytes)
    rows = ["a,b,c,y"] + [f"{i % 7},{i % 5},{i % 3},{i % 3}" for i in range(300)]
    rows.insert(100, "")  # a blank line shifts the line numbers below it
    bad = list(rows)
    bad[250] = "1,2,x,0"
    with pytest.raises(DataError) as err:
        list(open_data(write_csv("\n".join(bad) + "\n")).blocks(torch.float32))
    assert (err.value.line, err.value.key) == (251, "c")
    label = list(rows)
    label[271] = "1,2,3,7"  # a class label the model cannot take: found by the engine
    torch.manual_seed(0)
    ckpt = save(nets.mlp(), loss="cross-entropy")
    with pytest.raises(DataError) as err:
        evalloss.compare([ckpt], data=write_csv("\n".join(label) + "\n"))
    assert (err.value.line, err.value.key) == (272, "y")


@settings(max_examples=25, derandomize=True, deadline=None)
@given(
    rows=st.integers(1, 40),
    world=st.integers(1, 5),
    range_bytes=st.integers(1, 40),
)
def test_shards_partition_the_rows(rows: int, world: int, range_bytes: int) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.csv"
        path.write_text(_text(rows, blank_every=7))
        previous = chunks.RANGE_BYTES
        chunks.RANGE_BYTES = range_bytes
        try:
            xs, ys = [], []
            for rank in range(world):
                x, y = _read(path, rank, world)
                xs += x
                ys += y
        finally:
            chunks.RANGE_BYTES = previous
        assert (xs, ys) == _oracle(path, ["a", "b"], ["y"])


@settings(max_examples=60, derandomize=True, deadline=None)
@given(
    lines=st.lists(st.text("x,", max_size=30), max_size=30),
    final_newline=st.booleans(),
    range_bytes=st.integers(1, 50),
)
def test_ranges_are_whole_lines_at_their_offsets_and_hash_the_file(
    lines: list[str], final_newline: bool, range_bytes: int
) -> None:
    import tempfile

    text = ("\n".join(lines) + ("\n" if final_newline else "")).encode()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.csv"
        path.write_bytes(text)
        previous, chunks.RANGE_BYTES = chunks.RANGE_BYTES, range_bytes
        try:
            digest = hashlib.sha256()
            got = [
                (r.offset, bytes(r.data)) for r in chunks.ranges(str(path), 0, len(text), digest)
            ]
        finally:
            chunks.RANGE_BYTES = previous
    assert b"".join(data for _, data in got) == text
    assert all(text[offset : offset + len(data)] == data for offset, data in got)
    assert all(data.endswith(b"\n") for _, data in got[:-1])  # cut at line ends only
    assert digest.hexdigest() == hashlib.sha256(text).hexdigest()


def _table(rows: int) -> pa.Table:
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-64, 64, (rows, 3), generator=g).double() / 16  # exact in float32 and text
    y = torch.randint(0, 3, (rows,), generator=g)
    return pa.table(
        {"a": x[:, 0].numpy(), "b": x[:, 1].numpy(), "c": x[:, 2].numpy(), "y": y.numpy()}
    )


def test_parquet_equals_csv_and_shards_by_row_group(write_csv, save, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    table = _table(101)
    parquet = tmp_path / "d.parquet"
    pq.write_table(table, parquet, row_group_size=20)  # 6 row groups, the last of 1 row
    text = "a,b,c,y\n" + "".join(
        f"{a},{b},{c},{y}\n" for a, b, c, y in zip(*table.to_pydict().values(), strict=True)
    )
    csv_path = write_csv(text)
    torch.manual_seed(0)
    ckpt = save(nets.mlp(), loss="cross-entropy")
    reports = [evalloss.compare([ckpt], data=p) for p in (csv_path, parquet)]
    assert reports[0].models[0].loss_sum == reports[1].models[0].loss_sum
    assert reports[0].models[0].items == reports[1].models[0].items == 101
    whole = _read(parquet)
    assert whole == _read(csv_path)
    for world in (1, 2, 4, 7):  # 7 > 6 row groups: one rank gets none
        parts = [_read(parquet, rank, world) for rank in range(world)]
        assert [x for p in parts for x in p[0]] == whole[0]
        ds = open_data(parquet)
        starts = [
            b.row for r in range(world) for b in ds.blocks(torch.float32, rank=r, world=world)
        ]
        assert starts == sorted(starts) and starts[0] == 0


def test_sha256_of_the_data_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunks, "RANGE_BYTES", 13)
    path = tmp_path / "d.csv"
    path.write_text(_text(30))
    want = hashlib.sha256(path.read_bytes()).hexdigest()
    ds = open_data(path)
    list(ds.blocks(torch.float32))
    assert ds._state["sha256"] == want  # computed during the pass
    assert ds.sha256() == {str(path): want}
    assert open_data(path).sha256() == {str(path): want}  # no pass yet: read on demand
    quoted = tmp_path / "q.csv"
    quoted.write_text('a,b,y\n1,2,0\n"3",4,1\n')
    ds = open_data(quoted)
    assert len(list(ds.blocks(torch.float32))) == 2  # one range, then the exact reader
    assert "sha256" not in ds._state
    assert ds.sha256() == {str(quoted): hashlib.sha256(quoted.read_bytes()).hexdigest()}


@pytest.mark.parametrize("size", [0, 1, 6, 7, 8, 50])
def test_a_file_hashed_through_a_small_buffer_is_hashed_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int
) -> None:
    monkeypatch.setattr(hashing, "HASH_BYTES", 7)  # the buffer refilled, and cut short last
    path = tmp_path / "d.bin"
    path.write_bytes(bytes(range(size)))
    assert hashing.sha256_of(str(path)) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_quotes_make_byte_cuts_unsafe(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text('a,b,y\n1,2,0\n3,4,1\n5,"6",1\n')
    ds = open_data(path)
    assert [ds.byte_cuts_unsafe(r, 2) for r in range(2)] == [False, True]
    with pytest.raises(DataError, match="quoted fields"):
        list(ds.blocks(torch.float32, rank=1, world=2))
    exact = [
        x
        for r in range(2)
        for b in ds.blocks(torch.float32, rank=r, world=2, exact=True)
        for x in b.inputs.tolist()
    ]
    assert exact == [[1, 2], [3, 4], [5, 6]]


def test_read_ahead_thread_gives_every_block_and_raises_reader_errors() -> None:
    from evalloss.run.readahead import prefetch

    assert list(prefetch(iter(range(50)))) == list(range(50))

    def failing():  # type: ignore[no-untyped-def]
        yield 1
        raise DataError("bad row", path="f", line=3)

    got = []
    with pytest.raises(DataError, match="bad row"):
        for x in prefetch(failing()):
            got.append(x)
    assert got == [1]
    closed = []

    def endless():  # type: ignore[no-untyped-def]
        try:
            n = 0
            while True:
                yield n
                n += 1
        finally:
            closed.append(True)

    reader = prefetch(endless())
    assert next(reader) == 0
    reader.close()  # the consumer stops early: the reader thread stops and closes its source
    assert closed == [True]


def test_threads_option_and_read_ahead_on_or_off_give_the_same_figures(
    write_csv, save, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    path = write_csv(_text(500))
    torch.manual_seed(0)
    ckpt = save(nets.linear(features=2, outputs=3), loss="cross-entropy")
    model = f"{net('linear')}"
    kwargs = {"features": 2, "outputs": 3}
    before = torch.get_num_threads()
    monkeypatch.setenv("EVALLOSS_READ_AHEAD", "1")
    default = evalloss.compare([ckpt], data=path, model=model, model_kwargs=kwargs, batch_size=7)
    assert torch.get_num_threads() == before  # restored after the run
    monkeypatch.setenv("EVALLOSS_READ_AHEAD", "0")
    plain = evalloss.compare(
        [ckpt], data=path, model=model, model_kwargs=kwargs, batch_size=7, threads=2
    )
    assert plain.models[0].loss_sum == default.models[0].loss_sum
    assert plain.models[0].items == default.models[0].items == 500
    with pytest.raises(evalloss.OptionError, match="--threads"):
        evalloss.compare([ckpt], data=path, model=model, model_kwargs=kwargs, threads=0)


def test_read_ahead_only_where_the_models_leave_cores_free(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EVALLOSS_READ_AHEAD", raising=False)
    monkeypatch.setattr(evaluation, "cores", lambda local_processes=1: 4 // local_processes)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(4)
        assert not evaluation.read_ahead(cpu, 1)  # torch on every core: take turns
        assert evaluation.read_ahead(cuda, 1)  # the GPU computes while the CPU parses
        assert not evaluation.read_ahead(cpu, 2)  # 4 threads on a 2-core share
        torch.set_num_threads(2)
        assert evaluation.read_ahead(cpu, 1)  # two cores left to parse
        assert not evaluation.read_ahead(cpu, 2)
        monkeypatch.setenv("EVALLOSS_READ_AHEAD", "0")
        assert not evaluation.read_ahead(cuda, 1)
        monkeypatch.setenv("EVALLOSS_READ_AHEAD", "1")
        torch.set_num_threads(4)
        assert evaluation.read_ahead(cpu, 1)
    finally:
        torch.set_num_threads(before)


def test_hash_ahead_hands_its_hashes_to_sha256_of(tmp_path: Path) -> None:
    files = []
    for i in range(3):
        files.append(tmp_path / f"f{i}.bin")
        files[-1].write_bytes(bytes(range(256)) * (1000 + i))
    hashing.hash_ahead([str(f) for f in files] + [str(tmp_path / "missing"), str(tmp_path)])
    for f in files:  # asked by another spelling of the same path: the same entry
        relative = str(f.parent / ".." / f.parent.name / f.name)
        assert hashing.sha256_of(relative) == hashlib.sha256(f.read_bytes()).hexdigest()
        assert hashing._AHEAD[hashing._known(str(f))].done()


def test_a_file_changed_after_hash_ahead_is_hashed_again(tmp_path: Path) -> None:
    path = tmp_path / "d.bin"
    path.write_bytes(b"old" * 1000)
    hashing.hash_ahead([str(path)])
    hashing.sha256_of(str(path))
    path.write_bytes(b"new bytes" * 1000)  # another size: another stamp
    assert hashing.sha256_of(str(path)) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_failed_hash_ahead_raises_where_the_hash_is_asked_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "d.bin"
    path.write_bytes(b"x" * 100)
    real = hashing._hash
    monkeypatch.setattr(hashing, "_hash", lambda p: (_ for _ in ()).throw(PermissionError(13, "no")))
    hashing.hash_ahead([str(path)])
    with pytest.raises(PermissionError):
        hashing.sha256_of(str(path))  # the thread's error, raised again here by hashing anew
    monkeypatch.setattr(hashing, "_hash", real)
    assert hashing.sha256_of(str(path)) == hashlib.sha256(b"x" * 100).hexdigest()


@pytest.mark.parametrize(("cache", "no_hash", "ahead"), [
    (None, False, True),  # provenance: hashed on a thread while torch imports
    ("c", True, True),  # the cache key needs the hashes, --no-hash or not
    (None, True, False),  # --no-hash: nothing
])
def test_compare_hashes_ahead_what_the_run_will_hash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: str | None, no_hash: bool, ahead: bool,
) -> None:
    from evalloss.cli import commands

    asked: list[str] = []
    monkeypatch.setattr(hashing, "hash_ahead", lambda paths: asked.extend(paths))
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    for data in ("d.csv", "d.parquet"):  # a CLI default (--text-column text) changes nothing
        options = {"data": str(tmp_path / data), "cache": cache, "no_hash": no_hash,
                   "text_column": "text"}  # fmt: skip
        commands._hash_ahead(["a.safetensors", str(folder)], options)
        assert (str(tmp_path / data) in asked) == ahead
        assert (str(folder / "config.json") in asked) == ahead


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_run_hashes_every_input_byte_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, save, suffix: str  # type: ignore[no-untyped-def]
) -> None:
    import types

    from pyarrow import csv as pacsv

    from tests.conftest import run

    hashed: list[int] = []

    class Counting:  # hashlib.sha256 as the readers see it, counting the bytes fed to it
        def __init__(self) -> None:
            self._sha = hashlib.sha256()

        def update(self, data: bytes) -> None:
            hashed.append(len(data))
            self._sha.update(data)

        def hexdigest(self) -> str:
            return self._sha.hexdigest()

    monkeypatch.setattr(hashing, "hashlib", types.SimpleNamespace(sha256=Counting))
    csv_path = tmp_path / "d.csv"
    csv_path.write_text(_text(500))
    data = csv_path
    if suffix == ".parquet":
        data = tmp_path / "d.parquet"
        pq.write_table(pacsv.read_csv(csv_path), data)
    ckpt = save(nets.mlp(features=2), loss="cross-entropy")
    result = run("compare", ckpt, "--data", data, "--target", "y", "--no-progress")
    assert result.exit_code == 0, result.stderr
    assert sum(hashed) == data.stat().st_size + ckpt.stat().st_size  # each once, not twice


def test_the_hashing_thread_ends_with_the_pass_however_it_ends(tmp_path: Path) -> None:
    import threading

    def hashing() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "evalloss-sha256" and t.is_alive()]

    plain, quoted = tmp_path / "d.csv", tmp_path / "q.csv"
    plain.write_text(_text(30))
    quoted.write_text('a,b,y\n1,2,0\n"3",4,1\n')
    for path in (plain, quoted):
        list(open_data(path).blocks(torch.float32))
    blocks = open_data(plain).blocks(torch.float32)
    next(blocks)
    blocks.close()  # a pass stopped early (an error elsewhere)
    for thread in hashing():  # a thread told to end ends: joined, with a bound far past any
        thread.join(timeout=120)  # load (was: polled for 1 s, which a busy machine need not give)
    assert hashing() == []


def test_parse_blocks_hold_about_2048_lines_of_the_range_within_1_to_4_mib() -> None:
    mib = 1 << 20
    assert chunks.parse_block(b"1.2345," * 8 + b"0\n") == mib  # 58-byte lines: 1 MiB
    wide = (b"1.2345," * 256 + b"0\n") * 40  # 1794-byte lines: 2048 of them, as read off 64 KiB
    assert chunks.parse_block(wide) == pytest.approx(1794 * 2048, rel=0.02)
    assert chunks.parse_block(b"x" * (1 << 17)) == 4 * mib  # no line end seen: the most
    assert chunks.parse_block(b"") == 4 * mib


def test_a_wide_file_parses_the_same_in_any_parse_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "wide.csv"
    rows = [[round(i * 0.37 + j * 1.1, 4) for j in range(300)] + [i % 3] for i in range(900)]
    path.write_text("\n".join(",".join(map(str, r)) for r in [[f"f{j}" for j in range(300)]
                                                              + ["y"], *rows]) + "\n")  # fmt: skip
    want = _read(path)
    for block in (1 << 16, 1 << 20):  # blocks of 30 lines, and the whole range in one
        monkeypatch.setattr(chunks, "parse_block", lambda data, block=block: block)
        assert _read(path) == want
    assert want[0][5][:3] == pytest.approx([1.85, 2.95, 4.05]) and want[1][5] == [2.0]
