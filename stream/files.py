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


def first_non_utf8_line(path: Path) -> tuple[int, int, int] | None:
    """(line number, column, byte) of the first byte that is not UTF-8 in a data file, or None."""
    with open_binary(path) as f:
        for n, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                return n, exc.start + 1, line[exc.start]
    return None


def csv_dict_reader(f: IO[str], path: Path) -> csv.DictReader:
    """Rows of a delimited text file as dicts. The delimiter is a tab for `.tsv`/`.tab`, else whichever of `,`, tab,
    `;` and `|` its header line uses most (`,` when it has none)."""
    csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))
    header = f.readline()
    if data_suffix(path) in (".tsv", ".tab"):
        delimiter = "\t"
    else:
        delimiter = max(DELIMITERS, key=header.count) if any(d in header for d in DELIMITERS) else ","
    return csv.DictReader(_chain(header, f), delimiter=delimiter)


def _chain(first: str, rest: IO[str]) -> Iterator[str]:
    if first:
        yield first
    yield from rest


def jsonl_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of every non-blank line; ValueError naming the file and line for a bad one."""
    with open_binary(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"{path}, line {n}: not JSON ({exc})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{path}, line {n}: not a JSON object")
            yield n, obj
