"""--cache: a cached model's report is the evaluated one, bit for bit, for every loss and
format; each key component changed alone is a miss; damaged entries are warned about and
rewritten; two processes writing one entry never leave half of it; eviction, list, clear."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

import evalloss
from evalloss.cache import disk, reuse
from evalloss.render import FORMATS, render
from evalloss.report import Report
from evalloss.run import onepass
from evalloss.run.plan import resolve
from tests import lm
from tests.conftest import data_set
from tests.conftest import run as cli

PER_ITEM_LOSSES = ("cross-entropy", "nll", "bce-logits", "bce", "mse", "l1", "smooth-l1", "huber")


def _models(loss: str) -> list[nn.Module]:
    heads = {"cross-entropy": (3, []), "nll": (3, [nn.LogSoftmax(dim=1)]),
             "bce": (2, [nn.Sigmoid()])}  # fmt: skip
    outputs, tail = heads.get(loss, (2, []))
    found = []
    for seed in range(3):
        torch.manual_seed(seed)
        found.append(nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, outputs), *tail))
    return found


def _setup(tmp_path: Path, loss: str, rows: int = 300) -> tuple[list[Path], Path]:
    x, y = data_set(rows, seed=1)
    if loss in ("cross-entropy", "nll"):
        targets = [[int(v)] for v in y.tolist()]
    elif loss in ("bce", "bce-logits"):
        targets = [[int(v) % 2, int(v > 0)] for v in y.tolist()]
    else:
        targets = [[round(float(a) * 2, 4), float(b)] for a, b in zip(x[:, 0], y, strict=True)]
    width = len(targets[0])
    header = ["f0", "f1", "f2", *(f"t{i}" for i in range(width))]
    lines = [",".join(header)] + [",".join(str(v) for v in [*r, *t])
                                  for r, t in zip(x.tolist(), targets, strict=True)]  # fmt: skip
    data = tmp_path / "data.csv"
    data.write_text("\n".join(lines) + "\n")
    paths = []
    for i, model in enumerate(_models(loss)):
        path = tmp_path / f"m{i}.safetensors"
        evalloss.save(model, path, loss=loss, target=header[3:])
        paths.append(path)
    return paths, data


def _figures(report: Report) -> Report:
    """The report without what differs between any two runs: seconds, provenance."""
    models = tuple(replace(m, seconds=0.0, cached=False) for m in report.models)
    return replace(report, models=models, provenance=None)


@pytest.mark.parametrize("loss", PER_ITEM_LOSSES)
def test_cached_report_is_the_evaluated_one_for_every_loss_and_format(
    tmp_path: Path, loss: str
) -> None:
    paths, data = _setup(tmp_path, loss)
    store = tmp_path / "cache"
    options = {"data": data, "baseline": paths[2], "batch_size": 64}
    plain = evalloss.compare(paths[:2], per_item=tmp_path / "plain.parquet", **options)
    first = evalloss.compare(paths[:2], cache=store, **options)
    again = evalloss.compare(paths[:2], cache=store, per_item=tmp_path / "hit.parquet", **options)
    assert not any(m.cached for m in first.models)
    assert all(m.cached for m in again.models)
    assert _figures(plain) == _figures(first) == _figures(again)
    for fmt in FORMATS:
        assert render(_figures(again), fmt) == render(_figures(plain), fmt), fmt
    assert pq.read_table(tmp_path / "hit.parquet").equals(pq.read_table(tmp_path / "plain.parquet"))
    assert len(disk.entries(store)) == 3


def _documents(tmp_path: Path) -> Path:
    """40 documents of 0 to 29 token ids, as JSON Lines."""
    data = tmp_path / "docs.jsonl"
    rng = torch.Generator().manual_seed(0)
    docs = [torch.randint(0, lm.VOCAB, (int(n),), generator=rng).tolist()
            for n in torch.randint(0, 30, (40,), generator=rng)]  # fmt: skip
    data.write_text("".join(json.dumps({"input_ids": d}) + "\n" for d in docs))
    return data


def test_token_loss_cached_with_paired_ratios(tmp_path: Path) -> None:
    data = _documents(tmp_path)
    paths = []
    for seed in range(2):
        torch.manual_seed(seed)
        paths.append(tmp_path / f"lm{seed}.safetensors")
        evalloss.save(lm.Causal(), paths[-1], loss="causal-lm")
    options = {"data": data, "baseline": paths[0], "model": f"{lm.__file__}:Causal",
               "context": 8, "stride": 4}  # fmt: skip
    plain = evalloss.compare(paths, **options)
    evalloss.compare(paths, cache=tmp_path / "c", **options)
    hit = evalloss.compare(paths, cache=tmp_path / "c", **options)
    assert all(m.cached for m in hit.models)
    assert _figures(hit) == _figures(plain)
    assert all(m.tokens for m in hit.models) and any(m.vs_baseline for m in hit.models)
    # in file order (--per-item) the documents are batched otherwise: another entry
    ordered = evalloss.compare(paths, cache=tmp_path / "c", per_item=tmp_path / "i.csv", **options)
    assert not any(m.cached for m in ordered.models)
    for x, y in zip(ordered.models, plain.models, strict=True):
        assert x.loss_sum == pytest.approx(y.loss_sum, rel=1e-6)


def test_one_at_a_time_stores_and_reads_entries(tmp_path: Path) -> None:
    paths, data = _setup(tmp_path, "cross-entropy")
    store = tmp_path / "cache"
    plain = evalloss.compare(paths, data=data, baseline=paths[0])
    evalloss.compare([paths[0]], data=data, cache=store, one_at_a_time=True)
    some = evalloss.compare(paths, data=data, baseline=paths[0], cache=store, one_at_a_time=True)
    assert [m.cached for m in some.models if m.is_baseline] == [True]
    assert sum(m.cached for m in some.models) == 1
    again = evalloss.compare(paths, data=data, baseline=paths[0], cache=store)  # one pass: hits
    assert all(m.cached for m in again.models)
    assert _figures(plain) == _figures(some) == _figures(again)


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many models each pass evaluates."""
    seen: list[int] = []
    one_pass = onepass.one_pass

    def counted(source, dtype, device, accumulators, *rest):  # type: ignore[no-untyped-def]
        seen.append(len(accumulators))
        return one_pass(source, dtype, device, accumulators, *rest)

    monkeypatch.setattr(onepass, "one_pass", counted)
    return seen


