"""``--prefix-token`` and the text counts, against lm-evaluation-harness itself: its rolling
windows (``get_rolling_token_windows``, ``make_disjoint_window``), its ``HFLM`` on tiny local
folders (GPT-2, and a Llama whose tokenizer adds BOS) with its wikitext aggregation
(``bits_per_byte``, ``weighted_perplexity``); and a hand-computed prefixed oracle (the model's
own ``labels=`` loss, float64) where lm-evaluation-harness is not installed."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import evalloss
from evalloss.sources import text, windows
from tests import hf
from tests.conftest import run

ROOT = Path(__file__).resolve().parents[1]
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
# an empty document, spaces at both ends, a tab and a line separator, one that starts with the
# BOS token's own text (lm-evaluation-harness then tokenizes it without special tokens)
DOCS = [*hf.corpus(24, seed=3), "", "  spaced  ", "tab\tand \u2028 separator", "<s>the model"]
CONTEXT = 16  # shorter than the longest document: the rolling windows matter


def _folder(root: Path, kind: str, declared: dict[str, str] | None = None,
            positions: int = 512) -> Path:  # fmt: skip
    """A tiny folder with a tokenizer config that declares its special tokens (``<s>``)."""
    folder = (hf.llama if kind == "llama" else hf.gpt2)(root / kind, positions=positions)
    hf.tokenizer(folder, vocab=260, bos=kind == "llama")
    config = {"bos_token": "<s>", "eos_token": "<s>"} if declared is None else declared
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lmeval")
    found = {kind: _folder(root, kind) for kind in ("gpt2", "llama")}
    found["data"] = hf.jsonl(root / "docs.jsonl", [{"text": d} for d in DOCS])
    return found


def _words(docs: list[str]) -> int:
    return sum(len(re.split(r"\s+", d)) for d in docs)


def _bytes(docs: list[str]) -> int:
    return sum(len(d.encode("utf-8")) for d in docs)


def test_the_windows_are_lm_evaluation_harness_rolling_windows() -> None:
    """Every (input, position, target) lm-evaluation-harness scores for a document is one
    evalloss scores for the document with the prefix first and --stride = --context, in the
    same order, and no other."""
    import numpy as np

    utils = pytest.importorskip("lm_eval.utils", reason="lm-evaluation-harness not installed")
    prefix = 99
    for length in range(30):
        tokens = list(range(1, length + 1))
        for context in range(1, 10):
            theirs = []
            for ctx, cont in map(utils.make_disjoint_window, utils.get_rolling_token_windows(
                    tokens, prefix, context, 1)):  # fmt: skip
                given = (ctx + cont)[-(context + 1) :][:-1]  # HFLM._loglikelihood_tokens
                first = len(given) - len(cont)
                theirs += [(tuple(given), first + k, t) for k, t in enumerate(cont)]
            sequence = [prefix, *tokens]
            ours = []
            for w in range(windows.count(len(sequence), context)):
                win = windows.window(len(sequence), w, context, context)
                ids, labels = windows.row(np.asarray(sequence), win)
                ours += [(tuple(ids.tolist()), int(p), int(t)) for p, t in enumerate(labels)
                         if t != windows.IGNORE]  # fmt: skip
            assert ours == theirs, (length, context)


def _lm_eval(folder: Path, docs: list[str], prefix: int | None = None) -> dict[str, float]:
    """lm-evaluation-harness's HFLM on the folder: loglikelihood_rolling over the documents,
    aggregated as its wikitext task does (words and bytes of each document)."""
    huggingface = pytest.importorskip("lm_eval.models.huggingface")
    from lm_eval.api.instance import Instance
    from lm_eval.api.metrics import bits_per_byte, weighted_perplexity

    extra = {} if prefix is None else {"prefix_token_id": prefix}
    lm = huggingface.HFLM(pretrained=str(folder), max_length=CONTEXT, batch_size=8, device="cpu",
                          dtype="float32", **extra)  # fmt: skip
    requests = [Instance(request_type="loglikelihood_rolling", doc={}, arguments=(d,), idx=i)
                for i, d in enumerate(docs)]  # fmt: skip
    lls = lm.loglikelihood_rolling(requests, disable_tqdm=True)
    words = [(ll, len(re.split(r"\s+", d))) for ll, d in zip(lls, docs, strict=True)]
    sizes = [(ll, len(d.encode("utf-8"))) for ll, d in zip(lls, docs, strict=True)]
    return {"bits_per_byte": bits_per_byte(sizes), "word_perplexity": weighted_perplexity(words),
            "byte_perplexity": weighted_perplexity(sizes)}  # fmt: skip


@pytest.mark.parametrize(("kind", "given", "prefix"),
                         [("gpt2", "auto", None), ("llama", "bos", None), ("llama", "7", 7)])
def test_lm_evaluation_harness_own_figures(
    folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch, kind: str, given: str,
    prefix: int | None,
) -> None:  # fmt: skip
    """Same folder, documents, prefix and context: bits per byte, word and byte perplexity
    equal lm-evaluation-harness's to 1e-6 (float32; the Llama's tokenizer adds BOS, so under
    ``bos`` each document starts with it twice, as there)."""
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness not installed")
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "1")
    theirs = _lm_eval(folders[kind], DOCS, prefix)
    report = evalloss.compare([folders[kind]], data=folders["data"], prefix_token=given,
                              context=CONTEXT)  # fmt: skip
    model = report.models[0]
    assert (report.data.words, report.data.bytes) == (_words(DOCS), _bytes(DOCS))
    for figure, value in theirs.items():
        assert getattr(model, figure) == pytest.approx(value, rel=1e-6), figure
    without = evalloss.compare([folders[kind]], data=folders["data"], context=CONTEXT).models[0]
    assert without.bits_per_byte < 0.99 * model.bits_per_byte  # the convention matters here


def test_a_hand_computed_prefixed_oracle(folders: dict[str, Path]) -> None:
    """Without windows, in float64: each document with the prefix first, scored by the
    model's own ``labels=`` loss, every token of the document counted (no lm-eval needed)."""
    from tokenizers import Tokenizer

    folder = folders["llama"]
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    ids = [[0, *(tokenizer.encode(d, add_special_tokens=not d.startswith("<s>")).ids)]
           for d in DOCS]  # fmt: skip
    expected, tokens = hf.own_loss(folder, ids)
    model = evalloss.compare([folder], data=folders["data"], prefix_token="auto",
                             precision="float64").models[0]  # fmt: skip
    assert model.tokens == tokens == sum(len(i) - 1 for i in ids)
    # 1e-7, not 1e-9: the Llama's rotary tables are float32 in a float64 model as loaded here
    assert model.loss_sum == pytest.approx(expected, rel=1e-7)
    assert model.word_perplexity == pytest.approx(math.exp(expected / _words(DOCS)), rel=1e-6)
    assert model.byte_perplexity == pytest.approx(math.exp(expected / _bytes(DOCS)), rel=1e-7)


