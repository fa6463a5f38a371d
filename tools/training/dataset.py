"""Labelled rows from the user's files: CSV, JSONL or Parquet, with the columns named by options.

A `Source` is one file and the columns to read from it. A categories source gives each row a title and a
category path (any depth: one column split on a separator, or one column per level); optional columns give a
description, a brand, tags (a list column, or one column per tag group) and the split. A tags source (a second
file) gives titles and tags only. Every problem is a `DataError` naming the file, the row and the column — never
a traceback.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from stream.files import (
    JSONL_SUFFIXES,
    csv_dict_reader,
    data_suffix,
    first_non_utf8_line,
    jsonl_objects,
    not_utf8_message,
    open_text,
)

SPLITS = ("train", "dev", "test")


class DataError(ValueError):
    """A training file cannot be used as it is: which file, row and column, and why."""


def slug(text: str) -> str:
    """The form of a tag value or a category-path element inside ids: `Navy Blue` → `navy-blue`."""
    text = text.lower().replace("&", " and ")
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "x"


@dataclass(frozen=True)
class Columns:
    """Which column holds what. `category` is required for a categories source, not for a tags source."""

    title: str = "title"
    category: str | None = "category"
    separator: str = ">"
    # one column per level instead (e.g. segment, family, class): the path is their values in order, up to the
    # first blank one; when set, `category` is not read
    category_levels: tuple[str, ...] = ()
    description: str | None = None
    brand: str | None = None
    tags: str | None = None  # a list column: a JSON/Parquet list, or text split on `tags_separator`
    tags_separator: str = "|"
    tag_groups: tuple[tuple[str, str], ...] = ()  # (group, column): one value of the group per row
    split: str | None = None
    skip_blank_category: bool = False  # drop rows without a category path instead of failing


@dataclass(frozen=True)
class Source:
    path: Path
    columns: Columns


@dataclass
class Row:
    """One labelled row as read (before de-duplication)."""

    where: str  # "file, row n" for messages
    title: str
    description: str = ""
    brand: str = ""
    path: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    tag_groups: frozenset[str] = field(default_factory=frozenset)  # groups this row carries a value for
    split: str | None = None


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row number, record) of a CSV/TSV (header = row 1), JSONL (line number) or Parquet (1-based) file; CSV, TSV
    and JSONL may be gzipped (`.csv.gz`)."""
    suffix = data_suffix(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if suffix in JSONL_SUFFIXES:
        try:
            yield from jsonl_objects(path)
        except (ValueError, OSError, EOFError) as exc:  # OSError, EOFError: a broken gzip
            raise DataError(str(exc) if isinstance(exc, ValueError) else f"{path}: {exc}") from None
    elif suffix in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        except ImportError:
            raise DataError(f"{path}: reading Parquet needs the pyarrow package") from None
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds for a bad file
            raise DataError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
        for n, rec in enumerate(table.to_pylist(), 1):
            yield n, rec
    else:
        n = 1
        try:
            with open_text(path) as f:
                for n, rec in enumerate(csv_dict_reader(f, path), 2):
                    yield n, rec
        except UnicodeDecodeError:
            raise DataError(not_utf8_message(path, *(first_non_utf8_line(path) or (n, 0, 0)))) from None
        except (csv.Error, OSError, EOFError) as exc:
            raise DataError(f"{path}, after row {n}: not a readable CSV ({exc})") from None


def _scalar(rec: dict[str, Any], column: str, where: str) -> Any:
    """A record's value where one text is expected: a JSON object or list there is a mistake in the file, never a
    label (it became the class "{'a': 1}")."""
    value = rec.get(column)
    if isinstance(value, dict | list | tuple):
        kind = "an object" if isinstance(value, dict) else "a list"
        raise DataError(f"{where}, column {column!r}: {kind} where a text is expected")
    return value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value != value:  # NaN from Parquet/pandas
        return ""
    return " ".join(str(value).split())


def _tag_list(value: Any, separator: str) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple):
        items = [str(v) for v in value if v is not None]  # a null in a Parquet list is no tag ("tag:none")
    else:
        text = str(value).strip()
        if text.startswith("["):
            try:
                items = [str(v) for v in orjson.loads(text)]
            except orjson.JSONDecodeError:
                items = text.split(separator)
        else:
            items = text.split(separator)
    return [t.strip() for t in items if t and t.strip()]


