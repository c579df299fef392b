"""CSV/TSV as text: the header line, one column read whole, and the exact diagnosis of text
the fast reader refused.

`read_header` reads only the first line, as bytes (so a bad byte further down is reported at its
own line, and an absurd first line is never read whole): delimiter, column names, and plain
words for what is not a CSV at all (compressed, Parquet, a checkpoint, UTF-16, CR-only line
ends). `read_column` parses one column whole, exactly (for quantile edges). The rest runs only
after pyarrow failed, to say where and why: `cell_problem` (a cell read as pyarrow reads
numbers), `unclosed_quote`, `unreadable` (bad UTF-8, a huge field).
"""

from __future__ import annotations

import codecs
import csv
import os
import re
from collections.abc import Sequence

from evalloss.errors import DataError
from evalloss.errors import shown as quoted
from evalloss.io import remote

TSV_SUFFIXES = (".tsv", ".tab")
MAX_HEADER_BYTES = 64 << 20  # a longer first line is not a header (and is not read whole)


_BLANKS = " \t"
_NUMBER = re.compile(
    r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)", re.IGNORECASE | re.ASCII
)  # the numbers pyarrow reads


def cell_problem(text: str) -> str | None:
    """Why ``text`` is not a finite number, or None if it is one."""
    value = text.strip(_BLANKS)  # what pyarrow trims around a number, and nothing else
    if not value:
        return "empty value"
    if not _NUMBER.fullmatch(value):  # stricter than float(): no "1_000", no non-ASCII digits
        return f"not a number: {shown(text)}"
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        return f"not a finite number: {shown(text)}"
    return None


def read_column(
    path: str, names: tuple[str, ...], name: str, delimiter: str, header: bool
) -> object:
    """One column of a CSV file, whole: the file is parsed, only that column kept (for the
    quantile edges of ``--slice-bins``, before the pass)."""
    import pyarrow as pa
    from pyarrow import csv as pacsv

    try:
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=list(names), skip_rows=int(header)),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
            convert_options=pacsv.ConvertOptions(include_columns=[name]),
        ).column(name)
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the slice column ({str(exc).splitlines()[0]})",
                        path=path, key=name) from exc  # fmt: skip


def shown(text: str, limit: int = 40) -> str:
    """``text`` quoted for a message, cut to ``limit`` characters (`errors.shown`)."""
    return quoted(text, limit)


def read_header(path: str, has_header: bool) -> tuple[str, tuple[str, ...]]:
    """The delimiter and column names, from the first line only (read as bytes, so a bad byte
    further down is reported at its own line by the reader, not here)."""
    try:
        with remote.open_binary(path) as f:
            raw = f.readline(MAX_HEADER_BYTES + 1)
    except OSError as exc:
        raise DataError(f"cannot read ({exc.strerror or exc})", path=path) from exc
    if len(raw) > MAX_HEADER_BYTES:
        raise DataError(
            f"first line is longer than {MAX_HEADER_BYTES} bytes: not a CSV/TSV file?",
            path=path,
            line=1,
        )
    if not raw:
        raise DataError("empty file: no header and no data rows", path=path)
    try:
        first = re.split("\r|\n", raw.decode("utf-8-sig"), maxsplit=1)[0]
    except UnicodeDecodeError as exc:
        kind = _binary_kind(path)
        if kind:
            raise DataError(f"not a CSV/TSV file: {kind}", path=path) from exc
        raise DataError(
            f"not valid UTF-8 text ({exc.reason} at byte {exc.start + 1})", path=path, line=1
        ) from exc
    if "\x00" in first:
        kind = _binary_kind(path) or "NUL bytes: UTF-16 or binary data, not UTF-8 text"
        raise DataError(f"not a CSV/TSV file: {kind}", path=path, line=1)
    if b"\r" in raw.rstrip(b"\r\n"):  # the whole file read as one line
        raise DataError(
            "line ends are CR only (classic Mac text): convert them to LF or CRLF",
            path=path,
            line=1,
        )
    tsv = path.lower().endswith(TSV_SUFFIXES) or ("\t" in first and "," not in first)
    delimiter = "\t" if tsv else ","
    try:
        names = next(csv.reader([first], delimiter=delimiter, strict=True), None)
    except csv.Error as exc:
        why = {"unexpected end of data": "unterminated quote"}.get(
            str(exc), f"malformed CSV ({exc})"
        )
        if "field larger" in str(exc):
            why = f"a field is longer than {csv.field_size_limit()} characters: not a CSV/TSV file?"
        raise DataError(why, path=path, line=1) from exc
    if not names:
        what = "the header" if has_header else "data"
        raise DataError(f"first line is blank; expected {what}", path=path, line=1)
    numbered = tuple(map(str, range(len(names))))
    columns = tuple(n.strip() for n in names) if has_header else numbered
    return delimiter, columns


