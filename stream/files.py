"""Reading listing files: JSON Lines (one object a line) and delimited text (CSV, TSV, `;` or `|`), either of them
possibly gzipped (`listings.jsonl.gz`). What each use does with a CSV row differs (producing, training)."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import orjson

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")
DELIMITERS = (",", "\t", ";", "|")
FIELD_LIMIT = 64 << 20  # characters in one CSV field (Python's default, 128 KiB, is less than some descriptions)


def data_suffix(path: Path) -> str:
    """A data file's format suffix, lower-cased, looking through a `.gz`: `x.CSV.gz` → `.csv`."""
    suffixes = [s.lower() for s in Path(path).suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def open_text(path: Path) -> IO[str]:
    """A data file as text for the csv module, gunzipped when its name ends in `.gz`: UTF-8 with or without a
    byte-order mark (Excel's "CSV UTF-8" writes one), or UTF-16 when it starts with that encoding's byte-order mark
    (Excel's "Unicode Text") or, without one, with two ASCII characters as UTF-16 (some exporters write no mark)."""
    raw = open_binary(path)
    encoding = text_encoding(raw.read(4))
    raw.seek(0)
    return io.TextIOWrapper(raw, encoding=encoding, newline="")


def text_encoding(head: bytes) -> str:
    """The encoding of a text file that starts with `head` (its first 4 bytes): UTF-16 by its byte-order mark, or by
    the zero bytes of two ASCII characters (a header's first two: a UTF-8 text never holds a zero byte), else UTF-8."""
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        return "utf-16"
    if len(head) == 4 and head[0] and head[2] and not head[1] and not head[3]:
        return "utf-16-le"
    if len(head) == 4 and head[1] and head[3] and not head[0] and not head[2]:
        return "utf-16-be"
    return "utf-8-sig"


def open_binary(path: Path) -> IO[bytes]:
    """A data file's bytes, gunzipped when its name ends in `.gz`."""
    path = Path(path)
    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else path.open("rb")


# the first bytes of files that are not text: read as CSV they gave "no rows" or a garbled header
BINARY_MAGIC = {
    b"PK\x03\x04": "a ZIP archive (an .xlsx or .ods spreadsheet?)",
    b"\xd0\xcf\x11\xe0": "an Excel .xls spreadsheet",
    b"PAR1": "a Parquet file (name it .parquet)",
    b"\x28\xb5\x2f\xfd": "a zstd-compressed file",
    b"BZh": "a bzip2-compressed file",
    b"\xfd7zXZ": "an xz-compressed file",
}


def not_text(path: Path) -> str:
    """What a data file read as text (CSV, TSV, JSONL, gzipped or not) is instead, when its first bytes say it is
    not text; "" otherwise."""
    try:
        with open_binary(path) as f:
            head = f.read(8)
    except (OSError, EOFError) as exc:  # a broken gzip
        return f"not readable ({exc})"
    for magic, what in BINARY_MAGIC.items():
        if head.startswith(magic):
            return what
    utf16 = text_encoding(head[:4]).startswith("utf-16")  # its zero bytes are text
    return "binary, not text" if b"\x00" in head and not utf16 else ""


def first_non_utf8_line(path: Path) -> tuple[int, int, int] | None:
    """(line number, column, byte) of the first byte that is not UTF-8 in a data file, or None."""
    with open_binary(path) as f:
        for n, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return n, exc.start + 1, line[exc.start]
    return None


def not_utf8_message(path: Path, line: int, column: int, byte: int) -> str:
    """What a reader says of a file's first byte that is not UTF-8 (`produce` and `listings train` alike)."""
    return (
        f"{path}, line {line}, column {column}: not UTF-8 (byte 0x{byte:02x}); convert the file first, "
        "e.g. iconv -f cp1252 -t utf-8"
    )


class _CheckedReader(csv.DictReader):
    """A DictReader that refuses a row with more fields than the header: an unquoted delimiter in a value shifts
    every later column of that row (read as is, a title's tail became the category)."""

    _header_checked = False
    lines_before = 0  # blank lines before the header, which the reader never saw

    @property
    def file_line(self) -> int:
        """The file's line number where the row just read ends (blank lines counted)."""
        return self.line_num + self.lines_before

    @property  # type: ignore[override]
    def fieldnames(self) -> list[str] | None:
        names = csv.DictReader.fieldnames.fget(self)  # type: ignore[attr-defined]
        if names is not None and not self._header_checked:
            self._header_checked = True
            names = [(n or "").strip() for n in names]  # "title, category": ' category'
            twice = sorted({n for n in names if n and names.count(n) > 1})
            if twice:
                raise csv.Error(f"the header names column {twice[0]!r} twice")
            self._fieldnames = names
        return names

    @fieldnames.setter
    def fieldnames(self, value: list[str] | None) -> None:
        self._fieldnames = value

    def __next__(self) -> dict[str, Any]:
        try:
            row = super().__next__()
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):
                raise csv.Error(
                    "a quoted value runs to the end of the file: a '\"' opened in the next row is never closed"
                ) from None
            raise
        extra = row.get(None)  # type: ignore[call-overload]
        if extra is not None:
            fields = len(self.fieldnames or ()) + len(extra)
            raise csv.Error(
                f"line {self.file_line} has {fields} fields, the header {len(self.fieldnames or ())}: a value with an "
                f"unquoted {self.reader.dialect.delimiter!r} in it? Quote such values"
            )
        return row


def csv_dict_reader(f: IO[str], path: Path) -> _CheckedReader:
    """Rows of a delimited text file as dicts. The delimiter is a tab for `.tsv`/`.tab`, else whichever of `,`, tab,
    `;` and `|` its header line (the first non-blank one) uses most (`,` when it has none). Strict: a quote left
    open (which would swallow the rest of the file into one value) or a row with more fields than the header is a
    csv.Error naming the line."""
    csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))
    header = f.readline()
    skipped = 0
    while header and not header.strip():  # blank lines before the header
        header = f.readline()
        skipped += 1
    if data_suffix(path) in (".tsv", ".tab"):
        delimiter = "\t"
    else:
        delimiter = max(DELIMITERS, key=header.count) if any(d in header for d in DELIMITERS) else ","
    reader = _CheckedReader(_chain(header, f), delimiter=delimiter, strict=True)
    reader.lines_before = skipped
    return reader


def _chain(first: str, rest: IO[str]) -> Iterator[str]:
    if first:
        yield first
    yield from rest


def jsonl_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of every non-blank line; ValueError naming the file and line for a bad one."""
    with open_binary(path) as f:
        for n, line in enumerate(f, 1):
            if n == 1:
                line = line.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark (some editors write one)
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as bad:  # orjson's own words named "line 1" of the line alone
                    raise ValueError(not_utf8_message(path, n, bad.start + 1, line[bad.start])) from None
                if n == 1 and line.lstrip().startswith(b"["):
                    raise ValueError(f"{path}, line 1: a JSON array; JSONL holds one JSON object per line") from None
                raise ValueError(f"{path}, line {n}: not JSON ({exc})") from None
            if not isinstance(obj, dict):
                if isinstance(obj, list) and n == 1:
                    raise ValueError(f"{path}, line 1: a JSON array; JSONL holds one JSON object per line")
                raise ValueError(f"{path}, line {n}: not a JSON object")
            yield n, obj
