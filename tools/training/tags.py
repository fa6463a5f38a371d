"""Tags: targets for training, and where each tag group applies.

A tag is `group:value` (`gender:men`, `colour:navy-blue`). A group applies only to some top-level categories:

* tags in the categories file: a group applies to a top level where at least `SAME_FILE_SHARE` of that top
  level's training titles carry the group, relative to the group's densest top level (so a group on every
  clothing title but no appliance applies to clothing only, and a sparse tag such as `tag:organic` applies where
  it does occur);
* tags in a second file (the default: Myntra): that file has no categories, so each of its titles is placed in
  the taxonomy by the linear category model, and a group applies to the top levels that hold at least
  `SECOND_FILE_SHARE` of its titles.

Category rows outside a group's top levels are negatives for that group when the tags are learned — by the
network's tag head and by the linear part's tag models alike — so both learn that a toner cartridge has no gender.
What the learned rule alone does is measured on the dev category rows: a group whose tags still reach more than
`GATE_ABOVE` of the dev listings outside its top levels is also *gated* — the served model gives its tags only when
the predicted category's top level is one of them. The gate is not the default because it costs the tags of every
listing the category model places wrongly (on the default data, 35 of 4,563 Myntra test titles — sports shoes placed
in Home Furnishing — lost all four groups: 0.35 points of tag micro-F1).

The rule and its result are written to the model's `tags.json` (`groups.<g>.applies_to`, `.gated`,
`.dev_share_tagged_outside`).
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
GATE_ABOVE = 0.01  # gated when the learned rule alone tags more than this share of the dev listings outside it


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
    """For category rows without tags of their own (all of them when the tags come from a second file): an
    all-zero target, and a mask that labels (as negatives) the groups that do not apply to the row's top level;
    None when every group applies."""
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


def linear_rows(
    c: Corpus, applies: dict[str, list[str] | None], index: dict[str, int]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """What the linear part's tag models learn from: the tag training rows (their labelled cells) and the category
    training rows without tags of their own as negatives of the groups that do not apply to them (the cells the
    network's tag head also learns from)."""
    rows = c.tags["train"]
    y, mask = targets(rows, index, complete=c.same_file_tags)
    texts = [e.text for e in rows]
    target, neg_mask = category_row_negatives(c, applies, index)
    # in the same file, a row with tags is labelled by them (a tag row above); one without, by where it is
    labelled = {id(e) for e in rows} if c.same_file_tags else set()
    negatives = [(e.text, m) for e in c.categories["train"] if id(e) not in labelled and (m := neg_mask(e)) is not None]
    if not negatives:
        return texts, y, mask
    return (
        texts + [t for t, _ in negatives],
        np.vstack([y, np.tile(target, (len(negatives), 1))]),
        np.vstack([mask, np.stack([m for _, m in negatives])]),
    )


def gates(
    tops: Sequence[str],
    given: np.ndarray,
    tag_names: Sequence[str],
    applies: dict[str, list[str] | None],
) -> dict[str, dict]:
    """Per group, from the dev category rows (`tops`: their true top levels; `given` [n, T]: the tags the learned
    model gives them, ungated): the share of the listings outside the group's top levels that get one of its tags,
    and whether the group is gated (that share above GATE_ABOVE; also when dev has no listing outside it to
    measure). A group that applies everywhere is never gated."""
    from training import metrics

    leak = metrics.tag_leakage(tops, given, tag_names, applies)
    out: dict[str, dict] = {}
    for g, where in applies.items():
        if where is None:
            out[g] = {"gated": False, "dev_share_tagged_outside": None}
            continue
        m = leak[g]  # tag_leakage measures every group that does not apply everywhere
        out[g] = {
            "gated": m["outside_listings"] == 0 or m["share_tagged"] > GATE_ABOVE,
            "dev_share_tagged_outside": m["share_tagged"] if m["outside_listings"] else None,
        }
    return out


def tags_json(c: Corpus, applies: dict[str, list[str] | None], params: dict, ungated: bool = False) -> dict:
    """`params`: the dev-tuned fusion, thresholds and `gates` (see `gates`); `ungated`: every group ungated (what
    the learned rule alone gives, to measure it)."""
    rule = (
        f"same file: top levels where >= {SAME_FILE_SHARE:.0%} of the densest top level's share of titles carry "
        "the group"
        if c.same_file_tags
        else f"second file: top levels holding >= {SECOND_FILE_SHARE:.0%} of the group's titles, as placed by the "
        "linear category model"
    ) + (
        f"; learned with the category rows outside a group as its negatives, and gated by the predicted top level "
        f"where that alone tags > {GATE_ABOVE:.0%} of the dev listings outside it"
    )
    gated = {g: {"gated": False} for g in c.groups} if ungated else params.get("gates") or {}
    return {
        "tags": c.tag_names,
        "thresholds": params.get("thresholds") or [0.5] * len(c.tag_names),
        "fusion": {"beta": params.get("beta", 1.0), "linear_temperature": params.get("linear_temperature", 1.0)},
        "rule": rule,
        "groups": {
            g: {
                "applies_to": applies.get(g),
                # not measured yet (the cascade is chosen before the gates): gated wherever the group does not apply
                # everywhere
                **gated.get(g, {"gated": applies.get(g) is not None}),
            }
            for g in c.groups
        },
    }
