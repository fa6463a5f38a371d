"""Training data: load the two CSVs, de-duplicate by title, split by title, attach labels.

Every title is normalised (lower case, single spaces) into a key; rows sharing a key collapse into one
example carrying the majority label. A key's split comes from a seeded hash of the key alone, so no title
is ever in two splits (across both data sets) and the split of a title does not move when rows are added.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from training import serving
from training import tags as tags_mod
from training import taxonomy as tax_mod

FLIPKART = "flipkart_20k.csv"
MYNTRA = "myntra_styles_44k.csv"
# dev first: a title hashed under 0.15 is dev in both data sets; `calib` (Myntra only) tunes tag thresholds
FLIPKART_SPLITS = (("dev", 0.15), ("train", 0.85))
MYNTRA_SPLITS = (("dev", 0.15), ("calib", 0.05), ("train", 0.80))


def title_key(title: str) -> str:
    return " ".join(title.lower().split())


def split_of(key: str, seed: int, splits: Iterable[tuple[str, float]]) -> str:
    h = int.from_bytes(hashlib.sha1(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64
    acc = 0.0
    last = ""
    for name, frac in splits:
        acc += frac
        last = name
        if h < acc:
            return name
    return last


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def majority(values: list) -> object:
    """Most frequent value; ties go to the one seen first (deterministic for a given file)."""
    return Counter(values).most_common(1)[0][0]


@dataclass
class CategoryExample:
    key: str
    text: str
    raw_path: tuple[str, ...]
    label: int = -1


@dataclass
class TagExample:
    key: str
    text: str
    tags: list[str]
    labels: list[int] = field(default_factory=list)


def flipkart_examples(path: Path) -> list[CategoryExample]:
    """One example per distinct title with a non-empty `l3` (rows without a category are dropped)."""
    compose_text = serving.network().compose_text  # imports torch: only when data is loaded

    groups: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in read_csv(path):
        if row["product_name"].strip() and tax_mod.parse_path(row["l3"]):
            groups[title_key(row["product_name"])].append(row)
    out = []
    for key, rows in groups.items():
        raw = majority([tax_mod.parse_path(r["l3"]) for r in rows])
        first = next(r for r in rows if tax_mod.parse_path(r["l3"]) == raw)
        brand = next((r["brand"] for r in rows if r.get("brand", "").strip()), "")
        out.append(CategoryExample(key, compose_text(first["product_name"], brand), raw))
    return out


def myntra_examples(path: Path) -> list[TagExample]:
    compose_text = serving.network().compose_text

    groups: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in read_csv(path):
        if row["productDisplayName"].strip():
            groups[title_key(row["productDisplayName"])].append(row)
    out = []
    for key, rows in groups.items():
        tag_set = majority([tuple(tags_mod.row_tags(r)) for r in rows])
        first = next(r for r in rows if tuple(tags_mod.row_tags(r)) == tag_set)
        out.append(TagExample(key, compose_text(first["productDisplayName"]), list(tag_set)))
    return out


@dataclass
class Prepared:
    taxonomy: tax_mod.Taxonomy
    tag_names: list[str]
    categories: dict[str, list[CategoryExample]]  # split -> examples
    tags: dict[str, list[TagExample]]

    def stats(self) -> dict[str, object]:
        return {
            "categories": len(self.taxonomy.classes),
            "tags": len(self.tag_names),
            "category_examples": {k: len(v) for k, v in self.categories.items()},
            "tag_examples": {k: len(v) for k, v in self.tags.items()},
        }


def prepare(data_dir: Path, seed: int, min_class_count: int = 15, min_tag_count: int = 20) -> Prepared:
    """Load both data sets, build the taxonomy and tag vocabulary, split by title, attach label ids."""
    cat_examples = flipkart_examples(Path(data_dir) / FLIPKART)
    taxonomy = tax_mod.build((e.raw_path for e in cat_examples), min_class_count)
    categories: dict[str, list[CategoryExample]] = {name: [] for name, _ in FLIPKART_SPLITS}
    for e in cat_examples:
        e.label = taxonomy.index(e.raw_path)
        categories[split_of(e.key, seed, FLIPKART_SPLITS)].append(e)

    tag_examples = myntra_examples(Path(data_dir) / MYNTRA)
    names = tags_mod.vocabulary((e.tags for e in tag_examples), min_tag_count)
    index = {t: i for i, t in enumerate(names)}
    tag_splits: dict[str, list[TagExample]] = {name: [] for name, _ in MYNTRA_SPLITS}
    for e in tag_examples:
        e.labels = [index[t] for t in e.tags if t in index]
        tag_splits[split_of(e.key, seed, MYNTRA_SPLITS)].append(e)
    return Prepared(taxonomy, names, categories, tag_splits)
