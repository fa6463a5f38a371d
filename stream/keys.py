"""Redis key names: the layout of the item state, its indexes and the control keys, in one place."""

from __future__ import annotations

LISTING = "listing:"  # hash: the current classification of an item
CATEGORY = "category:"  # set of item ids per category id
TAG = "tag:"  # set of item ids per tag


def listing(item_id: str) -> str:
    return LISTING + item_id


def category(category_id: str) -> str:
    return CATEGORY + category_id


def tag(name: str) -> str:
    return TAG + name


def backfill_plan(group: str) -> str:
    """The planned start/end offsets of a backfill run (kept so a resumed run stops where it planned)."""
    return f"backfill:plan:{group}"


REVIEW_QUEUE = "review:queue"  # sorted set: items waiting for a human, scored by when they were queued (ms)
REVIEW_STATS = "review:decisions"  # hash: decision -> items decided that way (accepted, corrected)
