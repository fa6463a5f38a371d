"""What flows through the pipeline: raw Kafka records in, the output records of the design out."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from stream.classify.triton_client import Classification
from stream.events.contract import MAX_EPOCH_MS, Listing
from stream.pathfmt import SEPARATOR
from stream.timefmt import iso


@dataclass(frozen=True, slots=True)
class InRecord:
    """One consumed Kafka record, as the source (Faust or the backfill consumer) saw it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None  # the record's Kafka timestamp (the producer's send time)
    received_ms: float | None = None  # when this process received it (wall clock, ms)


def kafka_time_ms(ms: float | None) -> int | None:
    """A Kafka record's timestamp as epoch ms, or None when it has none (-1) or one no clock could give (a producer
    stamping microseconds: year 55,000), which would otherwise break every use of the event's time. The
    broker accepts any timestamp (`message.timestamp.type=CreateTime`, no bound by default)."""
    if ms is None or not 0 <= ms <= MAX_EPOCH_MS:
        return None
    return int(ms)


def classified_record(
    listing: Listing,
    result: Classification,
    *,
    model_name: str,
    model_version: str,
    source: str,
    event_time_ms: int | None,
    classified_at_ms: float,
    review_threshold: float,
) -> dict[str, Any]:
    """The `listings.classified` record of one item (also what `listings.review` carries)."""
    return {
        "item_id": listing.item_id,
        "listing_version": listing.listing_version,
        "category": result.category,
        "confidence": result.confidence,
        "depth": result.depth,
        "level_confidence": list(result.level_confidence),
        "alternatives": result.alternatives,
        "tags": result.tags,
        "model": {"name": model_name, "version": model_version},
        "source": source,
        "event_time": iso(event_time_ms) if event_time_ms is not None else None,
        "classified_at": iso(classified_at_ms),
        "needs_review": result.confidence < review_threshold,
    }


def path_field(path: Sequence[str]) -> str:
    """A category path as the `category_path` hash field holds it: `a > b > c`."""
    return SEPARATOR.join(path)


def stored_path(field: str) -> list[str]:
    """The category path a `category_path` hash field holds (`[]` for a blank one)."""
    return [p for p in field.split(SEPARATOR) if p]


def redis_fields(record: dict[str, Any], title: str) -> dict[str, str]:
    """The `listing:{item_id}` hash fields (strings) for a classified record."""
    cat = record["category"]
    return {
        "item_id": record["item_id"],
        "title": title,
        "listing_version": str(record["listing_version"]),
        "category_id": str(cat["id"]),
        "category_name": str(cat.get("name", "")),
        "category_path": path_field(cat.get("path", [])),
        "confidence": f"{record['confidence']:.6f}",
        "depth": str(record.get("depth", len(cat.get("path", [])))),
        "alternatives": orjson.dumps(record["alternatives"]).decode(),
        "tag_scores": orjson.dumps(record["tags"]).decode(),
        "model_name": record["model"]["name"],
        "model_version": str(record["model"]["version"]),
        "source": record["source"],
        "event_time": record["event_time"] or "",
        "classified_at": record["classified_at"],
        "needs_review": "1" if record["needs_review"] else "0",
    }


def tag_update_record(
    item_id: str, added: list[str], removed: list[str], tags: list[str], model: dict[str, str], classified_at: str
) -> dict[str, Any]:
    return {
        "item_id": item_id,
        "added": added,
        "removed": removed,
        "tags": tags,
        "model": model,
        "classified_at": classified_at,
    }


def record_digest(record: dict[str, Any]) -> str:
    """A digest of an output record, all but `classified_at` (when it was stored): the same input record answered
    the same way gets the same digest (apply_result.lua re-emits what Redis holds, or replaces it)."""
    body = {k: v for k, v in record.items() if k != "classified_at"}
    return hashlib.blake2b(orjson.dumps(body, option=orjson.OPT_SORT_KEYS), digest_size=12).hexdigest()
