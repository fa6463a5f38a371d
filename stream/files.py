"""Reading listing files: JSON Lines, one object a line (the CSV side differs per use)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")


def jsonl_objects(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) of every non-blank line; ValueError naming the file and line for a bad one."""
    with Path(path).open("rb") as f:
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
