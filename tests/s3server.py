"""A local S3: moto's server on 127.0.0.1, with every request recorded (tests and benchmarks).

One moto application is served on one port per name (moto's buckets live in the process, so
every port sees the same objects); each request is recorded with the port's name, so a test
that gives each torchrun rank its own port counts each rank's GETs and bytes. `die_on` makes
the server drop the connection in the middle of a GET of one key and stop listening: a server
that dies mid-read; `flaky` answers a few GETs with 503 (a transient error the client retries).
Nothing here touches the network beyond 127.0.0.1.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import BaseWSGIServer, make_server


@dataclass(frozen=True)
class Request:
    port: str  # the name of the port it came in on
    method: str
    path: str  # /bucket/key
    range: str | None  # the Range header, as sent: bytes=a-b


@dataclass
class S3Server:
    """``S3Server(("a", "b")).start()``: one endpoint URL per name in ``urls``."""

    names: Iterable[str] = ("main",)
    requests: list[Request] = field(default_factory=list)
    urls: dict[str, str] = field(default_factory=dict)
    _servers: list[BaseWSGIServer] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)
    _die_on: str | None = None
    _flaky: dict[str, int] = field(default_factory=dict)

    def start(self) -> S3Server:
        app = DomainDispatcherApplication(create_backend_app)
        for name in self.names:
            server = make_server("127.0.0.1", 0, self._recording(app, name), True,
                                 request_handler=MotoRequestHandler)  # fmt: skip
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
            self.urls[name] = f"http://127.0.0.1:{server.server_address[1]}"
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        self._servers.clear()

    def die_on(self, path: str) -> None:
        """The next GET of ``/bucket/key`` sends half its body, then the server is gone."""
        self._die_on = path

    def flaky(self, path: str, times: int) -> None:
        """The next ``times`` GETs of ``/bucket/key`` answer 503 Slow Down (transient)."""
        self._flaky[path] = times

    def gets(self, path: str, port: str | None = None) -> list[Request]:
        return [r for r in self.requests
                if r.method == "GET" and r.path == path and port in (None, r.port)]  # fmt: skip

    def bytes_read(self, path: str, size: int, port: str | None = None) -> int:
        """The bytes the GETs of ``path`` asked for (a GET without a Range: the object)."""
        total = 0
        for r in self.gets(path, port):
            if r.range is None:
                total += size
            else:
                first, last = r.range.removeprefix("bytes=").split("-")
                total += min(int(last or size - 1), size - 1) - int(first) + 1
        return total

    def _recording(self, app: Any, name: str) -> Any:
        def recorded(environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
            request = Request(name, environ["REQUEST_METHOD"], environ.get("PATH_INFO", ""),
                              environ.get("HTTP_RANGE"))  # fmt: skip
            self.requests.append(request)
            if request.method == "GET" and request.path == self._die_on:
                return self._dying(app, environ, start_response)
            if request.method == "GET" and self._flaky.get(request.path, 0) > 0:
                self._flaky[request.path] -= 1
                start_response("503 Slow Down", [("Content-Type", "application/xml")])
                return iter([b"<Error><Code>SlowDown</Code><Message>Reduce your request rate"
                             b"</Message></Error>"])  # fmt: skip
            return iter(app(environ, start_response))

        return recorded

    def _dying(self, app: Any, environ: dict[str, Any], start_response: Any) -> Iterator[bytes]:
        body = b"".join(app(environ, start_response))
        threading.Thread(target=self.stop, daemon=True).start()
        yield body[: len(body) // 2]
        raise ConnectionAbortedError("the test's S3 server died mid-read")
