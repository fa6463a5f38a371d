"""Named leaves (`classifier.py`, 8.): parents whose leaves are named after the listing's brand.

Flipkart files every watch under `Watches > Wrist Watches > <its brand> Wrist Watches`, every mug under
`Kitchen & Dining > Coffee Mugs > <its brand> Coffee Mugs`: a new brand is a new leaf, one no training title has,
which a class list learned from the training split cannot give (57 of the default test split's 109 titles with an
unseen leaf are such brand leaves).

- `find`: a parent (a class path without its leaf) is *named* when it has at least `MIN_ROWS` training titles in at
  least `MIN_LEAVES` leaves, and at least `MIN_SHARE` of those titles sit in `<the title's first 1-4 words>
  <suffix>`, with one suffix for the whole parent (`Wrist Watches`).
- `brand_rule`: which of `classifier.BRAND_RULES` reads the brands of those training titles best.
- `choose`: the served model on the dev split with and without the rule. Kept only when it gets more dev leaves
  right than it gets wrong; its precision on the dev rows it changes, `(right + 1) / (changed + 2)`, scales a named
  leaf's confidence.

Nothing here reads a dev or test label to find the parents or the rule; dev only decides whether to keep it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from training import serving
from training.corpus import Example

MIN_ROWS = 20
MIN_LEAVES = 5
MIN_SHARE = 0.9
MAX_PREFIX_WORDS = 4


def suffixes(text: str, leaf: str) -> set[str]:
    """Every `s` for which `leaf` is `<the text's first k words> s` (k = 1..MAX_PREFIX_WORDS), case aside."""
    words = serving.classifier().fields(text)[0].split()
    low = leaf.lower()
    if len(low) != len(leaf):  # a case change that changes the length: no character-exact cut
        return set()
    out = set()
    for k in range(1, min(MAX_PREFIX_WORDS, len(words)) + 1):
        prefix = " ".join(words[:k]).lower()
        if low.startswith(prefix + " ") and len(leaf) > len(prefix) + 1:
            out.add(leaf[len(prefix) + 1 :])
    return out


def find(train: Sequence[Example]) -> list[dict]:
    """The named parents of a training split, most titles first."""
    rows: dict[tuple[str, ...], list[Example]] = defaultdict(list)
    for e in train:
        if len(e.path) >= 2:
            rows[e.path[:-1]].append(e)
    found = []
    for parent, examples in rows.items():
        leaves = {e.path[-1] for e in examples}
        if len(examples) < MIN_ROWS or len(leaves) < MIN_LEAVES:
            continue
        votes: Counter[str] = Counter()
        spelling: dict[str, Counter[str]] = defaultdict(Counter)
        for e in examples:
            for s in suffixes(e.text, e.path[-1]):
                votes[s.lower()] += 1
                spelling[s.lower()][s] += 1
        if not votes:
            continue
        key, n = votes.most_common(1)[0]
        if n / len(examples) >= MIN_SHARE:
            found.append(
                {
                    "path": list(parent),
                    "suffix": spelling[key].most_common(1)[0][0],
                    "train_titles": len(examples),
                    "leaves": len(leaves),
                    "share": round(n / len(examples), 4),
                }
            )
    return sorted(found, key=lambda p: (-p["train_titles"], p["path"]))


def brand_rule(train: Sequence[Example], parents: list[dict]) -> tuple[str, dict[str, float]]:
    """The rule that reads the brand of the most training titles under the named parents (the first on a tie),
    with each rule's share."""
    clf = serving.classifier()
    suffix = {tuple(p["path"]): p["suffix"] for p in parents}
    under = [e for e in train if e.path[:-1] in suffix]
    share = {}
    for rule in clf.BRAND_RULES:
        right = sum(
            f"{clf.title_brand(clf.fields(e.text)[0], rule)} {suffix[e.path[:-1]]}".lower() == e.path[-1].lower()
            for e in under
        )
        share[rule] = round(right / max(1, len(under)), 4)
    return max(clf.BRAND_RULES, key=lambda r: share[r]), share


def choose(folder: Path, train: Sequence[Example], dev: Sequence[Example], echo: Callable[[str], None] = print) -> dict:
    """The `named_leaves` entry of `classifier.json` for the version in `folder` (its other entries final)."""
    parents = find(train)
    if not parents:
        echo("named leaves: no parent's leaves are named after the brand in the training split")
        return {"enabled": False, "parents": []}
    rule, rule_share = brand_rule(train, parents)
    served = serving.classifier().Classifier(folder)
    texts = [e.text for e in dev]
    best = served.score_texts(texts).probs.argmax(1)
    served.name_leaves({tuple(p["path"]): p["suffix"] for p in parents}, rule)
    before = after = changed = right = 0
    for e, b in zip(dev, best, strict=True):
        model, ours = served.paths[int(b)], served.served_path(e.text, int(b))
        if ours != model:
            changed += 1
            right += ours == e.path
        after += ours == e.path
        before += model == e.path
    n = max(1, len(dev))
    entry = {
        "enabled": after > before,
        "parents": parents,
        "brand_rule": rule,
        "brand_rule_train_share": rule_share,
        "precision": round((right + 1) / (changed + 2), 4),
        "dev": {
            "rows_changed": changed,
            "right_of_those": right,
            "leaf_accuracy_without": round(before / n, 4),
            "leaf_accuracy_with": round(after / n, 4),
        },
    }
    names = ", ".join(" > ".join(p["path"]) for p in parents[:4])
    echo(
        f"named leaves: {len(parents)} parents ({names}{', ...' if len(parents) > 4 else ''}), brand rule {rule}; "
        f"dev: {changed} rows renamed, {right} right, leaf accuracy {before / n:.4f} -> {after / n:.4f} "
        f"({'kept' if entry['enabled'] else 'not kept'})"
    )
    return entry
