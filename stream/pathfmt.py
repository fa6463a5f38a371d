"""Category paths for narrow places (a PNG's text panel, a table column)."""

from __future__ import annotations

SEPARATOR = " > "


def short_path(path: str, width: int = 60) -> str:
    """The deepest nodes of an `a > b > c` path that fit `width` characters, whole nodes where they fit: a leaf
    alone is rarely enough to read (`Showpieces`), and a path cut in the middle of a word reads wrong. A path that
    fits is kept whole; one cut shows `… > ` in front; a leaf longer than `width` keeps its last characters."""
    if len(path) <= width:
        return path
    parts = path.split(SEPARATOR)
    keep = parts[-1]
    for part in reversed(parts[:-1]):
        if len(part) + len(keep) + 2 * len(SEPARATOR) - 1 > width:
            break
        keep = f"{part}{SEPARATOR}{keep}"
    keep = f"…{SEPARATOR}{keep}"
    return keep if len(keep) <= width else "…" + parts[-1][-(width - 1) :]