def test_only_the_uncached_models_run_in_one_pass_and_all_cached_reads_no_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, data = _setup(tmp_path, "cross-entropy")
    store = tmp_path / "cache"
    evalloss.compare([paths[2]], data=data, cache=store)  # the baseline cached
    seen = _counting(monkeypatch)
    report = evalloss.compare(paths[:2], data=data, baseline=paths[2], cache=store)
    assert seen == [2] and [m.cached for m in report.models if m.is_baseline] == [True]
    from evalloss.sources.tabular import Tabular

    def no_rows(*args: object, **kwargs: object) -> None:
        raise AssertionError("a data row was read")

    monkeypatch.setattr(Tabular, "_to_block", no_rows)
    again = evalloss.compare(paths[:2], data=data, baseline=paths[2], cache=store)
    assert seen == [2] and all(m.cached for m in again.models)
    assert _figures(again) == _figures(report)


def _cached_after(tmp_path: Path, first: dict[str, object], second: dict[str, object]) -> bool:
    """Run with ``first``, then ``second``: whether the second run's model came from the
    cache (a fresh cache folder each time)."""
    store = tmp_path / f"cache{len(list(tmp_path.glob('cache*')))}"
    evalloss.compare([first.pop("path")], cache=store, **first)  # type: ignore[list-item]
    report = evalloss.compare([second.pop("path")], cache=store, **second)  # type: ignore[list-item]
    return report.models[0].cached


def test_each_key_component_changed_alone_is_a_miss(tmp_path: Path) -> None:
    paths, data = _setup(tmp_path, "mse")
    base = {"path": paths[0], "data": data, "loss": "mse"}
    assert _cached_after(tmp_path, dict(base), {**base, "batch_size": 7, "threads": 1})
    other = tmp_path / "other.csv"
    other.write_text(data.read_text()[:-1] + "1\n")  # the last value, one digit longer
    moved = tmp_path / "moved.safetensors"
    moved.write_bytes(paths[0].read_bytes())
    assert _cached_after(tmp_path, dict(base), {**base, "path": moved})  # same bytes: a hit
    changes: list[dict[str, object]] = [
        {"path": paths[1]}, {"data": other}, {"loss": "l1"}, {"target": ["t1", "t0"]},
        {"feature": ["f2", "f1", "f0"]}, {"precision": "float64"},
    ]  # fmt: skip
    for change in changes:
        assert not _cached_after(tmp_path, dict(base), {**base, **change}), change


