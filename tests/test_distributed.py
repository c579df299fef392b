"""Several processes give the one-process report: torchrun on CPU (gloo), and the merge itself.

The torchrun tests are slow (each starts torch in three processes), so there are two: one
torchrun run drives many CLI invocations in the same two processes (tests/torchrun_driver.py),
the other checks what a user sees when a rank fails.
"""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import evalloss
from evalloss.losses import get as get_loss
from evalloss.run import distributed
from evalloss.run.engine import Accumulator
from tests import nets
from tests.conftest import NETS, data_set

DRIVER = Path(__file__).parent / "torchrun_driver.py"
MODEL = f"{NETS}:mlp"


def _torchrun(*args: object, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=240)


def _write_csv(path: Path, x: torch.Tensor, y: torch.Tensor, note: bool = False) -> Path:
    lines = ["a,b,c,note,y" if note else "a,b,c,y"]
    for i, (row, label) in enumerate(zip(x.tolist(), y.tolist(), strict=True)):
        extra = [f'"row {i}\nsecond line"' if i % 50 == 7 else "x"] if note else []
        lines.append(",".join([*map(repr, row), *extra, str(label)]))
    path.write_text("\n".join(lines) + "\n")
    return path


def _same(one: dict, many: dict) -> None:  # type: ignore[type-arg]
    """The K-process report is the one-process report but for world_size and seconds."""
    assert many["world_size"] == 2 and one["world_size"] == 1
    assert many["data"] == one["data"]
    assert [m["path"] for m in many["models"]] == [m["path"] for m in one["models"]]
    for a, b in zip(one["models"], many["models"], strict=True):
        assert a["items"] == b["items"]
        assert math.isclose(a["loss_per_item"], b["loss_per_item"], rel_tol=1e-12)
        assert a["accuracy"] == b["accuracy"]
        for u, v in zip(a.get("slices", ()), b.get("slices", ()), strict=True):
            _same_slice(u, v)
        if a.get("vs_baseline"):
            assert b["vs_baseline"]["wins"] == a["vs_baseline"]["wins"]
            assert math.isclose(a["vs_baseline"]["delta"], b["vs_baseline"]["delta"], rel_tol=1e-9)
            for u, v in zip(a["vs_baseline"]["ci95"], b["vs_baseline"]["ci95"], strict=True):
                assert math.isclose(u, v, rel_tol=1e-9)
    assert many["gate"] == one["gate"]


