"""Malformed checkpoints: each refused by name with exit 2 and one line; nothing imported.

Every broken file is built here, from a valid one or from scratch. A property test mutates
valid files (header length, header bytes, truncation) and asserts the CLI never crashes.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import evalloss
from evalloss.models import open_checkpoint
from evalloss.models.checkpoint import HEADER_CAP
from tests.conftest import run

ROWS = [[1.0, 2.0, 0], [0.5, -1.0, 2], [0.0, 0.25, 1]]


@pytest.fixture
def data(write_csv) -> Path:  # type: ignore[no-untyped-def]
    return write_csv(ROWS, ["a", "b", "y"])  # type: ignore[no-any-return]


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 3))


def _valid(tmp_path: Path, name: str = "ok.safetensors") -> bytes:
    """The bytes of a valid checkpoint with a layers spec, a loss and a target."""
    path = tmp_path / name
    evalloss.save(_net(), path, loss="cross-entropy", target="y")
    return path.read_bytes()


def _split(raw: bytes) -> tuple[dict, bytes]:  # type: ignore[type-arg]
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def _pack(header: dict | bytes, data: bytes) -> bytes:  # type: ignore[type-arg]
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _refused(path: Path, data: Path, tmp_path: Path, *message: str) -> str:
    """Run compare with -o; exit 2, one stderr line naming the file, no output file."""
    out = tmp_path / "report.json"
    result = run("compare", path, "--data", data, "--format", "json", "-o", out)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == "" and not out.exists()
    line = result.stderr
    assert line.startswith(f"evalloss: error: {path}: ") and line.count("\n") == 1, line
    assert "Traceback" not in line
    for part in message:
        assert part in line
    return line


def test_valid_file_is_evaluated(tmp_path: Path, data: Path) -> None:
    path = tmp_path / "m.safetensors"
    path.write_bytes(_valid(tmp_path))
    result = run("compare", path, "--data", data)
    assert result.exit_code == 0, result.stderr


def test_missing_file(tmp_path: Path, data: Path) -> None:
    _refused(tmp_path / "nope.safetensors", data, tmp_path, "no such file")


def test_directory(tmp_path: Path, data: Path) -> None:
    (tmp_path / "d.safetensors").mkdir()
    _refused(tmp_path / "d.safetensors", data, tmp_path, "is a directory without config.json")


def test_fifo_is_refused_without_blocking(tmp_path: Path, data: Path) -> None:
    os.mkfifo(tmp_path / "pipe.safetensors")
    _refused(tmp_path / "pipe.safetensors", data, tmp_path, "not a regular file")


def test_unreadable_file(tmp_path: Path, data: Path) -> None:
    path = tmp_path / "secret.safetensors"
    path.write_bytes(_valid(tmp_path))
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("permissions are not enforced for this user (root)")
        _refused(path, data, tmp_path, "permission denied")
    finally:
        path.chmod(0o600)


@pytest.mark.parametrize("size", [0, 1, 7])
def test_too_short(tmp_path: Path, data: Path, size: int) -> None:
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"\x10" * size)
    _refused(path, data, tmp_path, f"file is {size} bytes, too short for safetensors")


class _Marker:
    """Unpickling this imports tests.boom, which writes the marker file."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import importlib

        return importlib.import_module, ("tests.boom",)


@pytest.mark.parametrize(
    ("zipped", "what"),
    [(True, "a PyTorch zip checkpoint (torch.save)"), (False, "a pickle file (old torch.save")],
)
def test_pytorch_checkpoints_are_refused_by_name_and_never_unpickled(  # type: ignore[no-untyped-def]
    tmp_path: Path, data: Path, monkeypatch, zipped: bool, what: str
) -> None:
    marker = tmp_path / "imported.txt"
    monkeypatch.setenv("EVALLOSS_BOOM_MARKER", str(marker))
    path = tmp_path / "model.pt"
    payload = {"0.weight": torch.zeros(3, 2), "hook": _Marker()}
    torch.save(payload, path, _use_new_zipfile_serialization=zipped)
    line = _refused(path, data, tmp_path, what, "evalloss reads only safetensors files")
    assert "can run code" in line
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_pickles_are_refused(tmp_path: Path, data: Path, protocol: int) -> None:
    path = tmp_path / "state.pkl"
    path.write_bytes(pickle.dumps({"w": list(range(100))}, protocol=protocol))
    _refused(path, data, tmp_path, "a pickle file")