def test_key_holds_device_torch_tokenizer_context_model_and_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evalloss.options import Options

    paths, data = _setup(tmp_path, "mse")
    plan = resolve([paths[0]], Options.of(data=data, loss="mse"))
    sha = ["0" * 64]
    k = reuse.key(plan, 0, sha)
    assert k == reuse.key(plan, 0, sha)
    assert k != reuse.key(replace(plan, device=torch.device("cuda")), 0, sha)
    assert k != reuse.key(plan, 0, ["1" * 64])
    assert k == reuse.key(plan, 0, sha, ordered=True)  # tabular data is always in file order
    assert k != reuse.key(replace(plan, contexts=((8, 8),)), 0, sha)  # the model's own context
    assert k != reuse.key(replace(plan, options=replace(plan.options, model="x.py:M")), 0, sha)
    for changed in ({"ignore_index": 255}, {"inputs_key": "x"}, {"targets_key": "y"}):
        assert k != reuse.key(replace(plan, options=replace(plan.options, **changed)), 0, sha)
    kwargs = replace(plan.options, model_kwargs={"hidden": 4})
    assert k != reuse.key(replace(plan, options=kwargs), 0, sha)
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_text("{}")
    assert k != reuse.key(replace(plan, tokenizers=(str(tokenizer),)), 0, sha)
    monkeypatch.setattr(torch, "__version__", "9.9.0")
    assert k != reuse.key(plan, 0, sha)
    f64 = replace(plan, options=replace(plan.options, precision="float64"))
    k64 = reuse.key(f64, 0, sha)
    monkeypatch.setattr(torch, "__version__", "2.0.0")
    assert reuse.key(f64, 0, sha) == k64  # float64 figures do not depend on torch's kernels
    monkeypatch.setattr(disk, "FIGURE_FORMAT", disk.FIGURE_FORMAT + 1)
    assert disk.name(reuse.key(f64, 0, sha)) != disk.name(k64)


def _one_entry(tmp_path: Path) -> tuple[dict[str, object], Path]:
    paths, data = _setup(tmp_path, "cross-entropy", rows=50)
    options = {"data": data, "cache": tmp_path / "cache"}
    evalloss.compare([paths[0]], **options)
    (entry,) = disk.entries(tmp_path / "cache")
    return {"checkpoints": [paths[0]], **options}, entry.path


@pytest.mark.parametrize("damage", ["truncate", "flip", "other key", "garbage"])
def test_a_damaged_entry_is_one_warning_then_rewritten(tmp_path: Path, damage: str) -> None:
    options, path = _one_entry(tmp_path)
    good = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "flip":  # a figure changed, the file still readable: the checksum sees it
        table = pq.read_table(path)
        values = table.column("value").to_numpy().copy()
        values[3] += 1.0
        table = table.set_column(0, "value", pa.array(values)).replace_schema_metadata(
            table.schema.metadata
        )
        pq.write_table(table, path)
    elif damage == "other key":
        meta = json.loads(pq.read_schema(path).metadata[disk.META])
        meta["key"]["loss"] = "nll"
        table = pq.read_table(path)
        pq.write_table(table.replace_schema_metadata({disk.META: json.dumps(meta)}), path)
    else:
        path.write_bytes(b"PAR1 not parquet")
    args = [*options.pop("checkpoints"), "--data", options["data"], "--cache", options["cache"]]  # type: ignore[misc]
    result = cli("compare", *args)
    assert result.exit_code == 0, result.stderr
    warned = [line for line in result.stderr.splitlines() if "warning" in line]
    assert len(warned) == 1 and "cache entry" in warned[0] and "evaluating the model again" in warned[0]
    assert path.read_bytes() == good  # rewritten whole (the writer is deterministic)
    again = cli("compare", *args)
    assert again.exit_code == 0 and "warning" not in again.stderr
    assert "read from the cache" in again.stderr


def test_an_unwritable_cache_folder_is_a_warning(tmp_path: Path) -> None:
    paths, data = _setup(tmp_path, "cross-entropy", rows=50)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    result = cli("compare", paths[0], "--data", data, "--cache", blocked / "cache")
    assert result.exit_code == 0 and "rank" in result.stdout
    (line,) = result.stderr.splitlines()
    assert line.startswith("evalloss: warning: cache folder") and "not cached" in line


