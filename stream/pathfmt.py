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
        if len(f"…{SEPARATOR}{part}{SEPARATOR}{keep}") > width:
            break
        keep = f"{part}{SEPARATOR}{keep}"
    keep = f"…{SEPARATOR}{keep}"
    return keep if len(keep) <= width else "…" + parts[-1][-(width - 1) :]


def short_pair(a: str, b: str, width: int = 60) -> tuple[str, str]:
    """Two paths shortened as `short_path` does, unless that shows them alike (they part above the nodes that fit:
    `Automotive > Car & Bike Accessories > Car Interior & Exterior` and `Automotive > Accessories & Spare parts >
    Car Interior & Exterior`): then each from the node where they part, cut at the end if it is too long."""
    short = short_path(a, width), short_path(b, width)
    if short[0] != short[1] or a == b:
        return short
    na, nb = a.split(SEPARATOR), b.split(SEPARATOR)
    k = next((i for i, (x, y) in enumerate(zip(na, nb, strict=False)) if x != y), min(len(na), len(nb)))

    def parted(nodes: list[str]) -> str:
        text = ("…" + SEPARATOR if k else "") + SEPARATOR.join(nodes[k:])
        return text if len(text) <= width else text[: width - 1] + "…"

    return parted(na), parted(nb)
