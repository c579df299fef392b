"""Object storage: ``s3://``, ``gs://``, ``hf://`` (and any fsspec scheme) read as a disk is.

A path with a scheme (``scheme://...``) is a URI; anything else is a local path and never
comes here (callers branch on `is_uri`, so the local code paths stay as they were). S3 and
GCS go through pyarrow's native filesystems (the AWS SDK's credential chain; ``AWS_ENDPOINT_URL_S3``
or ``AWS_ENDPOINT_URL`` for an S3-compatible store; the SDK's standard retry policy for
transient errors), any other scheme through fsspec wrapped as a pyarrow filesystem.

`open_input` gives a seekable binary file over the object: each read is one ranged GET, so a
reader fetches only the bytes it reads. `stamp` gives (size, version): the version is the
object's ETag where the store gives one (it changes with every write, unlike a modification
time of one-second resolution), else its modification time. Every error of the store or the
network becomes one `EvallossError` line naming the URI (missing bucket, missing object,
access denied, unreachable server): the caller says which kind (`DataError`,
`CheckpointError`).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from evalloss.errors import DataError, EvallossError, shown

if TYPE_CHECKING:
    import pyarrow.fs as pafs

URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
ATTEMPTS = 4  # per request, the AWS SDK's standard retry strategy (exponential backoff)
CONNECT_SECONDS = 5.0
RETRY_SECONDS = 30  # GCS: how long transient errors are retried
BUFFER = 1 << 16  # small reads (a header line) are served from one 64 KiB GET
EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "hf": "hf"}
Kind = type[EvallossError]
_DENIED = re.compile(r"ACCESS_DENIED|AccessDenied|InvalidAccessKeyId|SignatureDoesNotMatch|"
                     r"\b403\b|[Ff]orbidden|[Pp]ermission denied")  # fmt: skip

_UNREACHABLE = re.compile(r"network_connection|curlcode|curl error|could not connect|"
                          r"couldn't connect|connection refused")  # fmt: skip
_FILESYSTEMS: dict[tuple[str, ...], Any] = {}  # by scheme, bucket and the settings below
_SETTINGS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION",
             "AWS_PROFILE", "AWS_ACCESS_KEY_ID")  # fmt: skip
_GCS_SETTINGS = ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS")
_LAST: dict[str, tuple[int, int]] = {}  # every URI's stamp when evalloss last looked


def is_uri(path: object) -> bool:
    """Whether ``path`` is a URI (``scheme://...``), not a local path."""
    return isinstance(path, str) and URI.match(path) is not None


def locate(uri: str, kind: Kind = DataError) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem that holds ``uri`` and the object's path in it."""
    scheme, rest = uri.split("://", 1)
    scheme = scheme.lower()
    bucket = rest.split("/", 1)[0]
    if not bucket or rest.endswith("/"):
        raise kind("expected scheme://bucket/path/to/object", path=uri)
    names = {"s3": _SETTINGS, "s3a": _SETTINGS, "gs": _GCS_SETTINGS, "gcs": _GCS_SETTINGS}
    settings = [os.environ.get(k, "") for k in names.get(scheme, ())]
    key = (scheme, bucket if scheme in ("s3", "s3a") else "", *settings)
    if key not in _FILESYSTEMS:
        _FILESYSTEMS[key] = _filesystem(scheme, bucket, uri, kind)
    return _FILESYSTEMS[key], rest


def _filesystem(scheme: str, bucket: str, uri: str, kind: Kind) -> Any:
    try:
        if scheme in ("s3", "s3a"):
            return _s3(bucket)
        if scheme in ("gs", "gcs"):
            return _gcs()
        import fsspec
        from pyarrow.fs import FSSpecHandler, PyFileSystem

        return PyFileSystem(FSSpecHandler(fsspec.filesystem(scheme)))
    except ImportError as exc:
        extra = EXTRAS.get(scheme)
        hint = f"pip install 'evalloss[{extra}]'" if extra else f"install fsspec's {scheme} package"
        raise kind(f"reading {scheme}:// needs a package that is missing: {hint}",
                   path=uri) from exc  # fmt: skip
    except ValueError as exc:  # fsspec: "Protocol not known"
        raise kind(f"no filesystem is known for {scheme}:// ({_first(exc)})", path=uri) from exc


def _gcs() -> Any:
    """pyarrow's GCS with Application Default Credentials and a bound on retries;
    ``STORAGE_EMULATOR_HOST`` (as Google's own clients read it) points at a local emulator."""
    from datetime import timedelta

    from pyarrow.fs import GcsFileSystem

    options: dict[str, Any] = {"retry_time_limit": timedelta(seconds=RETRY_SECONDS)}
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        parts = urlsplit(emulator if "://" in emulator else f"http://{emulator}")
        options.update(endpoint_override=parts.netloc, scheme=parts.scheme, anonymous=True)
    return GcsFileSystem(**options)


def _s3(bucket: str) -> Any:
    """pyarrow's S3 with the standard credential chain, ``AWS_ENDPOINT_URL[_S3]`` honoured
    (pyarrow itself ignores it), and the standard retry strategy."""
    from pyarrow.fs import AwsStandardS3RetryStrategy, S3FileSystem, resolve_s3_region

    options: dict[str, Any] = {
        "retry_strategy": AwsStandardS3RetryStrategy(max_attempts=ATTEMPTS),
        "connect_timeout": CONNECT_SECONDS,
    }
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        options["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
        options["scheme"] = parts.scheme
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region is None and not endpoint:
        try:
            region = resolve_s3_region(bucket)
        except OSError:  # the request itself says what is wrong
            region = None
    options["region"] = region or "us-east-1"
    return S3FileSystem(**options)


def stamp(uri: str, kind: Kind = DataError) -> tuple[int, int]:
    """(size, version) of the object now, the version a number made from its ETag (else its
    modification time); (0, 0) if it is gone. One HEAD request."""
    fs, path = locate(uri, kind)
    try:
        with fs.open_input_file(path) as f:
            now = _stamp_of(fs, path, f)
    except FileNotFoundError:
        now = (0, 0)
    except (OSError, ValueError) as exc:
        raise failure(uri, exc, kind) from exc
    _LAST[uri] = now
    return now


def _stamp_of(fs: Any, path: str, f: Any) -> tuple[int, int]:
    meta = {k.lower(): v for k, v in (f.metadata() or {}).items()}
    version = meta.get("etag") or meta.get("x-goog-generation")
    handler: Any = getattr(fs, "handler", None)
    if not version and hasattr(handler, "fs"):  # fsspec: its info may name a version
        info = handler.fs.info(path)
        found = [info.get(k) for k in ("ETag", "etag", "blob_id", "generation", "VersionId")]
        version = next((str(v) for v in found if v), None)
    if not version:
        info = fs.get_file_info(path)
        version = str(info.mtime_ns)
    text = version.decode() if isinstance(version, bytes) else str(version)
    return int(f.size()), int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


def size(uri: str, kind: Kind = DataError) -> int:
    """The object's size in bytes (an error if it is not there)."""
    found = stamp(uri, kind)
    if found == (0, 0):
        raise failure(uri, FileNotFoundError(uri), kind)
    return found[0]


def open_input(uri: str, kind: Kind = DataError) -> io.BufferedReader:
    """A seekable binary file over the object: each read past the small buffer is one ranged
    GET. Refused if the object changed since `stamp` last looked at it."""
    return io.BufferedReader(_Object(open_native(uri, kind), uri, kind), buffer_size=BUFFER)


def open_native(uri: str, kind: Kind = DataError) -> Any:
    """pyarrow's own random-access file over the object, unbuffered (for pyarrow's readers:
    each read one ranged GET; its errors are pyarrow's, `failure` names them)."""
    fs, path = locate(uri, kind)
    try:
        native = fs.open_input_file(path)
        now = _stamp_of(fs, path, native)
    except (OSError, ValueError) as exc:
        raise failure(uri, exc, kind) from exc
    if _LAST.setdefault(uri, now) != now:
        native.close()
        raise changed(uri, kind)
    return native


def open_binary(path: str, kind: Kind = DataError, *, buffered: bool = True) -> Any:
    """``open(path, "rb")`` for a local path, `open_input` for a URI (``buffered=False``:
    each read exactly the bytes asked for, one ranged GET, for readers of large ranges)."""
    if not is_uri(path):
        return open(path, "rb")
    if buffered:
        return open_input(path, kind)
    return _Object(open_native(path, kind), path, kind)


@contextmanager
def arrow_input(path: str, kind: Kind = DataError) -> Iterator[Any]:
    """What to give pyarrow's readers: a local path as it is, an object as an open file."""
    if not is_uri(path):
        yield path
        return
    with open_native(path, kind) as f:
        try:
            yield f
        except OSError as exc:  # pyarrow's, from reading the object
            raise failure(path, exc, kind) from exc


def changed(uri: str, kind: Kind = DataError) -> EvallossError:
    return kind("changed while it was being read (its ETag or size): the figures would match "
                "neither version; run again on an object that stays put", path=uri)  # fmt: skip


class _Object(io.RawIOBase):
    """pyarrow's input file over an object as a raw Python stream; errors named."""

    def __init__(self, native: Any, uri: str, kind: Kind) -> None:
        self._native, self._uri, self._kind = native, uri, kind

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        try:
            return int(self._native.readinto(buffer))
        except (OSError, ValueError) as exc:
            raise failure(self._uri, exc, self._kind) from exc

    def seek(self, offset: int, whence: int = 0) -> int:
        try:
            return int(self._native.seek(offset, whence))
        except (OSError, ValueError) as exc:
            raise failure(self._uri, exc, self._kind) from exc

    def tell(self) -> int:
        return int(self._native.tell())

    def close(self) -> None:
        if not self.closed:
            self._native.close()
        super().close()


def failure(uri: str, exc: BaseException, kind: Kind = DataError) -> EvallossError:
    """One line naming ``uri`` for an error of the store or the network."""
    text = str(exc)
    lower = text.lower()
    if isinstance(exc, FileNotFoundError) or "nosuchkey" in lower or "not found" in lower:
        return kind(_missing(uri), path=uri)
    if "oauth2 access token" in lower or "could not load the default credentials" in lower:
        return kind("no credentials for Google Cloud Storage: set GOOGLE_APPLICATION_CREDENTIALS "
                    "or run 'gcloud auth application-default login' "
                    f"({_first(exc)})", path=uri)  # fmt: skip
    if _UNREACHABLE.search(lower) or isinstance(exc, ConnectionError):
        return kind(f"cannot reach the storage server ({_first(exc)})", path=uri)
    if isinstance(exc, PermissionError) or _DENIED.search(text):
        return kind("access denied: check the credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, ...) "
                    f"and the bucket's policy ({_first(exc)})", path=uri)  # fmt: skip
    return kind(f"cannot read it ({_first(exc)})", path=uri)


def _missing(uri: str) -> str:
    """"no such object", or "no such bucket" where the bucket itself is missing."""
    from pyarrow.fs import FileType

    try:
        fs, path = locate(uri)
        bucket = path.split("/", 1)[0]
        if fs.get_file_info(bucket).type == FileType.NotFound:
            return f"no such bucket {shown(bucket)}"
        if fs.get_file_info(path).type == FileType.Directory:
            return "a folder (prefix), not an object (model folders: copy them to a local disk)"
    except (OSError, ValueError, EvallossError):
        pass
    return "no such object"


def _first(exc: BaseException) -> str:
    """The first line of a third-party message, cut short (it is shown, escaped, as is)."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= 200 else text[:197] + "..."