def test_git_lfs_pointer(tmp_path: Path, data: Path) -> None:
    path = tmp_path / "lfs.safetensors"
    path.write_text(
        "version https://git-lfs.github.com/spec/v1\n"
        "oid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393\n"
        "size 12345\n"
    )
    _refused(path, data, tmp_path, "a Git LFS pointer", "git lfs pull")


def test_header_length_over_the_cap(tmp_path: Path, data: Path) -> None:
    path = tmp_path / "huge.safetensors"
    path.write_bytes(struct.pack("<Q", HEADER_CAP + 1) + b"{}")
    _refused(path, data, tmp_path, f"header length {HEADER_CAP + 1} exceeds the cap")


def test_header_length_past_the_end(tmp_path: Path, data: Path) -> None:
    path = tmp_path / "past.safetensors"
    path.write_bytes(struct.pack("<Q", 500) + b'{"a": 1}')
    _refused(path, data, tmp_path, "header length 500 runs past the end of the 16-byte file")


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (b'{"\xff\xfe": 1}', "header is not UTF-8"),
        (b"{not json}", "header is not valid JSON"),
        (b"[1, 2]", "header is not a JSON object"),
        (b"", "header is not a JSON object"),
        (b"{" * 10 + b"[" * 100_000, "header is not valid JSON"),
    ],
)
def test_header_not_utf8_json(tmp_path: Path, data: Path, header: bytes, message: str) -> None:
    path = tmp_path / "bad.safetensors"
    path.write_bytes(_pack(header, b""))
    _refused(path, data, tmp_path, message)


def test_duplicate_tensor_names(tmp_path: Path, data: Path) -> None:
    header, blob = _split(_valid(tmp_path))
    text = json.dumps(header)
    entry = json.dumps({"0.bias": header["0.bias"]})[1:-1]
    path = tmp_path / "dup.safetensors"
    path.write_bytes(_pack(text[:-1].encode() + b", " + entry.encode() + b"}", blob))
    _refused(path, data, tmp_path, "'0.bias': the header names it twice")


def _edit(tmp_path: Path, name: str, change) -> Path:  # type: ignore[no-untyped-def]
    header, blob = _split(_valid(tmp_path))
    blob = change(header, blob) or blob
    path = tmp_path / name
    path.write_bytes(_pack(header, blob))
    return path


def _offsets(header: dict) -> dict:  # type: ignore[type-arg]
    return {k: v["data_offsets"] for k, v in header.items() if k != "__metadata__"}


def test_unknown_dtype(tmp_path: Path, data: Path) -> None:
    path = _edit(tmp_path, "dtype.safetensors", lambda h, b: h["0.bias"].update(dtype="F99"))
    _refused(path, data, tmp_path, "tensor '0.bias': unknown dtype 'F99'")


def test_overlapping_offsets(tmp_path: Path, data: Path) -> None:
    def overlap(header: dict, blob: bytes) -> bytes:  # type: ignore[type-arg]
        # 0.bias [0, 12), 0.weight [12, 36): move the weight 4 bytes into the bias
        assert _offsets(header) == {"0.bias": [0, 12], "0.weight": [12, 36]}
        header["0.weight"]["data_offsets"] = [8, 32]
        return blob[:32]

    path = _edit(tmp_path, "overlap.safetensors", overlap)
    _refused(path, data, tmp_path, "tensor '0.weight': its data overlaps the previous tensor's")


