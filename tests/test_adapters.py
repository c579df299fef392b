"""PEFT adapter folders (issue 32): the figure equals peft's own ``PeftModel`` and the merged
model, one document at a time in float64; K adapters share one copy of the base in one pass;
the base in the same run or as the baseline; every refusal one exit-2 line, nothing unpickled;
provenance and the cache cover adapter and base."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest

import evalloss
from evalloss.options import Options
from tests import hf  # first: skips without the hf extra
from tests import peft_folders as pf
from tests.conftest import run

peft = pf.peft
DOCS = hf.corpus(24, seed=3)


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A GPT-2 and a Llama base with their tokenizer, LoRA, IA3 and LoHa adapters, text data."""
    root = tmp_path_factory.mktemp("adapters")
    base = hf.gpt2(root / "base", positions=512)
    hf.tokenizer(base)
    llama = hf.llama(root / "llama", positions=512)
    hf.tokenizer(llama)
    return {
        "root": root, "base": base, "llama": llama,
        "a": pf.lora(base, root / "a", seed=1),
        "b": pf.lora(base, root / "b", seed=2, r=2, target_modules=["c_attn", "c_proj"]),
        "c": pf.lora(base, root / "c", seed=3, r=8, target_modules=["c_fc"]),
        "ia3": pf.save(base, root / "ia3", peft.IA3Config(
            target_modules=["c_attn", "mlp.c_proj"], feedforward_modules=["mlp.c_proj"]), 4),
        "loha": pf.save(llama, root / "loha", peft.LoHaConfig(r=2, target_modules=["q_proj"]), 5),
        "llama-lora": pf.lora(llama, root / "llama-lora", seed=6,
                              target_modules=["q_proj", "v_proj", "down_proj"]),
        "data": hf.jsonl(root / "valid.jsonl", [{"text": d} for d in DOCS]),
    }  # fmt: skip


def _ids(base: Path) -> list[list[int]]:
    return pf.ids(base / "tokenizer.json", DOCS)


def _compare(paths: list[Path], farm: dict[str, Path], **options: Any) -> evalloss.Report:
    return evalloss.compare([str(p) for p in paths], data=str(farm["data"]),
                            precision="float64", **options)  # fmt: skip


def _by_name(report: evalloss.Report) -> dict[str, Any]:
    return {m.name: m for m in report.models}


@pytest.mark.parametrize(("adapter", "base"), [("a", "base"), ("llama-lora", "llama")])
def test_the_figure_is_peft_own_and_the_merged_models(farm: dict[str, Path], adapter: str,
                                                      base: str) -> None:  # fmt: skip
    report = _compare([farm[adapter]], farm)
    got = report.models[0].loss_sum
    docs = _ids(farm[base])
    own = pf.loss_sum(pf.peft_model(farm[base], farm[adapter]), docs)
    merged = pf.loss_sum(pf.peft_model(farm[base], farm[adapter], merged=True), docs)
    plain = pf.loss_sum(pf.peft_model(farm[base], None), docs)
    assert got == pytest.approx(own, rel=1e-9)
    assert got == pytest.approx(merged, rel=1e-9)
    assert abs(got - plain) > 1e-3 * plain  # the adapter changes the figure: it was applied
    assert report.models[0].tokens == sum(max(len(d) - 1, 0) for d in docs)


def test_other_adapter_types_and_a_mix_over_one_base(farm: dict[str, Path]) -> None:
    """IA3 and LoHa as peft loads them; with LoRA over the same bases in one run (one type on
    a model at a time: a group each), the figures are each one's alone."""
    names = {"a": "base", "ia3": "base", "llama-lora": "llama", "loha": "llama"}
    mixed = _by_name(_compare([farm[n] for n in names], farm))
    for name, base in names.items():
        own = pf.loss_sum(pf.peft_model(farm[base], farm[name]), _ids(farm[base]))
        assert mixed[name].loss_sum == pytest.approx(own, rel=1e-9), name
        alone = _compare([farm[name]], farm).models[0]
        assert mixed[name].loss_sum == alone.loss_sum, name


