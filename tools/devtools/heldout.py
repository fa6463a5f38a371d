"""Held-out real listings for the demo and the benchmark: Flipkart rows whose titles fall in the default
model's test split (never trained on, never used for model selection), one per distinct title."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from training import data
from training.train import DEFAULTS


def held_out_listings(data_dir: Path, n: int | None = None, seed: int = 1) -> list[dict[str, Any]]:
    """Listing events (`item_id`, `title`, `brand`, `price`, plus the truth as `true_category`), shuffled."""
    seen: set[str] = set()
    rows = []
    for row in data.read_csv(Path(data_dir) / data.FLIPKART):
        key = data.title_key(row["product_name"])
        if not key or key in seen or data.split_of(key, DEFAULTS["seed"], data.FLIPKART_SPLITS) != "dev":
            continue
        seen.add(key)
        rows.append(
            {
                "item_id": row["uniq_id"],
                "title": row["product_name"],
                "brand": row.get("brand", "").strip() or None,
                "true_category": row.get("l3") or None,
            }
        )
    random.Random(seed).shuffle(rows)
    return rows if n is None else rows[:n]