def test_gap_between_tensors(tmp_path: Path, data: Path) -> None:
    def gap(header: dict, blob: bytes) -> bytes:  # type: ignore[type-arg]
        header["0.weight"]["data_offsets"] = [16, 40]
        return blob[:12] + b"\0" * 4 + blob[12:]

    path = _edit(tmp_path, "gap.safetensors", gap)
    _refused(path, data, tmp_path, "tensor '0.weight': a gap of 4 bytes before its data")


def test_offsets_that_do_not_match_the_shape(tmp_path: Path, data: Path) -> None:
    path = _edit(tmp_path, "shape.safetensors", lambda h, b: h["0.bias"].update(shape=[4]))
    _refused(path, data, tmp_path, "tensor '0.bias': shape [4] of F32 needs 16 bytes")


@pytest.mark.parametrize(("cut", "extra"), [(4, b""), (35, b""), (0, b"\0"), (0, b"x" * 100)])
def test_truncated_or_trailing_data(tmp_path: Path, data: Path, cut: int, extra: bytes) -> None:
    path = _edit(tmp_path, "cut.safetensors", lambda h, b: b[: len(b) - cut] + extra)
    if cut:
        _refused(
            path,
            data,
            tmp_path,
            f"truncated: the tensors need 36 bytes of data, the file has {36 - cut}",
        )
    else:
        _refused(path, data, tmp_path, f"{len(extra)} bytes of trailing data after the last tensor")


def test_truncated_inside_the_header(tmp_path: Path, data: Path) -> None:
    raw = _valid(tmp_path)
    path = tmp_path / "half.safetensors"
    path.write_bytes(raw[:40])
    _refused(path, data, tmp_path, "runs past the end of the 40-byte file")


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"evalloss.loss": 1}, "evalloss.loss: metadata value is int, not a string"),
        ({"evalloss.layers": [["Linear", {}]]}, "evalloss.layers: metadata value is list"),
        ({"x": None}, "x: metadata value is NoneType"),
        ({"\x1b[2J\nx": 1}, "'\\x1b[2J\\nx': metadata value is int"),
        ([1, 2], "__metadata__ must be a JSON object of strings"),
    ],
)
def test_non_string_metadata(tmp_path: Path, data: Path, metadata: object, message: str) -> None:
    path = _edit(tmp_path, "meta.safetensors", lambda h, b: h.update(__metadata__=metadata))
    _refused(path, data, tmp_path, message)


def test_library_refusal_without_a_plainer_diagnosis(tmp_path: Path, data: Path) -> None:
    path = _edit(tmp_path, "odd.safetensors", lambda h, b: h["0.bias"].update(shape="three"))
    _refused(path, data, tmp_path, "not a valid safetensors file (")


def test_a_valid_header_that_starts_like_a_pickle_is_read(tmp_path: Path, data: Path) -> None:
    """A header of 640 bytes: its length begins 0x80 0x02, as a protocol-2 pickle does."""
    header, blob = _split(_valid(tmp_path))
    text = json.dumps(header).encode()
    raw = _pack(text + b" " * (640 - len(text)), blob)
    assert raw[:2] == b"\x80\x02"
    path = tmp_path / "x80.safetensors"
    path.write_bytes(raw)
    assert open_checkpoint(path).shapes == {"0.weight": (3, 2), "0.bias": (3,)}
    assert run("compare", path, "--data", data).exit_code == 0


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_weights_warn_and_the_run_goes_on(tmp_path: Path, data: Path, bad: float) -> None:
    net = _net()
    with torch.no_grad():
        net[0].weight[1, 0] = bad
        net[0].weight[2, 1] = bad
    path = tmp_path / "nan.safetensors"
    evalloss.save(net, path, loss="cross-entropy", target="y")
    result = run("compare", path, "--data", data, "--format", "json")
    assert result.exit_code == 0
    assert result.stderr == (
        f"evalloss: warning: {path}: NaN or Inf weights in 0.weight (2 of 6 values); "
        "its loss shows what they do\n"
    )
    model = json.loads(result.stdout)["models"][0]
    assert model["loss_per_item"] is None and model["nonfinite_items"] > 0
    with pytest.warns(evalloss.EvallossWarning, match=r"0\.weight \(2 of 6 values\)"):
        evalloss.compare([path], data=data)


