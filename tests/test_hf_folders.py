"""Hugging Face model folders: figures against the model's own loss, and the trust boundary
(each refusal one exit-2 line; nothing from the folder imported or run)."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import sys
from pathlib import Path

import pytest

import evalloss
from tests import hf  # first: skips without the hf extra
from tests.conftest import run


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("folders")
    rng = random.Random(0)
    docs = [[rng.randrange(300) for _ in range(rng.choice([0, 1, 2, 5, 20, 64]))]
            for _ in range(24)]  # fmt: skip
    return {
        "gpt2": hf.gpt2(root / "gpt2"),
        "llama": hf.llama(root / "llama", seed=1),
        "data": hf.jsonl(root / "docs.jsonl", [{"input_ids": d} for d in docs]),
    }


def _docs(path: Path) -> list[list[int]]:
    return [json.loads(line)["input_ids"] for line in path.read_text().splitlines()]


def test_folders_match_the_models_own_loss(folders: dict[str, Path]) -> None:
    """No --loss, no --context: the folder's architecture says causal-lm, its config the
    context; every figure equals the model's own loss x (tokens - 1), document by document."""
    report = evalloss.compare([folders["gpt2"], folders["llama"]], data=folders["data"])
    assert report.loss == "causal-lm"
    for model in report.models:
        expected, tokens = hf.own_loss(Path(model.path), _docs(folders["data"]))
        assert model.tokens == tokens
        assert model.loss_sum == pytest.approx(expected, rel=1e-6)
        assert model.name == Path(model.path).name
    hashes = report.provenance.sha256 or {}
    for name in ("gpt2", "llama"):  # every file the figure depends on is hashed
        names = ("config.json", "model.safetensors")
        assert {str(folders[name] / f) for f in names} <= set(hashes)
        lines = "".join(  # and the folder as `sha256sum config.json model.safetensors | sha256sum`
            f"{hashlib.sha256((folders[name] / f).read_bytes()).hexdigest()}  {f}\n"
            for f in names
        )
        assert hashes[str(folders[name])] == hashlib.sha256(lines.encode()).hexdigest()


def test_long_documents_are_windowed_at_the_declared_context(tmp_path: Path) -> None:
    folder = hf.gpt2(tmp_path / "g", positions=16)
    rng = random.Random(3)
    docs = [[rng.randrange(300) for _ in range(n)] for n in (40, 16, 17, 3)]
    data = hf.jsonl(tmp_path / "d.jsonl", [{"input_ids": d} for d in docs])
    windowed = evalloss.compare([folder], data=data).models[0]
    explicit = evalloss.compare([folder], data=data, context=16).models[0]
    assert windowed.loss_sum == explicit.loss_sum and windowed.tokens == 39 + 15 + 16 + 2
    with pytest.raises(evalloss.OptionError, match="16 positions"):  # beyond them it cannot run
        evalloss.compare([folder], data=data, context=32)


def _copy(folders: dict[str, Path], tmp_path: Path, name: str = "gpt2") -> Path:
    target = tmp_path / "model"
    shutil.copytree(folders[name], target)
    return target


def _config(folder: Path, **changes: object) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def _refused(folder: Path, data: Path, *message: str, where: Path | None = None) -> None:
    result = run("compare", folder, "--data", data)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    line = result.stderr
    assert line.startswith(f"evalloss: error: {where or folder}") and line.count("\n") == 1, line
    assert result.stdout == "" and "Traceback" not in line
    for part in message:
        assert part in line, line


MARKER_CODE = "import pathlib\npathlib.Path({marker!r}).write_text('ran')\n"


def _hostile(folder: Path, tmp_path: Path) -> Path:
    """Code in the folder that would leave a marker file if anything imported it."""
    marker = tmp_path / "marker"
    for name in ("modeling_evil.py", "configuration_evil.py", "tokenization_evil.py", "__init__.py"):
        (folder / name).write_text(MARKER_CODE.format(marker=str(marker)))
    return marker