_MAGIC = {
    b"\x1f\x8b": "gzip-compressed; decompress it first",
    b"BZh": "bzip2-compressed; decompress it first",
    b"\xfd7zXZ\x00": "xz-compressed; decompress it first",
    b"\x28\xb5\x2f\xfd": "zstd-compressed; decompress it first",
    b"PK\x03\x04": "a zip archive; extract the CSV first",
    b"PAR1": "a Parquet file; name it .parquet or .pq",
    b"\xff\xfe": "UTF-16 text; save it as UTF-8",
    b"\xfe\xff": "UTF-16 text; save it as UTF-8",
}


def _binary_kind(path: str) -> str | None:
    """What a data file that is not text looks like (compressed, Parquet, a checkpoint)."""
    with remote.open_binary(path) as f:
        head = f.read(9)
        size = f.seek(0, os.SEEK_END)
    for magic, kind in _MAGIC.items():
        if head.startswith(magic):
            return kind
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size:
        return "a safetensors checkpoint, not a data set"
    return None


def unclosed_quote(path: str, line: int, fields: Sequence[str]) -> DataError | None:
    """A bad record holding a line break: a quote opened on ``line`` that runs on."""
    spans = breaks("".join(fields))
    if not spans:
        return None
    return DataError(
        f"a quoted field opened on this line runs on to line {line + spans} (unterminated quote?)",
        path=path,
        line=line,
    )


def breaks(text: str) -> int:
    """Line breaks in ``text`` (CRLF counts once)."""
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def unreadable(path: str, delimiter: str) -> DataError | None:
    """The first line the csv module cannot read: bad UTF-8, or a field past its size limit
    (e.g. a binary file, or a huge line without delimiters). Reads bounded chunks."""
    limit = csv.field_size_limit()
    decoder = codecs.getincrementaldecoder("utf-8")()
    sep = delimiter.encode()
    line, run = 1, 0
    with remote.open_binary(path) as f:
        if f.read(3) != codecs.BOM_UTF8:
            f.seek(0)
        while chunk := f.readline(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return DataError(f"not valid UTF-8 text ({exc.reason})", path=path, line=line)
            pieces = chunk.split(sep)
            lengths = [run + len(pieces[0]), *map(len, pieces[1:])]
            if max(lengths) > limit:
                return DataError(
                    f"a field is longer than {limit} characters: not a CSV/TSV file?",
                    path=path,
                    line=line,
                )
            run = lengths[-1]
            if chunk.endswith(b"\n"):
                line, run = line + 1, 0
    return None


def record_line(path: str, row: int, delimiter: str) -> int | None:
    """The 1-based line where data record ``row`` starts (0-based; the header is line 1,
    blank lines skipped as pyarrow skips them, a quoted field may span lines); None where the
    file cannot be read so far."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.reader(f, delimiter=delimiter)
            start, seen = 1, -1  # the header is record -1
            for record in reader:
                if record:
                    if seen == row:
                        return start
                    seen += 1
                start = reader.line_num + 1
    except (OSError, csv.Error, UnicodeDecodeError):
        return None
    return None