def test_two_processes_writing_one_entry_never_leave_half_of_it(tmp_path: Path) -> None:
    import numpy as np

    key = {"format": 1, "test": "concurrency"}
    values = np.arange(200_000, dtype=np.float64) / 7
    script = (
        "import sys, numpy as np; from evalloss.cache import disk\n"
        f"e = disk.Entry(np.arange(200_000, dtype=np.float64) / 7, np.ones(200_000, np.int64),"
        " {'items': 200000}, None)\n"
        f"for _ in range(15): disk.store(sys.argv[1], {key!r}, e)\n"
    )
    writers = [subprocess.Popen([sys.executable, "-c", script, str(tmp_path)]) for _ in range(2)]
    seen = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a half-written entry would be a warning
        while any(w.poll() is None for w in writers):
            entry = disk.load(tmp_path, key)
            if entry is not None:
                seen += 1
                assert np.array_equal(entry.values, values)
    assert [w.wait() for w in writers] == [0, 0]
    final = disk.load(tmp_path, key)
    assert final is not None and np.array_equal(final.values, values)
    assert [p.name for p in tmp_path.iterdir()] == [disk.name(key)]  # no temp file left


def test_least_recently_used_entries_are_evicted(tmp_path: Path) -> None:
    import os

    import numpy as np

    entry = disk.Entry(np.zeros(1000), np.ones(1000, np.int64), {"items": 1000})
    for n in range(3):
        disk.store(tmp_path, {"n": n}, entry)
        os.utime(tmp_path / disk.name({"n": n}), (1000 + n, 1000 + n))
    size = disk.entries(tmp_path)[0].size
    assert disk.load(tmp_path, {"n": 0}) is not None  # used now: the most recent
    disk.store(tmp_path, {"n": 3}, entry, max_size=int(2.5 * size))
    left = {p.path.name for p in disk.entries(tmp_path)}
    assert left == {disk.name({"n": 0}), disk.name({"n": 3})}


def test_sizes_parse() -> None:
    assert disk.parse_size("500M") == 500 << 20
    assert disk.parse_size("2G") == 2 << 30
    assert disk.parse_size(1234) == 1234
    with pytest.raises(evalloss.OptionError):
        disk.parse_size("lots")


def test_cache_list_clear_and_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, data = _setup(tmp_path, "cross-entropy", rows=50)
    store = tmp_path / "cache"
    monkeypatch.setenv("EVALLOSS_CACHE", str(store))
    assert cli("compare", *paths[:2], "--data", data).exit_code == 0
    listed = cli("cache", "list")
    assert listed.exit_code == 0 and listed.stdout.splitlines()[-1].startswith("2 entries, ")
    assert "cross-entropy float32 cpu" in listed.stdout
    assert "read from the cache" in cli("compare", paths[0], "--data", data).stderr
    cleared = cli("cache", "clear")
    assert cleared.stdout == "removed 2 entries\n" and disk.entries(store) == []
    monkeypatch.delenv("EVALLOSS_CACHE")
    missing = cli("cache", "list")
    assert missing.exit_code == 2 and "--cache: give the folder" in missing.stderr
    bad = cli("compare", paths[0], "--data", data, "--cache", store, "--cache-max-size", "x")
    assert bad.exit_code == 2


def test_cache_from_the_project_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths, data = _setup(tmp_path, "cross-entropy", rows=50)
    (tmp_path / "pyproject.toml").write_text('[tool.evalloss]\ncache = "results"\n')
    monkeypatch.chdir(tmp_path)
    assert cli("compare", paths[0], "--data", data).exit_code == 0
    assert len(disk.entries(tmp_path / "results")) == 1
    assert cli("cache", "list").stdout.startswith(disk.entries(tmp_path / "results")[0].path.name[:16])


def test_the_cache_is_refused_under_torchrun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, data = _setup(tmp_path, "cross-entropy", rows=50)
    monkeypatch.setenv("WORLD_SIZE", "2")
    result = cli("compare", paths[0], "--data", data, "--cache", tmp_path / "c")
    assert result.exit_code == 2 and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert "--cache: not supported under torchrun (WORLD_SIZE=2)" in line
    assert not (tmp_path / "c").exists()


