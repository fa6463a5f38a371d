"""The tag vocabulary: `gender:`, `colour:`, `season:`, `usage:` tags from Myntra's clean columns."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from training.taxonomy import slug

TAG_COLUMNS = {"gender": "gender", "baseColour": "colour", "season": "season", "usage": "usage"}


def row_tags(row: Mapping[str, str]) -> list[str]:
    """Tags of one Myntra row, e.g. `gender:men`, `colour:navy-blue`; empty values give no tag."""
    out = []
    for column, prefix in TAG_COLUMNS.items():
        value = (row.get(column) or "").strip()
        if value:
            out.append(f"{prefix}:{slug(value)}")
    return out


def vocabulary(tag_lists: Iterable[list[str]], min_count: int) -> list[str]:
    """Tags seen on at least `min_count` distinct titles, sorted; rarer tags are dropped from training."""
    counts = Counter(t for tags in tag_lists for t in set(tags))
    return sorted(t for t, n in counts.items() if n >= min_count)