def _same_slice(a: dict, b: dict) -> None:  # type: ignore[type-arg]
    """One slice's figures from K processes are those of one process."""
    for key in ("column", "value", "range", "items", "weight", "accuracy", "nonfinite_items"):
        assert a[key] == b[key], key
    assert math.isclose(a["loss_sum"], b["loss_sum"], rel_tol=1e-12)
    if a.get("vs_baseline"):
        assert a["vs_baseline"]["wins"] == b["vs_baseline"]["wins"]
        assert math.isclose(a["vs_baseline"]["delta"], b["vs_baseline"]["delta"], rel_tol=1e-9)
        assert math.isclose(a["p_holm"], b["p_holm"], rel_tol=1e-6)


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tmp_path: Path) -> None:
    x, y = data_set(1001, seed=3)
    files = {
        "csv": _write_csv(tmp_path / "d.csv", x, y),
        "one-row": _write_csv(tmp_path / "one.csv", x[:1], y[:1]),  # rank 1 gets no rows
        "quoted": _write_csv(tmp_path / "q.csv", x[:300], y[:300], note=True),
        "bad": _write_csv(tmp_path / "bad.csv", x, y),
    }
    table = pa.table({"a": x[:, 0].numpy(), "b": x[:, 1].numpy(), "c": x[:, 2].numpy()})
    table = table.append_column("y", pa.array(y.numpy()))
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=400)  # 3 groups: 2 + 1
    pq.write_table(table.slice(0, 10), tmp_path / "small.parquet")  # 1 group: rank 1 empty
    files["parquet"], files["small"] = tmp_path / "d.parquet", tmp_path / "small.parquet"
    groups = [["north", "south", None, "east"][i % 4] if i % 11 else "west" for i in range(1001)]
    sliced = table.append_column("g", pa.array(groups))
    pq.write_table(sliced, tmp_path / "sliced.parquet", row_group_size=300)
    files["sliced"] = files["binned"] = tmp_path / "sliced.parquet"
    files["sliced-csv"] = tmp_path / "sliced.csv"
    files["sliced-csv"].write_text("a,b,c,g,y\n" + "".join(
        f"{r[0]!r},{r[1]!r},{r[2]!r},{g or ''},{label}\n"
        for r, g, label in zip(x.tolist(), groups, y.tolist(), strict=True)))  # fmt: skip
    lines = files["bad"].read_text().splitlines()
    lines[900] = "1.0,2.0,oops,0"  # line 901, in the second half: rank 1's share
    files["bad"].write_text("\n".join(lines) + "\n")
    ckpts = []
    for i in range(3):
        torch.manual_seed(i)
        ckpts.append(str(tmp_path / f"m{i}.safetensors"))
        evalloss.save(nets.mlp(), ckpts[-1], loss="cross-entropy")
    common = [*ckpts, "--format", "json", "--precision", "float64"]
    cases = {name: ["compare", *common, "--data", str(path)] for name, path in files.items()}
    cases["csv"] += ["--baseline", ckpts[0], "--min-improvement", "0"]
    cases["quoted"] += ["--feature", "a", "--feature", "b", "--feature", "c"]
    slicing = {"sliced": ["--slice", "g", "--baseline", ckpts[0], "--target", "y"],
               "sliced-csv": ["--slice", "g", "--baseline", ckpts[0]],
               "binned": ["--slice", "a", "--slice-bins", "3", "--feature", "a", "--feature",
                          "b", "--feature", "c", "--target", "y"]}  # fmt: skip
    for name, extra in slicing.items():
        cases[name] += extra
    (tmp_path / "cases.json").write_text(json.dumps(cases))

    done = _torchrun(DRIVER, tmp_path / "cases.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ranks = [json.loads((tmp_path / f"cases.json.{r}.out").read_text()) for r in range(2)]

    for name, _args in cases.items():
        zero, one = ranks[0][name], ranks[1][name]
        assert one["stdout"] == "", name  # rank 1 prints nothing
        if name == "bad":
            assert zero["code"] == one["code"] == 2
            assert (
                zero["stderr"] == f"evalloss: error: {files['bad']}:901: c: not a number: 'oops'\n"
            )
            assert one["stderr"] == ""
            continue
        kwargs = {"precision": "float64"}
        if name == "csv":
            kwargs |= {"baseline": ckpts[0], "min_improvement": "0"}
        if name == "quoted":
            kwargs |= {"feature": ["a", "b", "c"]}
        if name in ("sliced", "sliced-csv"):
            kwargs |= {"slice": ["g"], "baseline": ckpts[0]}
        if name == "sliced":
            kwargs |= {"target": ["y"]}
        if name == "binned":
            kwargs |= {"slice": ["a"], "slice_bins": 3, "feature": ["a", "b", "c"],
                       "target": ["y"]}  # fmt: skip
        report = evalloss.compare(ckpts, data=files[name], **kwargs)  # type: ignore[arg-type]
        code = 1 if report.gate is not None and not report.gate.passed else 0
        assert zero["code"] == one["code"] == code, zero["stderr"]
        assert one["stderr"] == "", name
        if name == "quoted":  # said so, on rank 0 only
            assert "quoted fields" in zero["stderr"]
        elif name == "csv":  # the gate's verdict line, once
            assert len(zero["stderr"].splitlines()) == 1
        else:
            assert zero["stderr"] == "", name
        _same(report.to_dict(), json.loads(zero["stdout"]))


@pytest.mark.slow
def test_torchrun_bad_row_on_rank_1_is_one_line_and_exit_2(tmp_path: Path) -> None:
    x, y = data_set(400, seed=5)
    path = _write_csv(tmp_path / "d.csv", x, y)
    lines = path.read_text().splitlines()
    lines[350] = "1.0,2.0,3.0,7"  # a class label the model cannot take, on line 351
    path.write_text("\n".join(lines) + "\n")
    torch.manual_seed(0)
    evalloss.save(nets.mlp(), tmp_path / "m.safetensors", loss="cross-entropy")
    args = ["-m", "evalloss", "compare", "m.safetensors", "--data", "d.csv"]
    done = _torchrun(*args, cwd=tmp_path)
    assert done.returncode != 0  # torchrun's own code for a failed worker (1)
    assert done.stdout == ""
    ours = [line for line in done.stderr.splitlines() if line.startswith("evalloss:")]
    assert ours == ["evalloss: error: d.csv:351: y: class label must be an integer in [0, 3): '7'"]
    assert "exitcode  : 2" in done.stderr  # torchrun's summary of the failed rank


@pytest.mark.slow
def test_torchrun_data_that_grows_after_the_pass_is_exit_2_on_every_rank(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: rank 0 hashed the grown file (a sha256 of bytes no figure came from) and every
    rank left with the gate's code, 1. Now rank 0 sees the stamp moved and every rank leaves
    with 2 (agreed before the process group ends), one line from rank 0; with no gate, too."""
    x, y = data_set(300, seed=7)
    data = _write_csv(tmp_path / "d.csv", x, y)
    ckpts = []
    for i in range(2):
        torch.manual_seed(i)
        ckpts.append(str(tmp_path / f"m{i}.safetensors"))
        evalloss.save(nets.mlp(), ckpts[-1], loss="cross-entropy")
    gated = ["compare", *ckpts, "--data", str(data), "--baseline", ckpts[0],
             "--min-improvement", "50%"]  # fmt: skip
    cases = {"gated": gated, "plain": ["compare", *ckpts, "--data", str(data)]}
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    monkeypatch.setenv("EVALLOSS_TEST_GROWS", str(data))
    done = _torchrun(DRIVER, tmp_path / "cases.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ranks = [json.loads((tmp_path / f"cases.json.{r}.out").read_text()) for r in range(2)]
    for name in cases:
        zero, one = ranks[0][name], ranks[1][name]
        assert zero["code"] == one["code"] == 2, (name, zero, one)
        assert zero["stderr"] == f"evalloss: error: {data}: changed while it was being read " \
            "(its size or modification time): the figures would match neither version; run " \
            "again on a file that stays put\n"
        assert one["stderr"] == zero["stdout"] == one["stdout"] == ""


def test_merged_states_equal_one_pass() -> None:
    """Accumulators fed disjoint shards and merged equal one fed everything (exact sums)."""
    x, y = data_set(97, seed=1)
    torch.manual_seed(0)
    model = nets.mlp().double().eval()  # float64: float32 GEMMs may differ by batch shape
    x = x.double()
    loss = get_loss("cross-entropy")
    whole = Accumulator(model, loss, torch.device("cpu"), "m")
    whole.feed(x, y.double().reshape(-1, 1))
    cuts = [0, 0, 13, 60, 97]  # one shard empty
    shards = []
    for lo, hi in itertools.pairwise(cuts):
        acc = Accumulator(model, loss, torch.device("cpu"), "m")
        if hi > lo:
            for s in range(lo, hi, 5):
                e = min(s + 5, hi)
                acc.feed(x[s:e], y[s:e].double().reshape(-1, 1))
        shards.append(acc.state())
    merged = Accumulator(model, loss, torch.device("cpu"), "m")
    merged.merge_states(shards)
    a, b = whole.result(), merged.result()
    assert (a.items, a.accuracy, a.nonfinite_items) == (b.items, b.accuracy, b.nonfinite_items)
    with torch.no_grad():
        per_item = torch.nn.functional.cross_entropy(model(x), y, reduction="none")
    assert b.loss_sum == pytest.approx(math.fsum(per_item.tolist()), rel=1e-12)
    assert a.loss_sum == pytest.approx(b.loss_sum, rel=1e-12)


def test_world_of_one_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.env_world() == (0, 1, 1) and distributed.is_main()
    with distributed.World.from_env() as world:
        assert world.gather("x") == ["x"]
        assert world.step(False, True) == (False, True)
        world.agree(None)
        with pytest.raises(evalloss.DataError):
            world.agree(evalloss.DataError("bad", path="f"))
    import torch.distributed as dist

    assert not dist.is_initialized()
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    assert distributed.env_world() == (3, 4, 4) and not distributed.is_main()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_equals_cpu(tmp_path: Path) -> None:
    x, y = data_set(5000, seed=2)
    path = _write_csv(tmp_path / "d.csv", x, y)
    torch.manual_seed(0)
    ckpt = tmp_path / "m.safetensors"
    evalloss.save(nets.mlp(), ckpt, loss="cross-entropy")
    reports = {
        device: evalloss.compare([ckpt], data=path, device=device, precision="float64").models[0]
        for device in ("cpu", "cuda")
    }
    assert reports["cuda"].items == reports["cpu"].items == 5000
    assert reports["cuda"].loss_sum == pytest.approx(reports["cpu"].loss_sum, rel=1e-12)


@pytest.mark.slow
def test_torchrun_stalled_peer_is_one_line_and_exit_4(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 1 stalls in its model: rank 0 gives up after EVALLOSS_TIMEOUT with one PeerError
    line and exit 4 (torchrun then stops rank 1: its SIGTERM line, 143)."""
    x, y = data_set(200, seed=6)
    _write_csv(tmp_path / "d.csv", x, y)
    torch.manual_seed(0)
    from tests import faulty

    evalloss.save(faulty.Fine(), tmp_path / "m.safetensors", loss="cross-entropy")
    # long enough that a loaded machine's slow start of one rank is not the stall (was 3 s:
    # rank 1 could give up on a rank 0 still importing, before it stalled), short of the stall
    monkeypatch.setenv("EVALLOSS_TIMEOUT", "20")
    faulty = Path(__file__).parent / "faulty.py"
    args = ["-m", "evalloss", "compare", "m.safetensors", "--data", "d.csv",
            "--model", f"{faulty}:StallsOnRank1", "--batch-size", "50"]  # fmt: skip
    done = _torchrun(*args, cwd=tmp_path)
    ours = [line for line in done.stderr.splitlines() if line.startswith("evalloss:")]
    assert ours[0].startswith(
        "evalloss: error: rank 0: another process of the run died or did not answer within 20 s"
    ), done.stderr
    assert "exitcode  : 4" in done.stderr  # torchrun's summary of rank 0
    assert not any(line.startswith("evalloss:") for line in ours[1:] if "SIGTERM" not in line)


@pytest.mark.slow
def test_torchrun_token_data_equals_one_process(tmp_path: Path) -> None:
    """A .bin stream (windows split by rank), JSON Lines (every other chunk) and Parquet (row
    groups) under two processes: the report of one process, baseline statistics included."""
    import random

    from tests import lm

    rng = random.Random(9)
    docs = [[rng.randrange(lm.VOCAB) for _ in range(rng.choice([0, 2, 7, 19]))] for _ in range(300)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps({"input_ids": d}) + "\n" for d in docs))
    pq.write_table(pa.table({"input_ids": docs}), tmp_path / "d.parquet", row_group_size=70)
    src = [["web", "code", None][i % 3] for i in range(len(docs))]
    pq.write_table(pa.table({"input_ids": docs, "src": src}), tmp_path / "s.parquet",
                   row_group_size=70)  # fmt: skip
    torch.manual_seed(0)
    (torch.randint(0, lm.VOCAB, (5000,)).to(torch.int32).numpy().astype("uint16")).tofile(
        tmp_path / "s.bin"
    )
    ckpts = []
    for i in range(2):
        torch.manual_seed(i)
        ckpts.append(str(tmp_path / f"lm{i}.safetensors"))
        evalloss.save(lm.Causal(), ckpts[-1], loss="causal-lm")
    model = ["--model", f"{Path(__file__).parent / 'lm.py'}:Causal"]
    common = [*ckpts, *model, "--format", "json", "--precision", "float64"]
    cases = {
        "stream": ["compare", *common, "--data", "s.bin", "--context", "64", "--stride", "48"],
        "jsonl": ["compare", *common, "--data", "d.jsonl", "--baseline", ckpts[0]],
        "parquet": ["compare", *common, "--data", "d.parquet", "--batch-tokens", "50"],
        "sliced": ["compare", *common, "--data", "s.parquet", "--baseline", ckpts[0],
                   "--slice", "src", "--context", "8"],
    }
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    done = _torchrun(DRIVER, tmp_path / "cases.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    zero = json.loads((tmp_path / "cases.json.0.out").read_text())
    for name, args in cases.items():
        assert zero[name]["code"] in (None, 0), zero[name]["stderr"]
        many = json.loads(zero[name]["stdout"])
        one = evalloss.compare(
            ckpts, data=tmp_path / args[args.index("--data") + 1], model=model[1],
            precision="float64", context={"stream": 64, "sliced": 8}.get(name),
            stride=48 if name == "stream" else None,
            baseline=ckpts[0] if name in ("jsonl", "sliced") else None,
            slice=["src"] if name == "sliced" else (),
        ).to_dict()  # fmt: skip
        assert many["world_size"] == 2
        for a, b in zip(one["models"], many["models"], strict=True):
            assert (a["path"], a["items"], a["tokens"]) == (b["path"], b["items"], b["tokens"])
            assert math.isclose(a["loss_sum"], b["loss_sum"], rel_tol=1e-12)
            assert len(a.get("slices", ())) == (3 if name == "sliced" else 0)
            for u, v in zip(a.get("slices", ()), b.get("slices", ()), strict=True):
                _same_slice(u, v)
            if a.get("vs_baseline"):
                assert math.isclose(
                    a["vs_baseline"]["delta"], b["vs_baseline"]["delta"], rel_tol=1e-9
                )
                assert a["vs_baseline"]["wins"] == b["vs_baseline"]["wins"]