def test_tensor_masks_cached_with_ignore_index(tmp_path: Path) -> None:
    import numpy as np

    from tests.datasets import images

    x, _ = images(9)
    g = torch.Generator().manual_seed(3)
    masks = torch.randint(0, 3, (9, 8, 8), generator=g, dtype=torch.uint8)
    masks[torch.rand(9, 8, 8, generator=g) < torch.linspace(0, 0.9, 9)[:, None, None]] = 255
    data = tmp_path / "d.npz"
    np.savez(data, images=x.numpy(), masks=masks.numpy())
    paths = []
    for seed in range(2):
        torch.manual_seed(seed)
        paths.append(tmp_path / f"c{seed}.safetensors")
        evalloss.save(nn.Sequential(nn.Conv2d(1, 3, 3, padding=1)), paths[-1], loss="cross-entropy")
    options = {"data": data, "inputs_key": "images", "targets_key": "masks", "ignore_index": 255,
               "baseline": paths[0], "batch_size": 4}  # fmt: skip
    plain = evalloss.compare(paths, per_item=tmp_path / "plain.csv", **options)
    evalloss.compare(paths, cache=tmp_path / "c", **options)
    hit = evalloss.compare(paths, cache=tmp_path / "c", per_item=tmp_path / "hit.csv", **options)
    assert all(m.cached for m in hit.models) and hit.models[0].loss_per_element is not None
    assert _figures(hit) == _figures(plain)
    assert (tmp_path / "hit.csv").read_text() == (tmp_path / "plain.csv").read_text()


def test_a_dataset_factory_is_not_cached(tmp_path: Path) -> None:
    torch.manual_seed(0)
    path = tmp_path / "m.safetensors"
    evalloss.save(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), path, loss="cross-entropy")
    spec = f"{Path(__file__).parent / 'datasets.py'}:digits"
    with pytest.warns(evalloss.EvallossWarning, match="Dataset factory"):
        report = evalloss.compare([path], data=spec, cache=tmp_path / "c")
    assert report.models[0].items > 0 and not (tmp_path / "c").exists()


@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
def test_sliced_runs_read_and_store_entries_with_the_same_slices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loss: str
) -> None:
    paths, data = _setup(tmp_path, loss, rows=90)
    store = tmp_path / "c"
    # a category slice (its codes follow first sight), or quantile bins of numeric columns
    by = {"slice": ["t0"]} if loss == "cross-entropy" else {"slice": ["f0", "f1"], "slice_bins": 3}
    options = {"data": data, "baseline": paths[2], "feature": ["f0", "f1", "f2"], **by}
    plain = evalloss.compare(paths, **options)
    candidate = next(m for m in plain.models if not m.is_baseline)
    assert candidate.slices and all(s.vs_baseline is not None for s in candidate.slices)
    evalloss.compare([paths[2]], data=data, feature=["f0", "f1", "f2"], cache=store)  # unsliced
    first = evalloss.compare(paths, cache=store, **options)
    assert _figures(first) == _figures(plain)
    if loss == "cross-entropy":  # per-slice accuracy: that entry is evaluated again
        assert not any(m.cached for m in first.models)
    partly = evalloss.compare(paths[1:], cache=store, **options)  # one evaluated, one read
    assert [m.cached for m in partly.models if m.is_baseline] == [True]
    plain_partly = evalloss.compare(paths[1:], **options)
    assert _figures(partly) == _figures(plain_partly)
    seen = _counting(monkeypatch)
    hit = evalloss.compare(paths, cache=store, **options)  # all read: the codes from the data
    assert seen == [] and all(m.cached for m in hit.models)
    assert _figures(hit) == _figures(plain)


def test_slices_over_documents_are_not_cached(tmp_path: Path) -> None:
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"input_ids": [1, 2, 3, i % 5], "g": i % 2}) + "\n"
                            for i in range(12)))  # fmt: skip
    path = tmp_path / "lm.safetensors"
    evalloss.save(lm.Causal(), path, loss="causal-lm")
    with pytest.warns(evalloss.EvallossWarning, match="--slice over documents"):
        report = evalloss.compare([path], data=data, model=f"{lm.__file__}:Causal", context=8,
                                  slice=["g"], cache=tmp_path / "c")  # fmt: skip
    assert report.models[0].slices and not (tmp_path / "c").exists()


