"""Held-out real listings for the demo and the benchmark: Flipkart rows whose titles fall in the default
model's test split (never trained on, never used for model selection), one per distinct title."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from training import corpus, dataset
from training.train import DEFAULTS, default_data


def held_out_listings(data_dir: Path, n: int | None = None, seed: int = 1) -> list[dict[str, Any]]:
    """Listing events (`item_id`, `title`, `brand`, plus the truth as `true_category`), shuffled."""
    source = default_data(data_dir).categories
    seen: set[str] = set()
    rows = []
    for i, row in enumerate(dataset.read(source, categories=True)):
        key = corpus.title_key(row.title)
        if key in seen or corpus.split_of(key, DEFAULTS["seed"]) != "test":
            continue
        seen.add(key)
        rows.append(
            {
                "item_id": f"fk-{i}",
                "title": row.title,
                "brand": row.brand or None,
                "true_category": " > ".join(row.path),
            }
        )
    random.Random(seed).shuffle(rows)
    return rows if n is None else rows[:n]
