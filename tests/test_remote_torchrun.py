"""torchrun over data in a bucket: two processes read disjoint byte ranges of the object (each
rank's GETs counted on its own port of the local S3 server) and give the one-process report."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import evalloss
from evalloss.io import remote
from tests import lm
from tests.s3server import S3Server
from tests.test_distributed import DRIVER, _same, _torchrun
from tests.test_remote import BUCKET, s3, tabular, upload  # noqa: F401 - s3: the fixture

LM = f"{Path(lm.__file__)}:Causal"


@pytest.mark.slow
def test_two_ranks_read_disjoint_ranges_of_each_object(
    s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    ckpts, _, _ = tabular(tmp_path)
    x = torch.round(torch.randn(20_000, 3, generator=torch.Generator().manual_seed(3)), decimals=4)
    y = torch.randint(0, 3, (20_000,), generator=torch.Generator().manual_seed(4))
    rows = (f"{a!r},{b!r},{c!r},{t}" for (a, b, c), t in zip(x.tolist(), y.tolist(), strict=True))
    csv = tmp_path / "big.csv"
    csv.write_text("a,b,c,y\n" + "\n".join(rows) + "\n")
    columns = {"a": x[:, 0].numpy(), "b": x[:, 1].numpy(), "c": x[:, 2].numpy(), "y": y.numpy()}
    parquet = tmp_path / "big.parquet"
    pq.write_table(pa.table(columns), parquet, row_group_size=2_000)
    tokens = np.random.default_rng(5).integers(0, lm.VOCAB, size=300_001).astype(np.uint16)
    tokens.tofile(tmp_path / "big.bin")
    torch.manual_seed(0)
    evalloss.save(lm.Causal(), tmp_path / "lm.safetensors", loss="causal-lm")
    uris = {p.suffix: upload(s3, p, f"tr/{p.name}") for p in (csv, parquet, tmp_path / "big.bin")}
    models = [upload(s3, c, f"tr/{c.name}") for c in ckpts]
    lm_uri = upload(s3, tmp_path / "lm.safetensors", "tr/lm.safetensors")
    common = ["--format", "json", "--precision", "float64", "--no-hash"]
    cases = {
        "csv": ["compare", *models, "--data", uris[".csv"], *common],
        "parquet": ["compare", *models, "--data", uris[".parquet"], *common],
        "bin": ["compare", lm_uri, "--model", LM, "--data", uris[".bin"], "--context", "64",
                *common],
    }  # fmt: skip
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    monkeypatch.setenv("EVALLOSS_TEST_ENDPOINTS", f"{s3.urls['rank0']},{s3.urls['rank1']}")
    done = _torchrun(DRIVER, tmp_path / "cases.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    zero = json.loads((tmp_path / "cases.json.0.out").read_text())
    local = {".csv": csv, ".parquet": parquet, ".bin": tmp_path / "big.bin"}
    for name, suffix in (("csv", ".csv"), ("parquet", ".parquet"), ("bin", ".bin")):
        assert zero[name]["code"] in (None, 0), zero[name]["stderr"]
        many = json.loads(zero[name]["stdout"].replace(f"s3://{BUCKET}/tr", str(tmp_path)))
        one = evalloss.compare(
            [tmp_path / "lm.safetensors"] if name == "bin" else ckpts, data=local[suffix],
            precision="float64", no_hash=True,
            **({"model": LM, "context": 64} if name == "bin" else {}),
        ).to_dict()  # fmt: skip
        _same(one, many)
        key, size = f"/{BUCKET}/tr/{local[suffix].name}", local[suffix].stat().st_size
        shares = [s3.bytes_read(key, size, f"rank{r}") for r in (0, 1)]
        for share in shares:  # about half each, plus the header, footer, cut points
            assert size * 0.4 < share < size * 0.5 + 4 * remote.BUFFER, (name, shares, size)
        if name == "csv":  # the data ranges: disjoint, together the whole data region
            spans = sorted(_span(r.range) for r in s3.gets(key) if _span(r.range)[0] > 0
                           and _span(r.range)[1] - _span(r.range)[0] > remote.BUFFER)  # fmt: skip
            assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), spans
            assert spans[-1][1] == size and spans[0][0] == len("a,b,c,y\n")


def _span(header: str | None) -> tuple[int, int]:
    """A Range header's [start, end)."""
    first, last = (header or "bytes=0-0").removeprefix("bytes=").split("-")
    return int(first), int(last) + 1