def tag_name(tag: str) -> str:
    """A tag as the model names it: `group:value` slugged (`Gender: Men` → `gender:men`); no group, `tag:value`."""
    group, sep, value = tag.partition(":")
    if not sep:
        group, value = "tag", tag
    return f"{slug(group)}:{slug(value)}"


def _category_path(rec: dict[str, Any], cols: Columns, where: str) -> tuple[str, ...]:
    if cols.category_levels:
        levels = [_text(_scalar(rec, c, where)) for c in cols.category_levels]
        return tuple(levels[: levels.index("")] if "" in levels else levels)
    raw = rec.get(cols.category or "")
    if isinstance(raw, dict):
        raise DataError(f"{where}, column {cols.category!r}: an object where a category path is expected")
    if isinstance(raw, list | tuple):
        bad = [i for i, x in enumerate(raw) if x is None or isinstance(x, dict | list | tuple)]
        if bad:  # a null level would shift every level below it up one
            raise DataError(f"{where}, column {cols.category!r}: level {bad[0] + 1} of the path is not a text")
    if isinstance(raw, str) and raw.lstrip().startswith("["):
        # a list written as JSON text in a CSV cell: its items are the levels; one item is a path to split
        # (Flipkart's `product_category_tree` is `["Clothing >> Women's Clothing >> …"]`)
        try:
            items = orjson.loads(raw)
        except orjson.JSONDecodeError:
            items = None
        if isinstance(items, list):
            raw = items[0] if len(items) == 1 and isinstance(items[0], str) else items
    parts = raw if isinstance(raw, list | tuple) else _text(raw).split(cols.separator)
    return tuple(p for p in (_text(x) for x in parts) if p)


def read(source: Source, *, categories: bool) -> list[Row]:
    """Every usable row of a source. Raises DataError for a missing column, an empty file, a blank category
    path (unless the columns say to skip those) or a split value other than train/dev/test. Rows with a blank
    title are skipped."""
    cols = source.columns
    path = source.path
    needed = [cols.title]
    if categories:
        if cols.category_levels:
            needed += list(cols.category_levels)
        elif cols.category:
            needed.append(cols.category)
        else:
            raise DataError(f"{path}: a category column is required")
    category_name = ", ".join(cols.category_levels) if cols.category_levels else cols.category
    optional = [c for c in (cols.description, cols.brand, cols.tags, cols.split) if c]
    optional += [c for _, c in cols.tag_groups]
    rows: list[Row] = []
    checked = False
    skipped = 0
    present: set[str] = set()  # the optional columns seen (a JSONL record may leave out what it lacks)
    for n, rec in _records(path):
        where = f"{path}, row {n}"
        if not checked:
            have = ", ".join(str(c) for c in list(rec)[:15])
            missing = [c for c in needed if c not in rec]
            if missing:
                raise DataError(f"{path}: no column {missing[0]!r} (columns: {have})")
            checked = True
        if len(present) < len(optional):
            present.update(c for c in optional if c in rec)
        title = _text(_scalar(rec, cols.title, where))
        if not title:
            continue
        row = Row(where, title)
        if categories:
            row.path = _category_path(rec, cols, where)
            if not row.path:
                if cols.skip_blank_category:
                    skipped += 1
                    continue
                raise DataError(
                    f"{where}, column {category_name!r}: the category path is blank "
                    "(--skip-blank-categories drops such rows)"
                )
        if cols.description:
            row.description = _text(_scalar(rec, cols.description, where))
        if cols.brand:
            row.brand = _text(_scalar(rec, cols.brand, where))
        tags: list[str] = []
        if cols.tags:
            tags += [tag_name(t) for t in _tag_list(rec.get(cols.tags), cols.tags_separator)]
        for group, column in cols.tag_groups:
            value = _text(_scalar(rec, column, where))
            if value:
                tags.append(f"{slug(group)}:{slug(value)}")
        row.tags = tuple(dict.fromkeys(tags))
        row.tag_groups = frozenset(t.split(":", 1)[0] for t in row.tags)
        if cols.split:
            value = _text(_scalar(rec, cols.split, where)).lower()
            if value not in SPLITS:
                raise DataError(
                    f"{where}, column {cols.split!r}: split must be one of {', '.join(SPLITS)}, got {value!r}"
                )
            row.split = value
        rows.append(row)
    if not checked:
        raise DataError(f"{path}: the file has no rows")
    absent = [c for c in optional if c not in present]
    if absent:
        raise DataError(f"{path}: no column {absent[0]!r} in any row (columns of the first: {have})")
    if not rows:
        raise DataError(f"{path}: no row has a title in column {cols.title!r}")
    return rows
