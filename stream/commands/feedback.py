"""`listings feedback export --out FILE`: the reviewed items as labelled rows for `listings train --extra-data`.

Reads which items `listings.feedback` names, takes each reviewed item's applied decision and title from the item
state, and writes a CSV with the columns `listings train --extra-data` reads: `title`, `category` (path,
` > `-separated), `tags` (`|`-separated), plus `decision`, `reviewer`, `item_id`, `listing_version`. Accepted
and corrected items both count: an accepted item confirms the model's label, a corrected one fixes it."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import orjson

from stream import connections, keys
from stream.config import Settings

HELP = "export reviewed items (listings.feedback) as training rows for `listings train --extra-data`"
COLUMNS = ["title", "category", "tags", "decision", "reviewer", "item_id", "listing_version"]


def reviewed_items(settings: Settings, timeout_s: float = 5.0) -> list[str]:
    """Every item a decision on `listings.feedback` names, in the order first named."""
    from stream.topics import read_all

    out: dict[str, None] = {}
    for m in read_all(settings, settings.topics.feedback, timeout_s):
        try:
            d = orjson.loads(m.value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(d, dict) and isinstance(d.get("item_id"), str):
            out[d["item_id"]] = None
    return list(out)


def export(settings: Settings, path: Path) -> dict[str, int]:
    """One row per item whose stored label is a reviewer's: the decision the worker applied, as the item state
    holds it (category, tags, decision, reviewer, listing_version). The topic only says which items to look at: its
    latest record for an item may have been refused (an older edit, an unknown category) or be malformed, and an
    item whose seller edited it since is the model's again."""
    items = reviewed_items(settings)
    r = connections.redis_sync(settings.redis, decode_responses=True)
    counts = {"accepted": 0, "corrected": 0, "skipped": 0}
    try:
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            for item_id in items:
                h = r.hgetall(keys.listing(item_id))
                if h.get("label_source") != "human":
                    counts["skipped"] += 1
                    continue
                try:
                    tags = [str(t) for t in orjson.loads(h.get("tags") or "[]")]
                except orjson.JSONDecodeError:
                    tags = []
                decision = h.get("decision") or "corrected"
                writer.writerow(
                    {
                        "title": h.get("title", ""),
                        "category": h.get("category_path", ""),
                        "tags": "|".join(tags),
                        "decision": decision,
                        "reviewer": h.get("reviewer", ""),
                        "item_id": item_id,
                        "listing_version": h.get("listing_version", ""),
                    }
                )
                counts[decision] = counts.get(decision, 0) + 1
    finally:
        r.close()
    return counts


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["export"])
    parser.add_argument("--out", type=Path, required=True, help="the CSV to write")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from stream import logs, preflight

    logs.setup("WARNING", quiet=True)
    preflight.one_shot(settings)
    try:
        counts = export(settings, args.out)
    except OSError as exc:
        print(f"listings feedback: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    print(
        f"wrote {args.out}: {counts['accepted']} accepted, {counts['corrected']} corrected "
        f"({counts['skipped']} decisions not applied or superseded by a newer edit, left out)"
    )
    return 0