# -- property test: mutated valid files never crash the CLI --------------------------------

_MUTATIONS = st.one_of(
    st.tuples(st.just("length"), st.binary(min_size=8, max_size=8)),
    st.tuples(st.just("length+"), st.integers(-300, 300)),
    st.tuples(st.just("byte"), st.tuples(st.integers(8, 10_000), st.integers(0, 255))),
    st.tuples(st.just("cut"), st.integers(0, 10_000)),
)


def _mutate(raw: bytes, how: tuple[str, object]) -> bytes:
    kind, arg = how
    if kind == "length":
        return bytes(arg) + raw[8:]  # type: ignore[arg-type]
    if kind == "length+":
        (n,) = struct.unpack("<Q", raw[:8])
        return struct.pack("<Q", max(0, n + int(arg))) + raw[8:]  # type: ignore[call-overload]
    if kind == "byte":
        (n,) = struct.unpack("<Q", raw[:8])
        at, value = arg  # type: ignore[misc]
        at = 8 + (at - 8) % n  # somewhere in the header
        return raw[:at] + bytes([value]) + raw[at + 1 :]
    return raw[: int(arg) % (len(raw) + 1)]  # type: ignore[call-overload]


@settings(
    derandomize=True,
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(how=_MUTATIONS)
def test_mutated_files_exit_0_or_2_with_one_line_and_no_traceback(
    tmp_path: Path, data: Path, how: tuple[str, object]
) -> None:
    path = tmp_path / "mutant.safetensors"
    path.write_bytes(_mutate(_valid(tmp_path, "base.safetensors"), how))
    result = run("compare", path, "--data", data)
    assert result.exit_code in (0, 2), result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("evalloss: error:")]
    if result.exit_code == 2:
        assert result.stdout == "" and len(errors) == 1
        assert result.stderr.splitlines() == errors
    else:
        assert errors == []
        assert all(line.startswith("evalloss: warning: ") for line in result.stderr.splitlines())


@pytest.mark.parametrize("target", ["a,b", ["a", "b,c"], [], ["", "x"]])
def test_save_refuses_target_names_it_cannot_store(tmp_path: Path, target: object) -> None:
    with pytest.raises(evalloss.OptionError, match="target columns must be"):
        evalloss.save(_net(), tmp_path / "m.safetensors", target=target)  # type: ignore[arg-type]


def test_the_documented_pt_conversion_recipe(tmp_path: Path, data: Path) -> None:
    """docs/checkpoints.md: torch.load(weights_only=True) in a trusted place, then evalloss.save."""
    net = _net()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    trusted = nn.Sequential(nn.Linear(2, 3))
    trusted.load_state_dict(
        torch.load(tmp_path / "model.pt", map_location="cpu", weights_only=True)
    )
    out = tmp_path / "model.safetensors"
    evalloss.save(trusted, out, loss="cross-entropy", target="y")
    assert run("compare", tmp_path / "model.pt", "--data", data).exit_code == 2
    report = evalloss.compare([out], data=data)
    direct = evalloss.evaluate(
        net,
        [(torch.tensor([r[:2] for r in ROWS]), torch.tensor([r[2] for r in ROWS]))],
        "cross-entropy",
    )
    assert report.models[0].loss_sum == pytest.approx(direct.loss_sum, rel=1e-12)
    assert (
        "weights_only=True" in (Path(__file__).parents[1] / "docs" / "checkpoints.md").read_text()
    )


def test_save_gives_the_usual_file_mode(tmp_path: Path) -> None:
    """Like every other output: 0666 less the umask (mkstemp's 0600 used to stay)."""
    import stat

    mask = os.umask(0o022)
    try:
        path = tmp_path / "m.safetensors"
        evalloss.save(torch.nn.Linear(2, 1), path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
    finally:
        os.umask(mask)
