"""gs:// with pyarrow's own GCS filesystem, offline: the filesystem is made as the installed
pyarrow takes it (was: ``TypeError ... 'retry_limit_seconds'``, exit 3), and every failure is
one exit-2 line naming the URI: no credentials, a store that says 404 or 403 (a local HTTP
server on 127.0.0.1 speaking the JSON API's errors, reached through ``STORAGE_EMULATOR_HOST``
as Google's own clients are), an unreachable one. Nothing leaves 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import evalloss
from evalloss.io import remote
from tests.conftest import run

pytest.importorskip("pyarrow._gcsfs", reason="this pyarrow has no GCS filesystem")


class _Store(http.server.BaseHTTPRequestHandler):
    """The JSON API's answers for one bucket ``b`` holding nothing: ``status`` for objects."""

    status = 404

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        bucket = re.fullmatch(r"/storage/v1/b/([^/?]+)(\?.*)?", self.path)
        code = (200 if bucket[1] == "b" else 404) if bucket else type(self).status
        body = json.dumps({"kind": "storage#bucket", "name": "b"} if code == 200 else
                          {"error": {"code": code, "message": f"said {code}"}}).encode()  # fmt: skip
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def gcs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[type[_Store]]:
    """A fresh filesystem cache, retries cut to a second, no credentials anywhere."""
    monkeypatch.setattr(remote, "_FILESYSTEMS", {})
    monkeypatch.setattr(remote, "RETRY_SECONDS", 1)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("GCE_METADATA_ROOT", "127.0.0.1:1")  # no metadata server either
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    handler = type("Store", (_Store,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    handler.url = f"http://127.0.0.1:{server.server_port}"  # type: ignore[attr-defined]
    yield handler
    server.shutdown()
    server.server_close()


def _checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "m.safetensors"
    evalloss.save(torch.nn.Linear(1, 1), path)
    return path


def _refused(tmp_path: Path, uri: str, *parts: str) -> None:
    result = run("compare", _checkpoint(tmp_path), "--loss", "mse", "--data", uri)
    assert result.exit_code == 2, (result.stderr, result.stdout)
    assert result.stderr.startswith(f"evalloss: error: {uri}: "), result.stderr
    assert result.stderr.count("\n") == 1 and result.stdout == ""
    for part in parts:
        assert part in result.stderr, result.stderr


def test_no_credentials_is_one_line(gcs: type[_Store], tmp_path: Path) -> None:
    _refused(tmp_path, "gs://b/d.csv", "no credentials for Google Cloud Storage",
             "GOOGLE_APPLICATION_CREDENTIALS")  # fmt: skip


def test_a_missing_object_and_a_missing_bucket(
    gcs: type[_Store], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)  # type: ignore[attr-defined]
    _refused(tmp_path, "gs://b/d.csv", "no such object")
    _refused(tmp_path, "gs://other/d.parquet", "no such bucket 'other'")


def test_access_denied_is_one_line(
    gcs: type[_Store], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)  # type: ignore[attr-defined]
    gcs.status = 403
    _refused(tmp_path, "gs://b/d.csv", "access denied")


def test_an_unreachable_store_is_one_line(
    gcs: type[_Store], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:1")
    _refused(tmp_path, "gs://b/d.csv", "cannot reach the storage server")
