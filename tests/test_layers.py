"""The evalloss.layers spec: allow-list, checks before allocation, save/compare round trip."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

import evalloss
from evalloss.models import layers
from tests.conftest import data_set, run, xy_csv

ROOT = Path(__file__).resolve().parents[1]


def _with_metadata(module: nn.Module, path: Path, **metadata: str) -> Path:
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path), metadata)
    return path


def _oracle_sum(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """The module in memory, eval mode, one float64 cross-entropy per item, math.fsum."""
    module.eval()
    with torch.no_grad():
        out = module(x).double()
    return math.fsum(
        math.log(sum(math.exp(v) for v in row)) - row[label]
        for row, label in zip(out.tolist(), y.tolist(), strict=True)
    )


def _conv1d_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Unflatten(1, (1, 6)),
        nn.Conv1d(1, 4, 3, padding=1),
        nn.BatchNorm1d(4),
        nn.ReLU(inplace=True),
        nn.MaxPool1d(2),
        nn.Flatten(),
        nn.Linear(12, 8),
        nn.LayerNorm(8),
        nn.GELU(approximate="tanh"),
        nn.Dropout(0.3),
        nn.Linear(8, 3),
    )


def _conv2d_net() -> nn.Sequential:
    return nn.Sequential(
        nn.Unflatten(1, (1, 2, 3)),
        nn.Conv2d(1, 2, (3, 3), padding="same", bias=False),
        nn.BatchNorm2d(2, momentum=None),
        nn.SiLU(),
        nn.AvgPool2d(1),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.PReLU(2),
        nn.Linear(2, 3),
        nn.LogSoftmax(dim=1),
    )


@pytest.mark.parametrize("make", [_conv1d_net, _conv2d_net])
def test_saved_sequential_round_trips_through_compare_without_model(
    write_csv, tmp_path, make
) -> None:  # type: ignore[no-untyped-def]
    x, y = data_set(57, features=6)
    torch.manual_seed(3)
    module = make()
    module.train()
    with torch.no_grad():  # give batch norm running statistics that are not the defaults
        module(x * 2 + 1)
    path = tmp_path / "net.safetensors"
    evalloss.save(module, path, loss="cross-entropy", target="label")
    result = run("compare", path, "--data", xy_csv(write_csv, x, y), "--format", "json")
    assert result.exit_code == 0, result.stderr
    got = json.loads(result.stdout)["models"][0]["loss_sum"]
    assert got == pytest.approx(_oracle_sum(module, x, y), rel=1e-6)
    in_memory = evalloss.evaluate(module, [(x, y)], "cross-entropy")
    assert got == pytest.approx(in_memory.loss_sum, rel=1e-12)


# One instance of every allow-listed layer, with non-default arguments where it has some.
SAMPLES: dict[str, nn.Module] = {
    "Linear": nn.Linear(3, 4, bias=False),
    "Conv1d": nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=1, groups=2, padding_mode="zeros"),
    "Conv2d": nn.Conv2d(2, 3, (3, 1), padding="valid", padding_mode="reflect"),
    "BatchNorm1d": nn.BatchNorm1d(5, eps=1e-3, momentum=0.2, affine=False),
    "BatchNorm2d": nn.BatchNorm2d(5, track_running_stats=False),
    "LayerNorm": nn.LayerNorm([2, 3], eps=1e-6, elementwise_affine=True, bias=False),
    "Embedding": nn.Embedding(10, 4, padding_idx=0),
    "Dropout": nn.Dropout(0.25),
    "Flatten": nn.Flatten(0, 1),
    "Unflatten": nn.Unflatten(1, (2, 2)),
    "MaxPool1d": nn.MaxPool1d(3, stride=1, padding=1, dilation=1, ceil_mode=True),
    "MaxPool2d": nn.MaxPool2d((2, 3)),
    "AvgPool1d": nn.AvgPool1d(2, count_include_pad=False),
    "AvgPool2d": nn.AvgPool2d(2, stride=(1, 2)),
    "AdaptiveAvgPool1d": nn.AdaptiveAvgPool1d(4),
    "AdaptiveAvgPool2d": nn.AdaptiveAvgPool2d((2, 3)),
    "AdaptiveMaxPool1d": nn.AdaptiveMaxPool1d(3),
    "AdaptiveMaxPool2d": nn.AdaptiveMaxPool2d((1, 2)),
    "ZeroPad1d": nn.ZeroPad1d((1, 2)),
    "ZeroPad2d": nn.ZeroPad2d(1),
    "ConstantPad1d": nn.ConstantPad1d(2, 0.5),
    "ConstantPad2d": nn.ConstantPad2d((1, 0, 2, 3), -1.0),
    "ReflectionPad1d": nn.ReflectionPad1d(1),
    "ReflectionPad2d": nn.ReflectionPad2d((1, 1, 0, 2)),
    "ReplicationPad1d": nn.ReplicationPad1d((0, 3)),
    "ReplicationPad2d": nn.ReplicationPad2d(2),
    "Upsample": nn.Upsample(scale_factor=2.0, mode="bilinear", align_corners=False),
    "Dropout1d": nn.Dropout1d(0.1),
    "Dropout2d": nn.Dropout2d(0.3),
    "ReLU": nn.ReLU(),
    "GELU": nn.GELU(),
    "SiLU": nn.SiLU(),
    "Mish": nn.Mish(),
    "Tanh": nn.Tanh(),
    "Sigmoid": nn.Sigmoid(),
    "ELU": nn.ELU(alpha=0.5),
    "LeakyReLU": nn.LeakyReLU(0.2),
    "PReLU": nn.PReLU(3, init=0.1),
    "Softplus": nn.Softplus(beta=2, threshold=10),
    "Softmax": nn.Softmax(dim=-1),
    "LogSoftmax": nn.LogSoftmax(dim=1),
    "Identity": nn.Identity(),
}


def test_samples_cover_the_allow_list() -> None:
    assert set(SAMPLES) == set(layers.ALLOWED) == set(layers.classes())
    assert set(layers.REQUIRED) <= set(layers.ALLOWED)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_allowed_layer_is_described_and_rebuilt_identically(name: str) -> None:
    layer = SAMPLES[name]
    text = layers.describe(nn.Sequential(layer))
    assert text is not None
    assert json.loads(text)[0][0] == name
    rebuilt = layers.sequential(layers.parse(text))[0]
    assert type(rebuilt) is type(layer)
    assert rebuilt.extra_repr() == layer.extra_repr()
    mine = {k: v.shape for k, v in layer.state_dict().items()}
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == mine
    # from_layers loads by assignment: every tensor must be in the state dict, or it would stay
    # on the meta device (a non-persistent buffer)
    held = [n for n, _ in [*rebuilt.named_parameters(), *rebuilt.named_buffers()]]
    assert sorted(held) == sorted(mine)
    assert layers.parameters(name, dict(layers.parse(text)[0][1])) >= sum(
        v.numel() for v in layer.state_dict().values()
    )


@pytest.mark.parametrize(
    "module",
    [
        nn.Linear(3, 3),  # not a Sequential: keys would be "weight", not "0.weight"
        nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.ReLU())),  # nested
        nn.Sequential(nn.Bilinear(2, 2, 2)),  # not allow-listed
        nn.Sequential(nn.Embedding(4, 2, max_norm=1.0)),  # changes its weights when run
        nn.Sequential(nn.MaxPool1d(2, return_indices=True)),
        nn.Sequential(),
    ],
)
def test_save_names_the_class_when_no_spec_can_describe_it(tmp_path: Path, module) -> None:  # type: ignore[no-untyped-def]
    from safetensors import safe_open

    path = tmp_path / "m.safetensors"
    evalloss.save(module, path)
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    assert "evalloss.layers" not in metadata
    assert metadata["evalloss.model"] == f"{type(module).__module__}:{type(module).__qualname__}"


def test_named_children_get_no_spec() -> None:
    from collections import OrderedDict

    assert layers.describe(nn.Sequential(OrderedDict(fc=nn.Linear(2, 2)))) is None


def test_save_refuses_an_unknown_loss(tmp_path: Path) -> None:
    with pytest.raises(evalloss.LossError, match="unknown loss 'crossentropy'"):
        evalloss.save(nn.Linear(2, 2), tmp_path / "m.safetensors", loss="crossentropy")
    assert list(tmp_path.iterdir()) == []


def test_save_writes_loss_and_targets(tmp_path: Path) -> None:
    from safetensors import safe_open

    path = tmp_path / "m.safetensors"
    evalloss.save(nn.Sequential(nn.Linear(2, 2)), path, loss="mse", target=["t1", "t2"])
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    assert metadata["evalloss.loss"] == "mse" and metadata["evalloss.target"] == "t1,t2"
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def _spec_file(tmp_path: Path, spec: object, module: nn.Module | None = None) -> Path:
    text = spec if isinstance(spec, str) else json.dumps(spec)
    module = module if module is not None else nn.Sequential(nn.Linear(3, 3))
    return _with_metadata(
        module,
        tmp_path / "hostile.safetensors",
        **{"evalloss.layers": text, "evalloss.loss": "mse"},
    )


HOSTILE = [
    [["os.system", {"command": "touch /tmp/evalloss-pwned"}]],
    [["__import__", {"name": "os"}]],
    [["torch.hub.load", {"repo_or_dir": "evil/repo", "model": "x"}]],
    [["tests.boom:Boom", {}]],
    [["tests.boom.Boom", {}]],
    [["Boom", {}]],
    [["Sequential", {}]],
    [["Module", {}]],
    [["__class__", {}]],
    [["Linear", {"in_features": 3, "out_features": 3, "device": "cuda"}]],
    [["Linear", {"in_features": 3, "out_features": 3, "__class__": 1}]],
]


@pytest.mark.parametrize("spec", HOSTILE, ids=lambda s: s[0][0])
def test_hostile_specs_are_refused_and_nothing_is_imported(
    write_csv, tmp_path, monkeypatch, spec
) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "imported.txt"
    monkeypatch.setenv("EVALLOSS_BOOM_MARKER", str(marker))
    path = write_csv([[1, 2, 3, 0]], ["a", "b", "c", "y"])
    result = run("compare", _spec_file(tmp_path, spec), "--data", path)
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    line = result.stderr
    assert len(line.splitlines()) == 1 and "Traceback" not in line
    assert "hostile.safetensors: evalloss.layers: layer 0" in line
    assert "allow-list" in line or "unknown argument" in line
    assert not marker.exists()


def test_the_boom_marker_does_work_when_the_user_asks_for_it(
    write_csv, tmp_path, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    """Guard for the test above: a --model the user typed IS imported, and writes the marker."""
    marker = tmp_path / "imported.txt"
    monkeypatch.setenv("EVALLOSS_BOOM_MARKER", str(marker))
    path = write_csv([[1, 2, 3, 0.5]], ["a", "b", "c", "y"])
    ckpt = _with_metadata(nn.Linear(3, 3), tmp_path / "plain.safetensors")
    result = run(
        "compare", ckpt, "--data", path, "--model", f"{ROOT}/tests/boom.py:Boom", "--loss", "l1"
    )
    assert marker.exists()
    assert result.exit_code == 2  # Boom outputs 3 values for 1 target


@pytest.mark.parametrize("name", ["tests.boom:Boom", "some_module:Boom", "train.py:Net"])
def test_evalloss_model_is_shown_never_imported(
    write_csv, tmp_path, monkeypatch, name: str
) -> None:  # type: ignore[no-untyped-def]
    marker = tmp_path / "imported.txt"
    monkeypatch.setenv("EVALLOSS_BOOM_MARKER", str(marker))
    path = write_csv([[1, 2, 3, 0]], ["a", "b", "c", "y"])
    ckpt = _with_metadata(
        nn.Linear(3, 3),
        tmp_path / "m.safetensors",
        **{"evalloss.model": name, "evalloss.loss": "mse"},
    )
    result = run("compare", ckpt, "--data", path)
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "m.safetensors: no architecture: the file has no evalloss.layers spec" in result.stderr
    assert f"it was made by {name} (evalloss.model, never imported): pass --model" in result.stderr
    assert not marker.exists()


def test_no_spec_no_model_no_hint(write_csv, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = write_csv([[1, 2, 3, 0]], ["a", "b", "c", "y"])
    ckpt = _with_metadata(nn.Linear(3, 3), tmp_path / "m.safetensors", **{"evalloss.loss": "mse"})
    result = run("compare", ckpt, "--data", path)
    assert result.exit_code == 2
    assert result.stderr.strip().endswith("no evalloss.layers spec and no --model was given")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([["Linear", {"in_features": 10**9, "out_features": 10**9}]], "beyond the cap of 1048576"),
        (
            [["Linear", {"in_features": 2**20, "out_features": 2**20}]],
            "more than 1073741824 parameters",
        ),
        (
            [["Embedding", {"num_embeddings": 2**20, "embedding_dim": 2**11}]],
            "parameters (the cap)",
        ),
        (
            [["Conv2d", {"in_channels": 2**15, "out_channels": 2**15, "kernel_size": 3}]],
            "(the cap)",
        ),
        ([["LayerNorm", {"normalized_shape": [2**20] * 8}]], "(the cap)"),
        ([["Linear", {"in_features": 2**19, "out_features": 2**10}]] * 3, "layer 1 (Linear)"),
        ([["Linear", {"in_features": True, "out_features": 3}]], "expected an integer, got True"),
        ([["Linear", {"in_features": 3.0, "out_features": 3}]], "expected an integer, got 3.0"),
        ([["Linear", {"in_features": -3, "out_features": 3}]], "expected a positive integer"),
        ([["Linear", {"in_features": 3}]], "missing argument out_features"),
        ([["Linear", {"in_features": [3], "out_features": 3}]], "expected an integer"),
        ([["Linear", {"in_features": {"a": 1}, "out_features": 3}]], "expected an integer"),
        ([["Dropout", {"p": "0.5"}]], "expected a finite number"),
        ([["Dropout", {"p": 2}]], "cannot build it"),
        ([["GELU", {"approximate": "erf"}]], "expected one of none, tanh"),
        (
            [["Conv1d", {"in_channels": 3, "out_channels": 3, "kernel_size": [1, 1, 1, 1]}]],
            "1 to 3 sizes",
        ),
        (
            [["Conv1d", {"in_channels": 3, "out_channels": 4, "kernel_size": 1, "groups": 2}]],
            "cannot build it",
        ),
        ([["ReLU", {"inplace": True}]], "unknown argument 'inplace'; known: none"),
        ([["Linear", {"in_features": 3, "out_features": 3}, "extra"]], "expected [LayerName"),
        ([["Linear", [3, 3]]], "kwargs must be a JSON object"),
        ([[42, {}]], "42 is not in the allow-list"),
        ([], "expected a JSON list of 1 to 1000"),
        ({"Linear": {}}, "expected a JSON list"),
        ('[["Linear", {', "not valid JSON"),
        ("[" * 50_000 + "]" * 50_000, "not valid JSON"),
        ([["ReLU", {}]] * 1001, "1 to 1000"),
    ],
)
def test_bad_specs_are_refused_before_allocating(write_csv, tmp_path, spec, message: str) -> None:  # type: ignore[no-untyped-def]
    path = write_csv([[1, 2, 3, 0]], ["a", "b", "c", "y"])
    result = run("compare", _spec_file(tmp_path, spec), "--data", path)
    assert result.exit_code == 2, result.output
    assert len(result.stderr.splitlines()) == 1 and "Traceback" not in result.stderr
    assert "evalloss.layers: " in result.stderr and message in result.stderr


def test_spec_that_does_not_fit_the_tensors_is_refused_before_loading(write_csv, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = write_csv([[1, 2, 3, 0]], ["a", "b", "c", "y"])
    spec = [["Linear", {"in_features": 1000, "out_features": 1000}], ["ReLU", {}]]
    result = run("compare", _spec_file(tmp_path, spec), "--data", path)
    assert result.exit_code == 2
    assert "0.weight (checkpoint (3, 3), model (1000, 1000))" in result.stderr
    assert "does not fit its evalloss.layers spec; shape mismatch" in result.stderr


def test_spec_and_model_checkpoints_in_one_run(write_csv, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests import nets

    x, y = data_set(40)
    data = xy_csv(write_csv, x, y)
    torch.manual_seed(1)
    a, b = nets.mlp(), nets.mlp()
    with_spec = tmp_path / "spec.safetensors"
    evalloss.save(a, with_spec, loss="cross-entropy")
    bare = _with_metadata(b, tmp_path / "bare.safetensors")
    report = evalloss.compare([with_spec, bare], data=data, model=f"{ROOT}/tests/nets.py:mlp")
    sums = {m.name: m.loss_sum for m in report.models}
    assert sums["spec"] == pytest.approx(_oracle_sum(a, x, y), rel=1e-6)
    assert sums["bare"] == pytest.approx(_oracle_sum(b, x, y), rel=1e-6)
    assert report.loss == "cross-entropy"  # from the one file that names it


def test_an_unused_model_is_named_in_one_warning(write_csv, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from tests import nets

    x, y = data_set(20)
    data = xy_csv(write_csv, x, y)
    spec = tmp_path / "spec.safetensors"
    evalloss.save(nets.mlp(), spec, loss="cross-entropy")
    model = f"{ROOT}/tests/nets.py:mlp"
    with pytest.warns(evalloss.EvallossWarning, match=r"--model .*nets.py:mlp is not used"):
        evalloss.compare([spec], data=data, model=model)
    with pytest.warns(evalloss.EvallossWarning, match="every checkpoint carries its own"):
        evalloss.explain(spec, data=data, model=model, batch_sizes=[4])
    result = run("compare", spec, "--data", data, "--model", model)
    assert result.exit_code == 0
    assert result.stderr == (
        f"evalloss: warning: --model {model} is not used: every checkpoint carries its own "
        "architecture\n"
    )
    # used by one file of the run (the other carries a spec): no warning (filterwarnings=error)
    bare = _with_metadata(nets.mlp(), tmp_path / "bare.safetensors")
    evalloss.compare([spec, bare], data=data, model=model)


def test_loss_and_target_from_metadata_and_options_win(write_csv, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = write_csv([[1.0, 2.0, 0.5], [0.0, 1.0, -0.5]], ["a", "t", "b"])
    module = nn.Sequential(nn.Linear(2, 1))
    ckpt = tmp_path / "m.safetensors"
    evalloss.save(module, ckpt, loss="l1", target="t")
    report = evalloss.compare([ckpt], data=path)
    assert report.loss == "l1" and report.data.targets == ("t",)
    with torch.no_grad():
        out = module(torch.tensor([[1.0, 0.5], [0.0, -0.5]])).flatten().tolist()
    assert report.models[0].loss_sum == pytest.approx(
        math.fsum(abs(o - t) for o, t in zip(out, [2.0, 1.0], strict=True)), rel=1e-6
    )
    report = evalloss.compare([ckpt], data=path, loss="mse", target=["b"])
    assert report.loss == "mse" and report.data.targets == ("b",)


def test_disagreeing_metadata_names_both_files(write_csv, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = write_csv([[1, 2, 0.5]], ["a", "b", "y"])
    (tmp_path / "x").mkdir()
    first, second = tmp_path / "x" / "first.safetensors", tmp_path / "second.safetensors"
    evalloss.save(nn.Sequential(nn.Linear(2, 1)), first, loss="l1")
    evalloss.save(nn.Sequential(nn.Linear(2, 1)), second, loss="mse")
    result = run("compare", first, second, "--data", path)
    assert result.exit_code == 2
    assert f"{first} says 'l1', {second} says 'mse'" in result.stderr
    assert "evalloss.loss: checkpoints disagree" in result.stderr
    assert run("compare", first, second, "--data", path, "--loss", "l1").exit_code == 0


def test_unknown_loss_in_metadata_names_the_file(write_csv, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = write_csv([[1, 2, 0.5]], ["a", "b", "y"])
    ckpt = _with_metadata(
        nn.Sequential(nn.Linear(2, 1)), tmp_path / "m.safetensors", **{"evalloss.loss": "os.system"}
    )
    result = run("compare", ckpt, "--data", path, "--model", f"{ROOT}/tests/nets.py:linear")
    assert result.exit_code == 2
    assert f"{ckpt}: evalloss.loss: unknown loss 'os.system'" in result.stderr


def test_doc_lists_exactly_the_allow_list() -> None:
    doc = (ROOT / "docs" / "checkpoints.md").read_text()
    begin = doc.index("<!-- allow-list: begin")
    table = doc[doc.index("\n", begin) + 1 : doc.index("<!-- allow-list: end -->")]
    assert table == layers.allow_list_markdown()
    listed = {line.split("`")[1] for line in table.splitlines() if line.startswith("| `")}
    assert listed == set(layers.ALLOWED)


def test_cross_entropy_oracle_is_independent() -> None:
    """The oracle above agrees with torch's own criterion on a hand-checkable case."""
    module = nn.Sequential(nn.Identity())
    x, y = torch.tensor([[0.0, 0.0], [1.0, 0.0]]), torch.tensor([0, 1])
    want = F.cross_entropy(x.double(), y, reduction="sum").item()
    assert _oracle_sum(module, x, y) == pytest.approx(want, rel=1e-12)
    assert want == pytest.approx(math.log(2) + math.log(1 + math.e), rel=1e-12)


