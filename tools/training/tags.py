"""Tags: targets for training, and where each tag group applies.

A tag is `group:value` (`gender:men`, `colour:navy-blue`). A group applies only to some top-level categories:

* tags in the categories file: a group applies to a top level where at least `SAME_FILE_SHARE` of that top
  level's training titles carry the group, relative to the group's densest top level (so a group on every
  clothing title but no appliance applies to clothing only, and a sparse tag such as `tag:organic` applies where
  it does occur);
* tags in a second file (the default: Myntra): that file has no categories, so each of its titles is placed in
  the taxonomy by the linear category model, and a group applies to the top levels that hold at least
  `SECOND_FILE_SHARE` of its titles.

The rule and its result are written to the model's `tags.json` (`groups.<g>.applies_to`); the served model
gives a group's tags only when the predicted category's top level is in it. Category rows outside a group's top
levels are also negatives for that group when the tag head trains.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from training.corpus import Corpus, Example

SAME_FILE_SHARE = 0.10  # of the densest top level's share
SECOND_FILE_SHARE = 0.01  # of the group's titles
MIN_TITLES = 3


def group_of(tag: str) -> str:
    return tag.split(":", 1)[0]


def targets(examples: Sequence[Example], index: dict[str, int], complete: bool) -> tuple[np.ndarray, np.ndarray]:
    """[n, T] 0/1 targets and the mask of labelled cells. `complete`: every tag not listed is a negative;
    otherwise only the groups an example carries are labelled (its other groups are unknown)."""
    n, t = len(examples), len(index)
    y = np.zeros((n, t), dtype=np.float32)
    mask = np.zeros((n, t), dtype=np.float32)
    groups_cols: dict[str, list[int]] = defaultdict(list)
    for name, j in index.items():
        groups_cols[group_of(name)].append(j)
    for i, e in enumerate(examples):
        for tag in e.tags:
            if tag in index:
                y[i, index[tag]] = 1.0
        if complete:
            mask[i] = 1.0
        else:
            for g in e.tag_groups:
                mask[i, groups_cols.get(g, [])] = 1.0
    return y, mask


def applicability(c: Corpus, lin: Any) -> dict[str, list[str] | None]:
    """group -> the top-level category names it applies to (see the module's rule)."""
    if not c.tag_names:
        return {}
    out: dict[str, list[str] | None] = {}
    if c.same_file_tags:
        train = c.categories["train"]
        per_top = Counter(e.path[0] for e in train)
        for g in c.groups:
            with_group = Counter(e.path[0] for e in train if g in e.tag_groups)
            share = {t: with_group[t] / per_top[t] for t in per_top}
            densest = max(share.values(), default=0.0)
            out[g] = sorted(
                t for t, s in share.items() if with_group[t] >= MIN_TITLES and s >= SAME_FILE_SHARE * densest
            )
        return out
    rows = c.tags["train"]
    tops = [p[0] for p in c.taxonomy.classes]
    predicted = lin.category_scores([e.text for e in rows]).argmax(1)
    for g in c.groups:
        placed = Counter(tops[int(k)] for e, k in zip(rows, predicted, strict=True) if g in e.tag_groups)
        total = sum(placed.values())
        out[g] = sorted(t for t, n in placed.items() if n >= MIN_TITLES and n >= SECOND_FILE_SHARE * total)
    return out


def category_row_negatives(
    c: Corpus, applies: dict[str, list[str] | None], index: dict[str, int]
) -> tuple[np.ndarray, Callable[[Example], np.ndarray | None]]:
    """For category rows of a corpus whose tags come from a second file: an all-zero target, and a mask that
    labels (as negatives) the groups that do not apply to the row's top level; None when every group applies."""
    target = np.zeros(len(index), dtype=np.float32)
    cols: dict[str, list[int]] = defaultdict(list)
    for name, j in index.items():
        cols[group_of(name)].append(j)
    cache: dict[str, np.ndarray | None] = {}

    def mask(e: Example) -> np.ndarray | None:
        top = e.path[0]
        if top not in cache:
            m = np.zeros(len(index), dtype=np.float32)
            for g, where in applies.items():
                if where is not None and top not in where:
                    m[cols[g]] = 1.0
            cache[top] = m if m.any() else None
        return cache[top]

    return target, mask


def tags_json(c: Corpus, applies: dict[str, list[str] | None], params: dict) -> dict:
    rule = (
        f"same file: top levels where >= {SAME_FILE_SHARE:.0%} of the densest top level's share of titles carry "
        "the group"
        if c.same_file_tags
        else f"second file: top levels holding >= {SECOND_FILE_SHARE:.0%} of the group's titles, as placed by the "
        "linear category model"
    )
    return {
        "tags": c.tag_names,
        "thresholds": params.get("thresholds") or [0.5] * len(c.tag_names),
        "fusion": {"beta": params.get("beta", 1.0), "linear_temperature": params.get("linear_temperature", 1.0)},
        "rule": rule,
        "groups": {g: {"applies_to": applies.get(g)} for g in c.groups},
    }