def test_token_documents_get_the_prefix_too(folders: dict[str, Path], tmp_path: Path) -> None:
    """Token ids with a labels mask: the prefix first, every unmasked token scored; an error
    in a document still names the document's own token (counted from 0)."""
    docs = [[5, 6, 7, 8], [9], [], [10, 11, 12]]
    labels = [[5, -100, 7, 8], [9], [], [10, 11, -100]]
    data = hf.jsonl(tmp_path / "ids.jsonl", [{"input_ids": d, "labels": m}
                                             for d, m in zip(docs, labels, strict=True)])  # fmt: skip
    folder = folders["gpt2"]
    model = evalloss.compare([folder], data=data, prefix_token="3", precision="float64").models[0]
    own = hf.model_of(folder)
    import torch

    terms = []
    with torch.no_grad():
        for d, m in zip(docs, labels, strict=True):
            x = torch.tensor([[3, *d]])
            y = torch.tensor([[-100, *m]])
            logits = own(x).logits[0, :-1]
            losses = torch.nn.functional.cross_entropy(logits, y[0, 1:], reduction="none")
            terms += [float(v) for v, t in zip(losses, y[0, 1:], strict=True) if t != -100]
    assert model.tokens == len(terms) == 6
    assert model.loss_sum == pytest.approx(math.fsum(terms), rel=1e-9)
    bad = hf.jsonl(tmp_path / "bad.jsonl", [{"input_ids": [5, 6]}, {"input_ids": [7, 999, 8]}])
    result = run("compare", folder, "--data", bad, "--prefix-token", "3")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "token 1" in result.stderr, result.stderr


def test_words_are_lm_evaluation_harness_count() -> None:
    docs = ["", " ", "a", " a ", "a  b\tc\n", "\u3000x\u00a0y", "é è"]
    assert text.words(docs) == sum(len(re.split(r"\s+", d)) for d in docs)


