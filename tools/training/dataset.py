"""Labelled rows from the user's files: CSV, JSONL or Parquet, with the columns named by options.

A `Source` is one file and the columns to read from it. A categories source gives each row a title and a
category path (any depth: one column split on a separator, or one column per level); optional columns give a
description, a brand, tags (a list column, or one column per tag group) and the split. A tags source (a second
file) gives titles and tags only. Every problem is a `DataError` naming the file, the row and the column — never
a traceback.
"""

from __future__ import annotations

import csv
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
    """The form of a tag value or a category-path element inside ids: `Navy Blue` → `navy-blue` (the served code's
    rule, which names new leaves with it)."""
    from training import serving

    return serving.classifier().slug(text)


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
    """(row number, record) of a CSV/TSV or JSONL file (the file's line number: for a CSV value that spans lines, the
    line where the record ends) or a Parquet file (1-based); CSV, TSV and JSONL may be gzipped (`.csv.gz`)."""
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
                reader = csv_dict_reader(f, path)
                for rec in reader:
                    n = reader.file_line
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


def _tag_list(value: Any, separator: str, where: str) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, dict):
        raise DataError(f"{where}: an object where a list of tags is expected")
    if isinstance(value, list | tuple):
        if any(isinstance(v, dict | list | tuple) for v in value):  # Parquet list<struct>: `colour-value-red`
            raise DataError(f"{where}: an item of the tag list is an object or a list, not a text")
        items = [str(v) for v in value if v is not None]  # a null in a Parquet list is no tag ("tag:none")
    else:
        text = str(value).strip()
        if text.startswith("["):
            try:
                parsed = orjson.loads(text)
            except orjson.JSONDecodeError:
                items = text.split(separator)
            else:
                return _tag_list(parsed if isinstance(parsed, list) else text.split(separator), separator, where)
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
        _check_levels(raw, cols, where)
    if isinstance(raw, str) and raw.lstrip().startswith("["):
        # a list written as JSON text in a CSV cell: its items are the levels; one item is a path to split
        # (Flipkart's `product_category_tree` is `["Clothing >> Women's Clothing >> …"]`)
        try:
            items = orjson.loads(raw)
        except orjson.JSONDecodeError:
            items = None
        if isinstance(items, list):
            raw = items[0] if len(items) == 1 and isinstance(items[0], str) else items
            if isinstance(raw, list):
                _check_levels(raw, cols, where)
    parts = raw if isinstance(raw, list | tuple) else _text(raw).split(cols.separator)
    return tuple(p for p in (_text(x) for x in parts) if p)


def _check_levels(levels: list | tuple, cols: Columns, where: str) -> None:
    """A path given as a list: a null, an object or a blank level before a named one would shift every level below
    it up one (`["Clothing", "", "Shirts"]` became the class `Clothing > Shirts`); blank levels at the end only
    shorten the path."""
    bad = [i for i, x in enumerate(levels) if x is None or isinstance(x, dict | list | tuple)]
    if bad:
        raise DataError(f"{where}, column {cols.category!r}: level {bad[0] + 1} of the path is not a text")
    named = [i for i, x in enumerate(levels) if _text(x)]
    gap = next((i for i in range(named[-1]) if not _text(levels[i])), None) if named else None
    if gap is not None:
        raise DataError(
            f"{where}, column {cols.category!r}: level {gap + 1} of the path is blank, a level below it is not"
        )


def read(source: Source, *, categories: bool) -> list[Row]:
    """`read_counted`'s rows."""
    return read_counted(source, categories=categories)[0]


def read_counted(source: Source, *, categories: bool) -> tuple[list[Row], dict[str, int]]:
    """Every usable row of a source, and what was read and left out: `records`, `skipped_blank_title` (a blank
    or absent title: skipped) and `skipped_blank_category` (with `skip_blank_category`). Raises DataError for a
    missing column, an empty file, a blank category path (unless the columns say to skip those) or a split value
    other than train/dev/test.

    A CSV or Parquet file names its columns once; in JSONL each record names its own, so there a column is missing
    only when no record has it, and a record without the title is a blank title."""
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
    per_record = data_suffix(path) in JSONL_SUFFIXES
    rows: list[Row] = []
    counts = {"records": 0, "skipped_blank_title": 0, "skipped_blank_category": 0}
    have = ""
    present: set[str] = set()  # the columns seen (a JSONL record may leave out what it lacks)
    columns = [*needed, *optional]
    for n, rec in _records(path):
        where = f"{path}, row {n}"
        if not counts["records"]:
            have = ", ".join(str(c) for c in list(rec)[:15])
            missing = [c for c in needed if c not in rec]
            if missing and not per_record:
                raise DataError(f"{path}: no column {missing[0]!r} (columns: {have})")
        counts["records"] += 1
        if len(present) < len(columns):
            present.update(c for c in columns if c in rec)
        if per_record and cols.title not in rec:
            counts["skipped_blank_title"] += 1
            continue
        title = _text(_scalar(rec, cols.title, where))
        if not title:
            counts["skipped_blank_title"] += 1
            continue
        row = Row(where, title)
        if categories:
            row.path = _category_path(rec, cols, where)
            if not row.path:
                if cols.skip_blank_category:
                    counts["skipped_blank_category"] += 1
                    continue
                lacks = per_record and not any(c in rec for c in needed[1:])
                raise DataError(
                    f"{where}: no {category_name!r} in this record (a category path is required)"
                    if lacks
                    else f"{where}, column {category_name!r}: the category path is blank "
                    "(--skip-blank-categories drops such rows)"
                )
        if cols.description:
            row.description = _text(_scalar(rec, cols.description, where))
        if cols.brand:
            row.brand = _text(_scalar(rec, cols.brand, where))
        tags: list[str] = []
        if cols.tags:
            cell = f"{where}, column {cols.tags!r}"
            tags += [tag_name(t) for t in _tag_list(rec.get(cols.tags), cols.tags_separator, cell)]
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
    if not counts["records"]:
        raise DataError(f"{path}: the file has no rows")
    absent = [c for c in columns if c not in present]
    if absent:
        raise DataError(f"{path}: no column {absent[0]!r} in any row (columns of the first: {have})")
    if not rows:
        raise DataError(f"{path}: no row has a title in column {cols.title!r}")
    return rows, counts