def test_remote_code_is_refused_and_never_run(folders: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(folders, tmp_path)
    marker = _hostile(folder, tmp_path)
    _config(folder, auto_map={"AutoModelForCausalLM": "modeling_evil.Evil"})
    _refused(folder, folders["data"], "auto_map", "remote code", where=folder / "config.json")
    _config(folder, auto_map=None)  # the key alone is enough
    _refused(folder, folders["data"], "auto_map")
    assert not marker.exists()


def test_unknown_model_type_is_refused(folders: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(folders, tmp_path)
    marker = _hostile(folder, tmp_path)
    _config(folder, model_type="evil\x1b[31m")
    _refused(folder, folders["data"], "model type", "not one transformers knows", "\\x1b")
    assert not marker.exists()


def test_code_beside_a_known_model_is_never_imported(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    folder = _copy(folders, tmp_path)
    marker = _hostile(folder, tmp_path)
    result = run("compare", folder, "--data", folders["data"])
    assert result.exit_code == 0, result.stderr
    assert not marker.exists()


@pytest.mark.parametrize("pickled", ["pytorch_model.bin", "model.pt", "last.ckpt"])
def test_pickle_only_weights_are_refused(
    folders: dict[str, Path], tmp_path: Path, pickled: str
) -> None:
    folder = _copy(folders, tmp_path)
    (folder / "model.safetensors").rename(folder / pickled)
    _refused(folder, folders["data"], "pickle", pickled)


def _sharded(folder: Path) -> dict[str, str]:
    """Split model.safetensors into two shards with an index, as save_pretrained would."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(folder / "model.safetensors")
    names = sorted(tensors)
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate((names[:half], names[half:])):
        shard = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, folder / shard, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    (folder / "model.safetensors").unlink()
    _index(folder, weight_map)
    return weight_map


def _index(folder: Path, weight_map: dict[str, str]) -> None:
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )


def test_shards_give_the_same_figure(folders: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(folders, tmp_path, "llama")
    _sharded(folder)
    one = evalloss.compare([folders["llama"]], data=folders["data"]).models[0]
    two = evalloss.compare([folder], data=folders["data"])
    assert two.models[0].loss_sum == one.loss_sum
    assert sum("of-00002" in f for f in two.provenance.sha256 or {}) == 2


def test_bad_shards_are_refused(folders: dict[str, Path], tmp_path: Path) -> None:
    folder = _copy(folders, tmp_path, "llama")
    weight_map = _sharded(folder)
    index = folder / "model.safetensors.index.json"
    first = sorted(weight_map)[0]
    _index(folder, {**weight_map, first: "model-00003-of-00002.safetensors"})
    _refused(folder, folders["data"], "missing", where=index)
    _index(folder, {**weight_map, first: "../elsewhere.safetensors"})
    _refused(folder, folders["data"], "not a .safetensors file in the folder", where=index)
    _index(folder, {k: v for k, v in weight_map.items() if k != first})
    _refused(folder, folders["data"], "not in the index", where=index)
    _index(folder, {**weight_map, "extra.weight": sorted(weight_map.values())[0]})
    _refused(folder, folders["data"], "in no shard", where=index)
    _index(folder, weight_map)
    from safetensors.torch import load_file, save_file  # one tensor in both shards

    a, b = sorted(set(weight_map.values()))
    extra = load_file(folder / b)
    extra[first] = load_file(folder / a)[first]
    save_file(extra, folder / b)
    _refused(folder, folders["data"], "in two shards")


def test_missing_weights_are_refused_not_initialised(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    """transformers would fill a missing head with random weights; evalloss refuses."""
    from safetensors.torch import load_file, save_file

    folder = _copy(folders, tmp_path, "llama")
    tensors = load_file(folder / "model.safetensors")
    del tensors["lm_head.weight"]
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    _refused(folder, folders["data"], "missing keys", "lm_head.weight")


def test_tokenizer_code_and_quantization_are_refused(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    folder = _copy(folders, tmp_path)
    (folder / "tokenizer_config.json").write_text(json.dumps({"auto_map": {"AutoTokenizer": "x"}}))
    _refused(folder, folders["data"], "auto_map", where=folder / "tokenizer_config.json")
    (folder / "tokenizer_config.json").unlink()
    _config(folder, quantization_config={"quant_method": "bitsandbytes"})
    _refused(folder, folders["data"], "quantized")


def test_not_a_folder_of_a_model(folders: dict[str, Path], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    _refused(tmp_path / "empty", folders["data"], "without config.json")
    folder = _copy(folders, tmp_path)
    (folder / "config.json").write_text("[1, 2")
    _refused(folder, folders["data"], "JSON", where=folder / "config.json")


def test_other_losses_and_heads(folders: dict[str, Path]) -> None:
    result = run("compare", folders["gpt2"], "--data", folders["data"], "--loss", "mse")
    assert result.exit_code == 2 and "scored with causal-lm, seq2seq-lm or cross-entropy, not 'mse'" in result.stderr


def test_missing_extra_is_one_line(
    folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "transformers.models.auto.configuration_auto", None)
    _refused(folders["gpt2"], folders["data"], "pip install 'evalloss[hf]'")


def test_token_classification_matches_the_models_own_logits(tmp_path: Path) -> None:
    """A token classifier over documents of token ids with a label per token (-100 not
    scored): each document's mean over its counted tokens, from the model's own logits one
    document at a time, float64; loss_per_element weighs every counted token alike."""
    import math

    import torch
    import transformers

    config = transformers.GPT2Config(vocab_size=300, n_positions=64, n_embd=16, n_layer=1,
                                     n_head=2, num_labels=4, pad_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path / "tagger"
    transformers.GPT2ForTokenClassification(config).save_pretrained(folder)
    rng = random.Random(2)
    docs = [[rng.randrange(1, 300) for _ in range(rng.randrange(1, 30))] for _ in range(25)]
    tags = [[rng.choice([0, 1, 2, 3, -100]) for _ in d] for d in docs]
    for t in tags:
        t[0] = 1  # at least one counted token per document
    data = hf.jsonl(tmp_path / "d.jsonl",
                    [{"input_ids": d, "tags": t} for d, t in zip(docs, tags, strict=True)])  # fmt: skip
    report = evalloss.compare([folder], data=data, target="tags", precision="float64")
    model = transformers.AutoModelForTokenClassification.from_pretrained(folder,
                                                                         dtype=torch.float64)  # fmt: skip
    means, terms, counted = [], [], 0
    with torch.no_grad():
        for ids, labels in zip(docs, tags, strict=True):
            logits = model(torch.tensor([ids])).logits[0]
            doc = [float(torch.logsumexp(logits[p], 0) - logits[p, y])
                   for p, y in enumerate(labels) if y != -100]  # fmt: skip
            means.append(math.fsum(doc) / len(doc))
            terms += doc
            counted += len(doc)
    result = report.models[0]
    assert report.loss == "cross-entropy" and result.items == len(docs)
    assert result.loss_per_item == pytest.approx(math.fsum(means) / len(docs), rel=1e-9)
    assert result.loss_per_element == pytest.approx(math.fsum(terms) / counted, rel=1e-9)