@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
def test_explain_reads_and_stores_entries_with_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loss: str
) -> None:
    paths, data = _setup(tmp_path, loss)
    store = tmp_path / "cache"
    plain = evalloss.explain(paths[0], data=data, batch_sizes=(1, 7, 64))
    stored = evalloss.explain(paths[0], data=data, batch_sizes=(1, 7, 64), cache=store)
    assert stored == plain
    assert evalloss.compare([paths[0]], data=data, cache=store).models[0].cached  # one entry
    evalloss.compare([paths[1]], data=data, cache=store)  # a compare's entry serves explain
    from evalloss.sources.tabular import Tabular

    def no_rows(*args: object, **kwargs: object) -> None:
        raise AssertionError("a data row was read")

    monkeypatch.setattr(Tabular, "_to_block", no_rows)
    assert evalloss.explain(paths[0], data=data, batch_sizes=(1, 7, 64), cache=store) == plain
    from_compare = evalloss.explain(paths[1], data=data, cache=store)
    with pytest.raises(AssertionError, match="a data row"):
        evalloss.explain(paths[2], data=data, cache=store)  # not cached: it reads
    monkeypatch.undo()
    assert from_compare == evalloss.explain(paths[1], data=data)


def test_explain_of_a_token_loss_from_the_cache(tmp_path: Path) -> None:
    data = _documents(tmp_path)
    path = tmp_path / "lm.safetensors"
    evalloss.save(lm.Causal(), path, loss="causal-lm")
    options = {"data": data, "model": f"{lm.__file__}:Causal", "context": 8, "stride": 4,
               "batch_sizes": (1, 4)}  # fmt: skip
    plain = evalloss.explain(path, **options)
    evalloss.explain(path, cache=tmp_path / "c", **options)
    assert len(list((tmp_path / "c").glob("*.parquet"))) == 1
    assert evalloss.explain(path, cache=tmp_path / "c", **options) == plain
    # compare --per-item reads the documents in file order too: explain's entry serves it
    ordered = evalloss.compare([path], cache=tmp_path / "c", per_item=tmp_path / "i.csv",
                               **{k: v for k, v in options.items() if k != "batch_sizes"})
    assert ordered.models[0].cached


def test_explain_cache_on_the_command_line(tmp_path: Path) -> None:
    paths, data = _setup(tmp_path, "cross-entropy")
    args = ["explain", str(paths[0]), "--data", str(data), "--format", "json"]
    first = cli(*args, "--cache", str(tmp_path / "c"))
    second = cli(*args, "--cache", str(tmp_path / "c"))
    assert first.exit_code == 0 and second.exit_code == 0, second.stderr
    assert json.loads(first.stdout) == json.loads(second.stdout)
    assert cli(*args, "--cache-max-size", "1M").exit_code == 2  # needs --cache


@pytest.mark.parametrize("kind", ["symlink to a checkpoint", "dangling symlink", "fifo", "folder"])
def test_an_entry_that_is_not_a_regular_file_is_never_followed_or_written_through(
    tmp_path: Path, kind: str
) -> None:
    """The cache folder is an input: an entry's name holding a link or a special file is one
    warning, the model evaluated and not cached, the link and what it points at untouched,
    and `cache list` neither opens nor lists it (a FIFO would block the reader for ever)."""
    options, path = _one_entry(tmp_path)
    checkpoint = Path(options["checkpoints"][0])  # type: ignore[index]
    before = checkpoint.read_bytes()
    path.unlink()
    if kind == "symlink to a checkpoint":
        path.symlink_to(checkpoint)
    elif kind == "dangling symlink":
        path.symlink_to(tmp_path / "nowhere.parquet")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    args = [checkpoint, "--data", options["data"], "--cache", options["cache"]]
    result = cli("compare", *args)
    assert result.exit_code == 0, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("evalloss: warning: cache entry") and "never followed" in line
    assert checkpoint.read_bytes() == before
    assert not (tmp_path / "nowhere.parquet").exists()
    assert path.is_symlink() == kind.endswith("symlink") or kind.startswith("symlink")
    listed = cli("cache", "list", "--cache", options["cache"])
    assert listed.exit_code == 0 and path.name[:16] not in listed.stdout
    assert disk.entries(options["cache"]) == []  # type: ignore[arg-type]


def test_an_entry_keeps_the_footer_key_entries_were_written_with(tmp_path: Path) -> None:
    """Entries written by earlier versions must stay readable: their footer's key is
    b"evalloss.cache" (not the module's name, which may move)."""
    _, path = _one_entry(tmp_path)
    assert list(pq.read_schema(path).metadata) == [b"evalloss.cache"]
