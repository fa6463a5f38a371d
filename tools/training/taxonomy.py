"""The category taxonomy: every distinct category path of the training data is a class, at any depth.

No class is merged away: a rare leaf stays a class the model can give. Hierarchy-aware serving (see
`network.py`) reports, with every result, the deepest level whose probability is high enough, so a rare leaf
the model is unsure of is still served by a confident parent.

Ids are the slugs of the path joined by dots (`mobiles-and-accessories.mobile-accessories.cases-and-covers`);
two paths that slug alike get a short hash suffix, so ids stay unique and stable for a given taxonomy.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from training.dataset import slug

# auxiliary per-level heads for the first levels of deep taxonomies
MAX_LEVEL_HEADS = 3


def category_id(path: Sequence[str]) -> str:
    return ".".join(slug(p) for p in path)


@dataclass(frozen=True)
class Taxonomy:
    classes: list[tuple[str, ...]]  # index = the model's class id; sorted
    counts: list[int]  # training titles per class

    @classmethod
    def build(cls, train_paths: Iterable[tuple[str, ...]]) -> Taxonomy:
        """A class for every path with a training title. (A dev/test title whose path has none cannot be
        predicted exactly: metrics compare paths, so it counts as a miss at its leaf, and the report counts it.)"""
        counts = Counter(train_paths)
        classes = sorted(counts)
        return cls(classes, [counts[c] for c in classes])

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {c: i for i, c in enumerate(self.classes)})

    def index(self, path: tuple[str, ...]) -> int:
        return self._index[path]  # type: ignore[attr-defined]

    @property
    def depth(self) -> int:
        return max(len(c) for c in self.classes)

    def level_nodes(self, level: int) -> list[tuple[str, ...]]:
        """The distinct prefixes of length `level` (a shorter path is its own node at deeper levels)."""
        return sorted({c[:level] for c in self.classes})

    @property
    def head_levels(self) -> list[int]:
        """Levels that get an auxiliary head: 1 .. min(depth - 1, MAX_LEVEL_HEADS)."""
        return list(range(1, min(self.depth - 1, MAX_LEVEL_HEADS) + 1))

    def ancestors(self, level: int) -> list[int]:
        """For each class, the index of its level-`level` node in `level_nodes(level)`."""
        nodes = {n: i for i, n in enumerate(self.level_nodes(level))}
        return [nodes[c[:level]] for c in self.classes]

    def ids(self) -> list[str]:
        ids = [category_id(c) for c in self.classes]
        seen = Counter(ids)
        return [
            i if seen[i] == 1 else f"{i}~{hashlib.sha1(' > '.join(c).encode()).hexdigest()[:6]}"
            for i, c in zip(ids, self.classes, strict=True)
        ]

    def to_json(self) -> dict:
        return {
            "depth": self.depth,
            "head_levels": self.head_levels,
            "levels": {str(k): [list(n) for n in self.level_nodes(k)] for k in self.head_levels},
            "categories": [
                {"index": i, "id": cid, "name": path[-1], "path": list(path), "depth": len(path), "train_count": n}
                for i, (cid, path, n) in enumerate(zip(self.ids(), self.classes, self.counts, strict=True))
            ],
        }
