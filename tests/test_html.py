"""--format html: one self-contained page (nothing loaded, nothing run), every name from a
file escaped, the distributions from the --plot sample, the same page in Jupyter; rendered
by headless Chromium with no console error and a screenshot that is not blank."""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

import evalloss
from evalloss import render
from tests.conftest import run

EXAMPLE = Path(__file__).parents[1] / "checkpoints"
CKPTS = [EXAMPLE / f"{n}.safetensors" for n in ("bs10", "bs50")]
BASE = ["--baseline", EXAMPLE / "barely.safetensors", "--data", EXAMPLE / "train.csv"]
HOSTILE = ['"><script>alert(1)<!--', "<img src=x onerror=alert(1)>"]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class _Tags(HTMLParser):
    """Every start tag and its attributes, as a browser's tokenizer sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _tags(page: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Tags()
    parser.feed(page)
    return parser.tags


def _self_contained(page: str) -> None:
    """No script, no handler, nothing fetched: no src/href, no url(), no @import."""
    for tag, attrs in _tags(page):
        assert tag not in {"script", "link", "iframe", "img", "object", "embed"}, tag
        assert not any(a.startswith("on") for a in attrs), (tag, attrs)
        assert not {"src", "href", "xlink:href"} & set(attrs), (tag, attrs)
    assert "url(" not in page and "@import" not in page
    assert set(re.findall(r"https?://[^\s'\"]+", page)) <= {"http://www.w3.org/2000/svg"}


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("html") / "report.html"
    result = run("compare", *CKPTS, *BASE, "--min-improvement", "0.9", "--format", "html",
                 "-o", out)  # fmt: skip
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("FAIL  bs10 beats baseline barely")
    return out.read_text(encoding="utf-8")


def test_the_page_has_every_section_and_loads_nothing(gated: str) -> None:
    assert gated.startswith("<!DOCTYPE html>") and gated.rstrip().endswith("</html>")
    _self_contained(gated)
    assert "Content-Security-Policy" in gated and "default-src 'none'" in gated
    for text in ("bs10", "bs50", "barely", "(baseline)", "min-improvement", "FAIL"):
        assert text in gated
    assert "class='verdict fail'" in gated
    assert gated.count("<svg") == 2  # the intervals and the distributions
    assert "Paired differences from the baseline" in gated
    assert "Share of all 600 items in each bin" in gated
    report = evalloss.compare(CKPTS, data=EXAMPLE / "train.csv")
    sha = report.provenance.sha256[str(EXAMPLE / "train.csv")]  # type: ignore[union-attr,index]
    assert sha in gated


def test_the_ranking_table_is_the_report(gated: str) -> None:
    report = evalloss.compare(CKPTS, data=EXAMPLE / "train.csv",
                              baseline=EXAMPLE / "barely.safetensors")  # fmt: skip
    rows = re.findall(r"<tr(?: class=base)?><td>(\d)</td><td class='l model'>.*?<b>(.*?)</b>"
                      r".*?</td><td>(.*?)</td>", gated)  # fmt: skip
    assert [(int(r), n) for r, n, _ in rows] == [(m.rank, m.name) for m in report.models]
    assert [float(v) for *_, v in rows] == pytest.approx(
        [m.loss_per_item for m in report.models], rel=1e-5
    )


def test_hostile_names_are_escaped(tmp_path: Path) -> None:
    paths = []
    for name in HOSTILE:
        path = tmp_path / f"{name}.safetensors"
        shutil.copy(CKPTS[0], path)
        paths.append(path)
    out = tmp_path / "report.html"
    result = run("compare", *paths, *BASE, "--format", "html", "-o", out)
    assert result.exit_code == 0, result.stderr
    page = out.read_text(encoding="utf-8")
    _self_contained(page)
    assert "&lt;script&gt;alert(1)" in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    # a name no file system allows, through the API: closing tags and quotes
    report = evalloss.compare(CKPTS, data=EXAMPLE / "train.csv")
    evil = "</svg></table>'\"<script>alert(1)</script>\x1b[2J"
    models = (dataclasses.replace(report.models[0], name=evil, path=evil), *report.models[1:])
    page = render.render(dataclasses.replace(report, models=models), "html")
    _self_contained(page)
    assert "&lt;/svg&gt;&lt;/table&gt;&#x27;&quot;&lt;script&gt;" in page and "\x1b" not in page


def test_the_sample_is_kept_only_when_asked_and_never_in_the_json() -> None:
    plain = evalloss.compare(CKPTS, data=EXAMPLE / "train.csv")
    kept = evalloss.compare(CKPTS, data=EXAMPLE / "train.csv", sample=True)
    assert plain.sample is None
    assert kept.sample is not None and kept.sample.values.shape == (600, 2)
    assert kept.sample.seen == 600 and kept.sample.names == ("bs10", "bs50")
    for model, column in zip(kept.models, kept.sample.values.T, strict=True):
        assert column.mean() == pytest.approx(model.loss_per_item, rel=1e-6)
    assert kept.to_dict() == plain.to_dict() | {"models": kept.to_dict()["models"]}
    assert "sample" not in json.loads(render.render(kept, "json"))
    assert "No sample of the items was kept" in render.render(plain, "html")
    assert "Per-item loss distributions" in render.render(kept, "html")


def test_jupyter_shows_the_same_page() -> None:
    report = evalloss.compare(CKPTS, data=EXAMPLE / "train.csv", sample=True)
    assert report._repr_html_() == render.render(report, "html")
    explained = evalloss.explain(CKPTS[0], data=EXAMPLE / "train.csv")
    page = explained._repr_html_()
    _self_contained(page)
    assert "evalloss explain: cross-entropy loss of bs10.safetensors" in page
    assert page.count("<tr>") == len(explained.rows) + 2  # header, rows, exact


def test_explain_html_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "explain.html"
    result = run("explain", CKPTS[0], "--data", EXAMPLE / "train.csv", "--format", "html",
                 "-o", out)  # fmt: skip
    assert result.exit_code == 0, result.stderr
    page = out.read_text(encoding="utf-8")
    _self_contained(page)
    assert "sum of averages" in page and "exact" in page


def _chromium(*args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
         "--enable-logging=stderr", "--v=0", "--host-resolver-rules=MAP * ~NOTFOUND", *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def _console(page: Path) -> list[str]:
    """What the page wrote to the browser's console: errors, CSP refusals, failed loads."""
    proc = _chromium("--dump-dom", page.as_uri())
    assert "</html>" in proc.stdout, proc.stderr[-2000:]
    return [line for line in proc.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.skipif(CHROMIUM is None, reason="needs chromium (apt-get install chromium)")
def test_chromium_renders_it_without_a_console_error(gated: str, tmp_path: Path) -> None:
    from PIL import Image

    page = tmp_path / "report.html"
    page.write_text(gated, encoding="utf-8")
    assert _console(page) == []
    # the check can fail: an injected script and image are refused, and said so
    bad = tmp_path / "bad.html"
    bad.write_text(gated.replace("</main>", "<img src='https://example.com/x.png'>"
                                 "<script>console.error('boom')</script></main>"))  # fmt: skip
    assert len(_console(bad)) == 2
    for width, height in ((1000, 1400), (390, 1600)):  # a laptop and a phone
        shot = tmp_path / f"shot-{width}.png"
        proc = _chromium(f"--screenshot={shot}", f"--window-size={width},{height}", page.as_uri())
        assert shot.exists(), proc.stderr[-2000:]
        with Image.open(shot) as image:
            assert image.size == (width, height)
            colours = image.convert("RGB").getcolors(maxcolors=1 << 20) or []
        assert len(colours) > 50  # text, table rules, the charts' colours
        background = max(colours)[0] / (width * height)
        assert 0.5 < background < 0.98  # mostly page, but far from blank


def test_a_sample_without_finite_values_still_renders() -> None:
    import numpy as np

    report = evalloss.compare(CKPTS, data=EXAMPLE / "train.csv", sample=True)
    assert report.sample is not None
    nan = dataclasses.replace(report.sample, values=np.full((5, 2), np.nan))
    page = render.render(dataclasses.replace(report, sample=nan), "html")
    _self_contained(page)
    assert page.count("<polygon") == 2  # two flat histograms, no error
    empty = dataclasses.replace(report.sample, values=np.empty((0, 2)))
    assert "No sample of the items" in render.render(dataclasses.replace(report, sample=empty), "html")
