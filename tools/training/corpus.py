"""From sources to a training corpus: de-duplicated by title, split train/dev/test, with the taxonomy and the
tag vocabulary.

* Every title is normalised (lower case, single spaces) into a key; rows sharing a key become one example with
  the majority label (first seen wins a tie), so no title is in two splits — unless the file's own split
  column puts it in two: that split is the user's and is kept (the report counts such titles).
* Split: the file's split column when there is one (used as given; a split it leaves empty, dev or test, is
  taken from its train rows by the hash below); otherwise a seeded hash of the key (`--seed`): test 15%, dev
  10%, train 75% — the same title lands in the same split in every file.
  Train fits the model, dev selects the epoch and tunes fusion, calibration and tag thresholds, test is only
  scored (the report's figures).
* Extra rows (`--extra-data`, e.g. the review feedback export) join by the same rules and are counted.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from training.dataset import DataError, Row
from training.taxonomy import Taxonomy

SPLIT_FRACTIONS = (("test", 0.15), ("dev", 0.10), ("train", 0.75))
MIN_TAG_COUNT = 20  # tags on fewer training titles are dropped from the vocabulary


def title_key(title: str) -> str:
    return " ".join(title.lower().split())


def split_of(key: str, seed: int) -> str:
    h = int.from_bytes(hashlib.sha1(f"{seed}:{key}".encode()).digest()[:8], "big") / 2**64
    acc = 0.0
    for name, frac in SPLIT_FRACTIONS:
        acc += frac
        if h < acc:
            return name
    return SPLIT_FRACTIONS[-1][0]


@dataclass
class Example:
    key: str
    text: str  # the model's input (composed title, brand, description)
    path: tuple[str, ...] = ()  # category path; () for a tags-only example
    tags: tuple[str, ...] = ()
    tag_groups: frozenset[str] = field(default_factory=frozenset)  # groups labelled on this example
    extra: bool = False
    given_split: str | None = None  # from the file's split column


@dataclass
class Corpus:
    taxonomy: Taxonomy
    categories: dict[str, list[Example]]  # split -> examples with a category
    tags: dict[str, list[Example]]  # split -> examples labelled with tags
    tag_names: list[str]
    groups: list[str]
    same_file_tags: bool  # tags come with the categories (labels complete), not from a second file
    stats: dict[str, object]

    def labels(self, split: str) -> list[int]:
        """Class index of each category example of a split; -1 where its path has no training title."""
        out = []
        for e in self.categories[split]:
            try:
                out.append(self.taxonomy.index(e.path))
            except KeyError:
                out.append(-1)
        return out


def dedupe(rows: Iterable[Row], compose: Callable[[Row], str], extra: bool = False) -> tuple[list[Example], dict]:
    """One example per title key, with the majority path and tag set. When the file gives splits, one per title
    key *and split*: the user's split is used as given, even where it puts the same title in two splits (counted
    in `titles_in_several_splits`)."""
    groups: dict[tuple[str, str], list[Row]] = defaultdict(list)
    n = 0
    for r in rows:
        groups[(r.split or "", title_key(r.title))].append(r)
        n += 1
    out = []
    for (given, key), rs in groups.items():
        path = Counter(r.path for r in rs).most_common(1)[0][0]
        with_path = [r for r in rs if r.path == path]
        tags = Counter(r.tags for r in with_path).most_common(1)[0][0]  # the majority tags *of that path's rows*
        first = next(r for r in with_path if r.tags == tags)
        out.append(Example(key, compose(first), path, tags, first.tag_groups, extra, given or None))
    stats: dict = {"rows": n, "titles": len(out), "duplicates_merged": n - len(out)}
    if any(given for given, _ in groups):
        per_key = Counter(key for _, key in groups)
        stats["titles_in_several_splits"] = sum(1 for c in per_key.values() if c > 1)
    return out, stats


def assign(examples: Sequence[Example], seed: int) -> dict[str, list[Example]]:
    """Examples by split: the given split, else the seeded hash. When the file gives splits but no dev (or no
    test) rows, that split is taken from the given train rows by the same hash (its usual share of them), never a
    leaf's last train title."""
    out: dict[str, list[Example]] = {s: [] for s, _ in SPLIT_FRACTIONS}
    for e in examples:
        out[e.given_split or split_of(e.key, seed)].append(e)
    if any(e.given_split for e in examples):
        # by the file's own rows: a few `--extra-data` rows hashed into dev do not make a dev split
        missing = [s for s in ("dev", "test") if not any(e.given_split == s for e in examples)]
        if missing:
            # a leaf keeps at least one train title: the user's train rows are the classes the model can give
            left = Counter(e.path for e in out["train"])
            keep = []
            for e in out["train"]:
                hashed = split_of(e.key, seed)
                if e.given_split and hashed in missing and left[e.path] > 1:
                    out[hashed].append(e)
                    left[e.path] -= 1
                else:
                    keep.append(e)
            out["train"] = keep
    return out


