"""Paired statistics per document for token losses (cluster-robust ratio), against the v1 paired
t statistics for weight-1 items, a bootstrap over documents, and a merge of shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from evalloss.stats.paired import PairedSum
from evalloss.stats.ratio import PairedRatio
from tests.conftest import run
from tests.test_causal import LM, _ckpt, _docs, _jsonl


def _sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = rng.integers(1, 60, size=n)
    b = rng.gamma(2.0, 1.0, size=n) * t  # baseline document sums
    a = b * rng.normal(0.97, 0.08, size=n) + rng.normal(0, 0.3, size=n) * np.sqrt(t)
    return a, b, t


def test_weight_one_items_give_the_v1_paired_t_statistics() -> None:
    a, b, _ = _sample(300, seed=1)
    ratio, paired = PairedRatio(), PairedSum()
    ratio.add(a, b, np.ones(len(a), dtype=np.int64))
    paired.add(a, b)
    r, p = ratio.comparison(1.5), paired.comparison(1.5)
    assert r.delta == pytest.approx(p.delta, rel=1e-12)
    assert r.wins == p.wins and r.relative == pytest.approx(p.relative, rel=1e-12)
    assert r.ci95 is not None and p.ci95 is not None
    assert r.ci95 == pytest.approx(p.ci95, rel=1e-9) and r.p_value == pytest.approx(
        p.p_value, rel=1e-9
    )


def test_the_interval_agrees_with_a_bootstrap_over_documents() -> None:
    a, b, t = _sample(400, seed=2)
    ratio = PairedRatio()
    ratio.add(a, b, t)
    result = ratio.comparison(None)
    assert result.delta == pytest.approx((a - b).sum() / t.sum(), rel=1e-12)
    rng = np.random.default_rng(3)
    picks = rng.integers(0, len(a), size=(4000, len(a)))
    boot = (a[picks] - b[picks]).sum(axis=1) / t[picks].sum(axis=1)
    low, high = np.percentile(boot, [2.5, 97.5])
    assert result.ci95 is not None
    half = (result.ci95[1] - result.ci95[0]) / 2
    assert abs(result.ci95[0] - low) < 0.1 * half and abs(result.ci95[1] - high) < 0.1 * half
    assert result.wins == pytest.approx(float(np.mean(a < b)))


def test_shards_merge_into_the_one_pass_state() -> None:
    a, b, t = _sample(97, seed=4)
    whole = PairedRatio()
    whole.add(a, b, t)
    shards = []
    for lo, hi in [(0, 0), (0, 13), (13, 60), (60, 97)]:
        part = PairedRatio()
        part.add(a[lo:hi], b[lo:hi], t[lo:hi])
        shards.append(json.loads(json.dumps(part.state())))  # plain data, as gloo carries it
    merged = PairedRatio()
    merged.merge_states(shards)
    assert merged.comparison(2.0) == whole.comparison(2.0)


def test_documents_without_tokens_are_left_out() -> None:
    ratio = PairedRatio()
    ratio.add(np.array([0.0, 3.0, 1.0]), np.array([0.0, 4.0, 1.5]), np.array([0, 2, 1]))
    result = ratio.comparison(None)
    assert result.delta == pytest.approx(-1.5 / 3) and result.wins == 1.0


def test_a_baseline_and_gate_on_token_losses(tmp_path: Path) -> None:
    import torch

    import evalloss
    from tests import lm

    docs = _docs(count=60, seed=5)
    data = _jsonl(tmp_path / "d.jsonl", docs)
    base = _ckpt(tmp_path, lm.Causal, "base")
    torch.manual_seed(7)
    cand = tmp_path / "cand.safetensors"
    evalloss.save(lm.Causal(), cand, loss="causal-lm")
    result = run("compare", cand, "--baseline", base, "--data", data, "--model", f"{LM}:Causal",
                 "--precision", "float64", "--format", "json", "--max-loss", "100")  # fmt: skip
    assert result.exit_code in (0, 1), result.stderr
    report = json.loads(result.stdout)
    one, two = report["models"]
    candidate = one if one["path"] == str(cand) else two
    baseline = two if candidate is one else one
    vs = candidate["vs_baseline"]
    assert vs["delta"] == pytest.approx(
        (candidate["loss_sum"] - baseline["loss_sum"]) / candidate["tokens"], rel=1e-9
    )
    assert vs["ci95"][0] <= vs["delta"] <= vs["ci95"][1]
    assert report["gate"]["checks"][0]["rule"] == "max-loss"
