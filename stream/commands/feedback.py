"""`listings feedback export --out FILE`: the reviewed items as labelled rows for `listings train --extra-data`.

Reads `listings.feedback` (the latest decision per item), takes each item's title from the item state, and writes a
CSV with the columns `listings train --extra-data` reads: `title`, `category` (path, ` > `-separated), `tags`
(`|`-separated), plus `decision`, `reviewer`, `item_id`, `listing_version`. Accepted and corrected items both count:
an accepted item confirms the model's label, a corrected one fixes it."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import orjson

from stream import connections, keys
from stream.config import Settings

HELP = "export reviewed items (listings.feedback) as training rows for `listings train --extra-data`"
COLUMNS = ["title", "category", "tags", "decision", "reviewer", "item_id", "listing_version"]


def latest_decisions(settings: Settings, timeout_s: float = 5.0) -> dict[str, dict]:
    """The latest decision per item on `listings.feedback` (later records win, as compaction keeps them)."""
    from stream.topics import read_all

    out: dict[str, dict] = {}
    for m in read_all(settings, settings.topics.feedback, timeout_s):
        try:
            d = orjson.loads(m.value)
        except orjson.JSONDecodeError:
            continue
        if isinstance(d, dict) and isinstance(d.get("item_id"), str):
            out[d["item_id"]] = d
    return out


def export(settings: Settings, path: Path) -> dict[str, int]:
    decisions = latest_decisions(settings)
    r = connections.redis_sync(settings.redis, decode_responses=True)
    counts = {"accepted": 0, "corrected": 0, "skipped": 0}
    try:
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            for item_id, d in decisions.items():
                h = r.hgetall(keys.listing(item_id))
                # only decisions that hold: applied by the worker, for the edit the store still has
                if h.get("label_source") != "human" or h.get("listing_version") != str(d.get("listing_version")):
                    counts["skipped"] += 1
                    continue
                writer.writerow(
                    {
                        "title": h.get("title", ""),
                        "category": h.get("category_path", ""),
                        "tags": "|".join(d.get("tags", [])),
                        "decision": d.get("decision", ""),
                        "reviewer": d.get("reviewer", ""),
                        "item_id": item_id,
                        "listing_version": d.get("listing_version"),
                    }
                )
                counts[d.get("decision", "corrected")] = counts.get(d.get("decision", "corrected"), 0) + 1
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
    counts = export(settings, args.out)
    print(
        f"wrote {args.out}: {counts['accepted']} accepted, {counts['corrected']} corrected "
        f"({counts['skipped']} decisions not applied or superseded by a newer edit, left out)"
    )
    return 0