def tag_counts(examples: Iterable[Example]) -> Counter[str]:
    """Training titles per tag."""
    return Counter(t for e in examples for t in set(e.tags))


def vocabulary(examples: Iterable[Example], min_count: int = MIN_TAG_COUNT) -> list[str]:
    return sorted(t for t, n in tag_counts(examples).items() if n >= min_count)


def _source(rows: Sequence[Row]) -> str:
    """The file the rows came from, as their `where` names it (`f.csv, row 7` → `f.csv`)."""
    return rows[0].where.rsplit(", row ", 1)[0] if rows else "the data"


def build(
    category_rows: Sequence[Row],
    tag_rows: Sequence[Row] | None,
    extra_rows: Sequence[Row],
    compose: Callable[[Row], str],
    seed: int,
) -> Corpus:
    """`tag_rows` None: the tags (if any) come with the category rows."""
    cats, stats = dedupe(category_rows, compose)
    source = _source(category_rows)
    if any(e.given_split for e in cats) and not any(e.given_split == "train" for e in cats):
        raise DataError(f"{source}: the split column gives no train rows (a model needs some)")
    extra = dedupe(extra_rows, compose, extra=True)[0] if extra_rows else []
    known = {e.key for e in cats}
    extra = [e for e in extra if e.key not in known]  # a reviewed title the data already has keeps the data's label
    categories = assign(cats + extra, seed)
    taxonomy = Taxonomy.build(e.path for e in categories["train"])
    if len(taxonomy.classes) < 2:
        found = f"one category ({' > '.join(taxonomy.classes[0])})" if taxonomy.classes else "no category"
        raise DataError(f"{source}: the train split has {found}; a classifier needs at least two")
    empty = [s for s in ("dev", "test") if not categories[s]]
    if empty:
        share = dict(SPLIT_FRACTIONS)
        raise DataError(
            f"{source}: {len(cats)} distinct titles leave the {' and '.join(empty)} split empty (the seeded split "
            f"puts {share['dev']:.0%} of the titles in dev and {share['test']:.0%} in test; dev chooses the epoch and "
            "the fusion, test is scored): give more rows, or a split column with dev and test rows"
        )
    same_file = tag_rows is None
    if same_file:
        tags_by_split = {s: [e for e in v if e.tags or e.tag_groups] for s, v in categories.items()}
        has_tags = any(tags_by_split.values())
        tags_by_split = tags_by_split if has_tags else {s: [] for s in categories}
        tag_stats: dict = {}
    else:
        tag_examples, tag_stats = dedupe(tag_rows, compose)
        tags_by_split = assign(tag_examples, seed)
    counts = tag_counts(tags_by_split["train"])
    names = vocabulary(tags_by_split["train"])
    kept = set(names)
    rare = sorted((t for t in counts if t not in kept), key=lambda t: (-counts[t], t))
    if rare and not names:
        shown = ", ".join(f"{t} ({counts[t]})" for t in rare[:5])
        raise DataError(
            f"{_source(tag_rows) if tag_rows is not None else source}: no tag is on at least {MIN_TAG_COUNT} training "
            f"titles ({shown}{', …' if len(rare) > 5 else ''}), so the model would learn no tags: give more tagged "
            "rows, or leave the tags out"
        )
    for examples in tags_by_split.values():
        for e in examples:
            e.tags = tuple(t for t in e.tags if t in kept)
    groups = sorted({t.split(":", 1)[0] for t in names})
    known_paths = set(taxonomy.classes)
    if not any(e.path in known_paths for e in categories["dev"]):
        raise DataError(
            f"{source}: no dev title has a category the train split has ({len(categories['dev'])} dev titles), so "
            "dev cannot choose the epoch, the fusion or the calibration: put titles of the trained categories in dev"
        )
    unseen = sum(1 for e in categories["test"] if e.path not in known_paths)
    stats = {
        "category_source": stats,
        "tag_source": "same file" if same_file else tag_stats,
        "extra_rows": {"titles": len(extra), "by_split": {s: sum(e.extra for e in v) for s, v in categories.items()}},
        "classes": len(taxonomy.classes),
        "depth": taxonomy.depth,
        "category_examples": {s: len(v) for s, v in categories.items()},
        "tag_examples": {s: len(v) for s, v in tags_by_split.items()},
        "tags": len(names),
        # tags on fewer than MIN_TAG_COUNT training titles are not learned: the most frequent of them, with counts
        "tags_dropped_rare": {
            "min_titles": MIN_TAG_COUNT,
            "count": len(rare),
            "most": {t: counts[t] for t in rare[:10]},
        },
        "test_rows_with_unseen_leaf": unseen,
    }
    carved = {s: sum(1 for e in v if e.given_split == "train") for s, v in categories.items() if s != "train"}
    if any(carved.values()):
        stats["taken_from_given_train"] = {s: n for s, n in carved.items() if n}
    return Corpus(taxonomy, categories, tags_by_split, names, groups, same_file, stats)