def test_no_file_content_can_reach_an_importer(write_csv, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """With importlib and torch.hub booby-trapped, hostile files still end in exit 2."""
    import importlib

    import evalloss.api
    import evalloss.models.checkpoint
    import evalloss.models.layers
    import evalloss.models.user  # noqa: F401 - loaded before the traps are set

    calls: list[object] = []

    def trap(*args: object, **kwargs: object) -> None:
        calls.append(args)
        raise AssertionError(f"called with {args!r}")

    monkeypatch.setattr(importlib, "import_module", trap)
    monkeypatch.setattr(importlib.util, "spec_from_file_location", trap)
    monkeypatch.setattr(torch.hub, "load", trap)
    path = write_csv([[1, 2, 3, 0]], ["a", "b", "c", "y"])
    for i, metadata in enumerate(
        [
            {"evalloss.layers": json.dumps([["torch.hub.load", {}]])},
            {"evalloss.layers": json.dumps([["tests.boom:Boom", {}]])},
            {"evalloss.model": "tests.boom:Boom"},
            {"evalloss.model": "os:system", "evalloss.target": "__import__('os')"},
        ]
    ):
        ckpt = _with_metadata(
            nn.Linear(3, 3), tmp_path / f"h{i}.safetensors", **metadata, **{"evalloss.loss": "mse"}
        )
        result = run("compare", ckpt, "--data", path)
        assert result.exit_code == 2, result.stderr
        assert "Traceback" not in result.stderr
    assert calls == []
    result = run(
        "compare", tmp_path / "h2.safetensors", "--data", path, "--model", "tests.boom:Boom"
    )
    # the trap works: a --model the user types is imported (to measure it, then to build it)
    assert calls and set(calls) == {("tests.boom",)}


@pytest.mark.parametrize(
    "module", ["models/checkpoint.py", "models/layers.py", "models/allowlist.py"]
)
def test_the_trust_boundary_modules_hold_no_importer(module: str) -> None:
    """No importer, evaluator, hub or unpickler in the code that reads files (docstrings aside)."""
    import ast

    tree = ast.parse((ROOT / "evalloss" / module).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            assert not {"importlib", "pickle", "builtins"} & {n.split(".")[0] for n in names}
        elif isinstance(node, ast.Name):
            assert node.id not in ("eval", "exec", "compile", "__import__"), node.id
        elif isinstance(node, ast.Attribute):
            assert node.attr not in ("hub", "import_module", "load"), node.attr
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "getattr":
            assert getattr(node.args[0], "id", None) not in ("nn", "torch", "torch.nn")


def test_embedding_spec_takes_whole_number_features_as_indices(write_csv, tmp_path) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    module = nn.Sequential(nn.Embedding(6, 4), nn.Flatten(), nn.Linear(8, 3))
    ckpt = tmp_path / "emb.safetensors"
    evalloss.save(module, ckpt, loss="cross-entropy", target="y")
    rows = [[0, 5, 1], [3, 3, 2], [1, 0, 0], [5, 2, 1]]
    path = write_csv(rows, ["a", "b", "y"])
    x = torch.tensor([r[:2] for r in rows])
    y = torch.tensor([r[2] for r in rows])
    report = evalloss.compare([ckpt], data=path)
    assert report.models[0].loss_sum == pytest.approx(_oracle_sum(module, x, y), rel=1e-6)
    fractions = write_csv([[0.5, 1, 0]], ["a", "b", "y"], name="f.csv")
    result = run("compare", ckpt, "--data", fractions)
    assert result.exit_code == 2 and "Embedding takes whole-number features" in result.stderr


def test_save_is_repeatable_byte_for_byte(tmp_path: Path) -> None:
    from safetensors import safe_open

    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 2), nn.Tanh())
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    for path in (a, b):
        evalloss.save(module, path, loss="mse", target=["größe", "t2"])
    assert a.read_bytes() == b.read_bytes()
    (length,) = struct.unpack("<Q", a.read_bytes()[:8])
    assert length % 8 == 0
    metadata = json.loads(a.read_bytes()[8 : 8 + length])["__metadata__"]
    assert list(metadata) == sorted(metadata)
    with safe_open(str(a), "pt") as f:
        assert f.metadata()["evalloss.target"] == "größe,t2"
        assert torch.equal(f.get_tensor("0.weight"), module[0].weight.detach())