def test_k_adapters_and_their_base_share_one_copy_in_one_pass(
    farm: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from evalloss.models import hf as hf_builder
    from evalloss.run.plan import Mode, resolve
    from evalloss.run.prepared import prepare

    loads: list[str] = []
    real = hf_builder.load
    monkeypatch.setattr(hf_builder, "load", lambda c, w: (loads.append(c.path), real(c, w))[1])
    paths = [farm["base"], farm["a"], farm["b"], farm["c"]]
    report = _by_name(_compare(paths, farm))
    assert loads == [str(farm["base"])]  # the base's weights read once
    docs = _ids(farm["base"])
    for name in ("a", "b", "c"):
        own = pf.loss_sum(pf.peft_model(farm["base"], farm[name]), docs)
        assert report[name].loss_sum == pytest.approx(own, rel=1e-9), name
    plain = pf.loss_sum(pf.peft_model(farm["base"], None), docs)
    assert report["base"].loss_sum == pytest.approx(plain, rel=1e-9)
    assert report["base"].loss_sum == _compare([farm["base"]], farm).models[0].loss_sum
    plan = resolve([str(p) for p in paths], Options.of(data=str(farm["data"])))
    assert plan.mode is Mode.ONE_PASS
    built = prepare(plan).built
    embeddings = {next(m for m in a.module.modules() if isinstance(m, hf.torch.nn.Embedding)
                       ).weight.data_ptr() for a in built}  # fmt: skip
    assert len(embeddings) == 1  # one tensor of base weights behind the four models


def test_the_base_as_baseline_is_one_command(farm: dict[str, Path], tmp_path: Path) -> None:
    result = run("compare", farm["a"], farm["b"], "--baseline", farm["base"], "--data",
                 farm["data"], "--format", "json", "--precision", "float64",
                 "--max-loss", "1e9")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    models = {m["name"]: m for m in report["models"]}
    assert models["base"]["is_baseline"] and models["base"]["vs_baseline"] is None
    alone = _compare([farm["base"]], farm).models[0].loss_sum
    assert models["base"]["loss_sum"] == alone
    for name in ("a", "b"):  # per token: the paired difference of losses per token
        delta = models[name]["vs_baseline"]["delta"]
        expected = models[name]["loss_per_token"] - models["base"]["loss_per_token"]
        assert delta == pytest.approx(expected, rel=1e-9)


def test_base_from_the_option_or_the_config(farm: dict[str, Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    folder = _copy(farm["a"], tmp_path / "moved")
    _edit(folder / "adapter_config.json", base_model_name_or_path="base")  # relative: the cwd
    monkeypatch.chdir(farm["root"])
    expected = _compare([farm["a"]], farm).models[0].loss_sum
    assert _compare([folder], farm).models[0].loss_sum == expected
    _edit(folder / "adapter_config.json", base_model_name_or_path="openai-community/gpt2")
    result = run("compare", folder, "--data", farm["data"])
    _one_line(result, f"{folder / 'adapter_config.json'}: base_model_name_or_path",
              "'openai-community/gpt2' is not a local folder", "--base")
    assert _compare([folder], farm, base=str(farm["base"])).models[0].loss_sum == expected
    _edit(folder / "adapter_config.json", base_model_name_or_path=None)
    _one_line(run("compare", folder, "--data", farm["data"]), str(folder), "give --base")
    # --base with no adapter folder in the run: refused, not ignored
    result = run("compare", farm["base"], "--base", farm["base"], "--data", farm["data"])
    _one_line(result, "--base", "no checkpoint here is an adapter folder")
    # --base that is no folder
    result = run("compare", folder, "--base", tmp_path / "nowhere", "--data", farm["data"])
    _one_line(result, str(tmp_path / "nowhere"), "is not a folder")


def _copy(folder: Path, to: Path) -> Path:
    shutil.copytree(folder, to)
    return to


def _edit(path: Path, **changes: object) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def _one_line(result: Any, start: str, *parts: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert result.stderr.startswith(f"evalloss: error: {start}"), result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == "", result.stderr
    for part in parts:
        assert part in result.stderr, result.stderr


class _Marker:
    """Unpickling this would run code: it leaves a marker file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.path,))


def test_pickled_weights_are_refused_unopened(farm: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(farm["a"], tmp_path / "pickled")
    (folder / "adapter_model.safetensors").unlink()
    marker = tmp_path / "ran"
    (folder / "adapter_model.bin").write_bytes(pickle.dumps(_Marker(marker)))
    _one_line(run("compare", folder, "--data", farm["data"]), str(folder),
              "only in pickle form (adapter_model.bin)")  # fmt: skip
    assert not marker.exists()


def test_a_trainer_checkpoint_of_a_peft_run(farm: dict[str, Path], tmp_path: Path) -> None:
    """checkpoint-N/ of a PEFT run: the adapter is scored; the pickles beside it never open."""
    folder = _copy(farm["a"], tmp_path / "out" / "checkpoint-5")
    marker = tmp_path / "ran"
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin"):
        (folder / name).write_bytes(pickle.dumps(_Marker(marker)))
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": 5, "log_history": []}))
    got = _compare([folder], farm).models[0]
    assert got.loss_sum == _compare([farm["a"]], farm).models[0].loss_sum
    assert got.name == "checkpoint-5" and not marker.exists()


def _renamed(folder: Path, old: str, new: str) -> None:
    from safetensors.torch import load_file, save_file

    path = folder / "adapter_model.safetensors"
    tensors = load_file(path)
    tensors[new] = tensors.pop(old)
    save_file(tensors, path)


A_KEY = "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight"


def test_tensors_that_do_not_fit_are_named(farm: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(farm["a"], tmp_path / "stray")
    stray = A_KEY.replace("h.0", "h.7")
    _renamed(folder, A_KEY, stray)
    weights = folder / "adapter_model.safetensors"
    _one_line(run("compare", folder, "--data", farm["data"]), str(weights),
              f"tensor '{stray}'", "matches no adapted module of the base")  # fmt: skip
    # an adapter made for a wider base: its tensors' shapes are not this base's
    wide = hf.gpt2(tmp_path / "wide", positions=512)
    config = json.loads((wide / "config.json").read_text())
    shutil.rmtree(wide)
    hf._save(hf.transformers.GPT2LMHeadModel, hf.transformers.GPT2Config(
        **{**config, "n_embd": 32}), wide, 0)  # fmt: skip
    other = pf.lora(wide, tmp_path / "for-wide", seed=1)
    result = run("compare", other, "--base", farm["base"], "--data", farm["data"])
    _one_line(result, str(other / "adapter_model.safetensors"), "has shape",
              f"its module in the base {farm['base']} takes")  # fmt: skip
    # a tensor the config asks for, missing from the file
    folder = _copy(farm["a"], tmp_path / "short")
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "adapter_model.safetensors")
    del tensors[A_KEY]
    save_file(tensors, folder / "adapter_model.safetensors")
    _one_line(run("compare", folder, "--data", farm["data"]), str(weights).replace(
        "stray", "short"), f"has no tensor '{A_KEY}'")  # fmt: skip


@pytest.mark.parametrize(
    ("changes", "key", "part"),
    [
        ({"peft_type": "NOT_A_TYPE"}, "peft_type", "is not one the installed peft knows"),
        ({"peft_type": "PROMPT_TUNING"}, "peft_type", "prompt learning"),
        ({"auto_mapping": {"base_model_class": "Evil", "parent_library": "evil.models"}},
         "auto_mapping", "outside transformers"),
        ({"auto_mapping": "evil.models.Evil"}, "auto_mapping", "never imports"),
        ({"megatron_config": {"x": 1}}, "megatron_config", "Megatron"),
        ({"extra": [{"auto_map": {"AutoModel": "evil.Evil"}}]}, "extra[0].auto_map",
         "remote code"),
        ({"bias": "all"}, "bias", "base model's own biases"),
        ({"init_lora_weights": "pissa"}, "init_lora_weights", "rewrites the base model's"),
        ({"r": "four"}, None, "peft cannot attach it to its base"),
        ({"target_modules": ["no_such_module"]}, None, "peft cannot attach it to its base"),
    ],
)  # fmt: skip
def test_configs_that_name_code_or_unknown_types_are_refused(
    farm: dict[str, Path], tmp_path: Path, changes: dict[str, Any], key: str | None, part: str
) -> None:
    folder = _copy(farm["a"], tmp_path / "edited")
    _edit(folder / "adapter_config.json", **changes)
    where = f"{folder / 'adapter_config.json'}: {key}" if key else str(folder)
    _one_line(run("compare", folder, "--data", farm["data"]), where, part)


def test_the_peft_style_auto_mapping_is_read_never_imported(farm: dict[str, Path]) -> None:
    """peft writes ``auto_mapping`` for every adapter saved without a task type: a transformers
    class it names is allowed (evalloss builds the base from its config either way)."""
    config = json.loads((farm["a"] / "adapter_config.json").read_text())
    assert config["auto_mapping"]["parent_library"].startswith("transformers.")


def test_without_peft_one_line_names_the_extra(farm: dict[str, Path],
                                               monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    import sys

    for name in [m for m in sys.modules if m == "peft" or m.startswith("peft.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "peft", None)
    _one_line(run("compare", farm["a"], "--data", farm["data"]),
              str(farm["a"] / "adapter_config.json"), "pip install 'evalloss[peft]'")  # fmt: skip


def test_the_adapters_own_tokenizer_is_used(farm: dict[str, Path], tmp_path: Path) -> None:
    from evalloss.run.plan import resolve

    folder = _copy(farm["a"], tmp_path / "own-tok")
    hf.tokenizer(folder, vocab=290)  # merges past the byte alphabet: another tokenizer
    plan = resolve([str(folder), str(farm["a"])], Options.of(data=str(farm["data"])))
    own, theirs = folder / "tokenizer.json", farm["base"] / "tokenizer.json"
    assert plan.tokenizers == (str(own), str(theirs))
    got = _compare([folder], farm).models[0]
    docs = pf.ids(folder / "tokenizer.json", DOCS)
    own = pf.loss_sum(pf.peft_model(farm["base"], folder), docs)
    assert got.loss_sum == pytest.approx(own, rel=1e-9)


def test_provenance_hashes_adapter_and_base(farm: dict[str, Path]) -> None:
    from evalloss.io.hashing import sha256_of

    sha = _compare([farm["a"]], farm).provenance.sha256
    assert sha is not None
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        assert sha[str(farm["a"] / f)] == sha256_of(str(farm["a"] / f))
    for f in ("config.json", "model.safetensors", "tokenizer.json"):
        assert sha[str(farm["base"] / f)] == sha256_of(str(farm["base"] / f))
    assert str(farm["a"]) in sha and str(farm["base"]) in sha  # each folder's manifest


def test_the_cache_key_follows_adapter_and_base(farm: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(farm["a"], tmp_path / "cached")
    cache = tmp_path / "cache"
    first = _compare([folder], farm, cache=str(cache)).models[0]
    again = _compare([folder], farm, cache=str(cache)).models[0]
    assert again.cached and again.loss_sum == first.loss_sum
    pf.lora(farm["base"], folder, seed=9)  # the adapter retrained in place
    changed = _compare([folder], farm, cache=str(cache)).models[0]
    assert not changed.cached and changed.loss_sum != first.loss_sum
    own = pf.loss_sum(pf.peft_model(farm["base"], folder), _ids(farm["base"]))
    assert changed.loss_sum == pytest.approx(own, rel=1e-9)
    base = _copy(farm["base"], tmp_path / "base2")
    again = _compare([folder], farm, cache=str(cache), base=str(base)).models[0]
    assert again.cached  # a copy of the base: the same bytes, the same model
    hf.gpt2(base, positions=512, seed=5)  # the base retrained in place
    moved = _compare([folder], farm, cache=str(cache), base=str(base)).models[0]
    assert not moved.cached and moved.loss_sum != again.loss_sum


def test_explain_scores_an_adapter_as_compare_does(farm: dict[str, Path]) -> None:
    result = run("explain", farm["a"], "--data", farm["data"], "--precision", "float64",
                 "--format", "json", "--batch-size", "4")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["loss_sum"] == _compare([farm["a"]], farm).models[0].loss_sum
