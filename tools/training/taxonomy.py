"""The category taxonomy: Flipkart's first three levels, with a policy for tiny classes.

Policy: a class (a path of at most three levels) with fewer than `min_count` distinct titles is merged
into its parent path; merging repeats until every class has enough titles. A top-level node that is
still too small goes into one `Other` class. A parent node can therefore be a class of its own (it
holds the titles of its tiny children) next to its large children.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

OTHER = ("Other",)
SEP = " > "


def parse_path(raw: str, depth: int = 3) -> tuple[str, ...]:
    return tuple(p.strip() for p in raw.split(">") if p.strip())[:depth]


def slug(text: str) -> str:
    text = text.lower().replace("&", " and ")
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "x"


def category_id(path: tuple[str, ...]) -> str:
    """Stable, readable id of a class: the slugs of its path joined by dots."""
    return ".".join(slug(p) for p in path)


@dataclass(frozen=True)
class Taxonomy:
    classes: list[tuple[str, ...]]  # index = class id used by the model
    mapping: dict[tuple[str, ...], int]  # raw (up to 3-level) path -> class index
    min_count: int

    def index(self, raw_path: tuple[str, ...]) -> int:
        return self.mapping[raw_path]

    def to_json(self) -> dict:
        ids = [category_id(p) for p in self.classes]
        if len(set(ids)) != len(ids):
            raise ValueError("category ids collide after slugging")
        return {
            "min_count": self.min_count,
            "categories": [
                {"index": i, "id": cid, "name": path[-1], "path": list(path), "depth": len(path)}
                for i, (cid, path) in enumerate(zip(ids, self.classes, strict=True))
            ],
        }


def build(paths: Iterable[tuple[str, ...]], min_count: int) -> Taxonomy:
    """`paths`: one path per distinct title. Returns the merged taxonomy (see the module's policy)."""
    counts = Counter(paths)
    target = {p: p for p in counts}
    while True:
        sizes: Counter[tuple[str, ...]] = Counter()
        for p, n in counts.items():
            sizes[target[p]] += n
        tiny = [t for t, n in sizes.items() if n < min_count and t != OTHER]
        if not tiny:
            break
        # bottom-up: merge only the deepest tiny classes, then recount, so a parent is judged with its children
        depth = max(len(t) for t in tiny)
        merge = {t for t in tiny if len(t) == depth}
        for p in counts:
            t = target[p]
            if t in merge:
                target[p] = t[:-1] if len(t) > 1 else OTHER
    classes = sorted(set(target.values()))
    index = {c: i for i, c in enumerate(classes)}
    return Taxonomy(classes, {p: index[t] for p, t in target.items()}, min_count)