def test_the_counts_survive_the_cache_and_show(folders: dict[str, Path], tmp_path: Path) -> None:
    """JSON and CSV carry words, word_perplexity and byte_perplexity; the table shows word
    perplexity under --prefix-token; a cache hit gives the same report."""
    args = ["compare", folders["gpt2"], "--data", folders["data"], "--prefix-token", "eos",
            "--format", "json", "--cache", tmp_path / "cache"]  # fmt: skip
    first, second = run(*args), run(*args)
    assert first.exit_code == second.exit_code == 0, first.stderr + second.stderr
    one, two = json.loads(first.stdout), json.loads(second.stdout)
    for document in (one, two):
        document.pop("provenance")
        for m in document["models"]:
            m.pop("seconds")
    assert one == two
    assert one["data"]["words"] == _words(DOCS) and one["data"]["prefix_token"] == "eos"
    assert {"word_perplexity", "byte_perplexity"} <= set(one["models"][0])
    table = run(*args[:6]).stdout
    assert "word ppl" in next(line for line in table.splitlines() if line.startswith("rank"))
    plain = run(*args[:4], "--format", "csv").stdout
    assert "word_perplexity" in plain.splitlines()[0]


@pytest.mark.parametrize(
    ("given", "declared", "expected"),
    [
        ("290", None, "--prefix-token: token id 290 is outside the tokenizer's vocabulary"),
        ("bos", {"eos_token": "<s>"}, "--prefix-token: the tokenizer declares no BOS token"),
        ("auto", {}, "--prefix-token: the tokenizer declares no BOS or EOS token"),
        ("eos", {"eos_token": "</s>"}, "the EOS token its folder declares, '</s>', is not in the tokenizer"),
        ("first", None, "--prefix-token: must be auto, bos, eos or a token id"),
    ],
)
def test_a_bad_prefix_is_one_line(
    tmp_path: Path, given: str, declared: dict[str, str] | None, expected: str
) -> None:
    folder = _folder(tmp_path, "gpt2", declared)
    data = hf.jsonl(tmp_path / "d.jsonl", [{"text": "the model"}])
    result = run("compare", folder, "--data", data, "--prefix-token", given)
    assert result.exit_code == 2, result.stderr
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_a_prefix_where_there_are_no_documents_is_one_line(folders: dict[str, Path],
                                                           tmp_path: Path) -> None:  # fmt: skip
    """Past the model's vocabulary; a token stream (no documents); text with class labels."""
    import numpy as np

    data = folders["data"]
    found = run("compare", folders["gpt2"], "--data", data, "--prefix-token", "400")
    assert found.exit_code == 2 and "outside the model's vocabulary [0, 300)" in found.stderr
    stream = tmp_path / "s.bin"
    np.arange(100, dtype=np.uint16).tofile(stream)
    found = run("compare", folders["gpt2"], "--data", stream, "--prefix-token", "0",
                "--context", "8")  # fmt: skip
    assert found.exit_code == 2 and "--prefix-token: is for documents and text" in found.stderr
    labelled = hf.jsonl(tmp_path / "l.jsonl", [{"text": "a b", "label": 1}])
    found = run("compare", folders["gpt2"], "--data", labelled, "--prefix-token", "0",
                "--target", "label", "--loss", "cross-entropy")  # fmt: skip
    assert found.exit_code == 2 and "--prefix-token" in found.stderr, found.stderr
    assert found.stderr.count("\n") == 1


@pytest.mark.slow
def test_the_docs_commands_give_the_same_figures(tmp_path: Path) -> None:
    """docs/language-models.md's lines as written: lm_eval on a local task, then evalloss
    with lm-evaluation-harness's convention; the three figures agree to 1e-6."""
    pytest.importorskip("lm_eval", reason="lm-evaluation-harness not installed")
    page = (ROOT / "docs" / "language-models.md").read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"^```bash\n(.*?)^```", page, flags=re.S | re.M)
                 if "lm_eval --model" in b)  # fmt: skip
    _folder(tmp_path / "runs", "gpt2", positions=1024)
    (tmp_path / "eval").mkdir()
    hf.jsonl(tmp_path / "eval" / "heldout.jsonl", [{"text": d} for d in DOCS])
    env = os.environ | OFFLINE | {"HF_HOME": str(tmp_path / "hf"),
                                  "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", "-e", "-c", block], cwd=tmp_path, env=env, timeout=600,
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    found = sorted((tmp_path / "lm-eval").glob("**/results_*.json"))
    theirs = json.loads(found[-1].read_text())["results"]["heldout"]
    ours = json.loads((tmp_path / "evalloss.json").read_text())["models"][0]
    for figure in ("bits_per_byte", "byte_perplexity"):
        assert ours[figure] == pytest.approx(theirs[f"{figure},none"], rel=1e-6), figure
    # this random model's loss is 35 nats a word: exp() makes float32's 3e-8 (lm-eval's batch
    # of 8 against evalloss's packing) 1e-6; the nats per word agree to 1e-6
    per_word = math.log(theirs["word_perplexity,none"])
    assert math.log(ours["word_perplexity"]) == pytest.approx(per_word, rel=1e-6)
