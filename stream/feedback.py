"""Human review decisions: the `listings.feedback` contract, and applying decisions to the item state and the
output topics.

`listings.feedback` (key `item_id`, value one JSON object):

| field | rule |
|---|---|
| `item_id` | required string, the reviewed item |
| `listing_version` | required integer: the edit the reviewer saw (the one stored) |
| `decision` | `accepted` (the model's category was right) or `corrected` |
| `category_id` | required: the chosen category, an id of the taxonomy of the model version that classified the item |
| `tags` | list of tag names (the reviewer's full set), each a tag of that version's taxonomy |
| `reviewer` | required string; `decided_at` ISO-8601 (default: when applied) |

A decision wins over every model result for that `listing_version` (the Lua rule in `apply_result.lua`): replays
and backfills with any model never overwrite it; a newer `listing_version` from the seller hands the item back to
the model. Applied, it is written to Redis (`label_source: human`, the reviewer, the decision; removed from the
review queue) and published to `listings.classified` with `source: "human"` (and to `listings.tag-updates` when the
tags changed). Bad feedback goes to `listings.dlq` with a reason (counted in
`listings_dlq_total{source="feedback"}`): a broken record (`not_json`, `missing_field`, `wrong_type`),
`feedback_unknown_item`, `feedback_unknown_category`, `feedback_unknown_tag` (a tag the version's taxonomy lacks),
`feedback_older_version` (the seller has edited the item since), `feedback_unknown_version` (a listing_version never
stored). The review page refuses each of these before it publishes (`stream/review/app.py`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson

from stream import metrics
from stream.events.contract import MAX_EPOCH_MS, InvalidEvent
from stream.events.dlq import dlq_key, dlq_record
from stream.pipeline.records import InRecord, path_field, stored_path, tag_update_record
from stream.sinks.kafka_out import OutRecord
from stream.sinks.redis_store import StoreItem
from stream.timefmt import iso, iso_ms

log = logging.getLogger("listings.feedback")
DECISIONS = ("accepted", "corrected")
REFUSED = {
    "unknown_item": "no item with this item_id has been classified",
    "older_version": "the seller has edited the item since: the decision is for an older listing_version",
    "unknown_version": "this listing_version was never classified",
}


@dataclass(frozen=True)
class Feedback:
    item_id: str
    listing_version: int
    decision: str
    category_id: str
    tags: tuple[str, ...]
    reviewer: str
    decided_at_ms: float


def parse_feedback(value: bytes | None) -> Feedback:
    if not value:
        raise InvalidEvent("empty feedback record", "empty_value")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not valid UTF-8 JSON: {str(exc)[:200]}", "not_json") from None
    if not isinstance(obj, dict):
        raise InvalidEvent("feedback is not a JSON object", "not_object")
    for name in ("item_id", "category_id", "reviewer", "decision"):
        if not isinstance(obj.get(name), str) or not obj[name].strip():
            kind = "missing_field" if obj.get(name) is None else "wrong_type"
            raise InvalidEvent(f"{name!r} must be a non-empty string", kind)
    lv = obj.get("listing_version")
    if isinstance(lv, bool) or not isinstance(lv, int) or lv < 0:
        raise InvalidEvent("'listing_version' must be an integer >= 0", "missing_field" if lv is None else "wrong_type")
    if obj["decision"] not in DECISIONS:
        raise InvalidEvent(f"'decision' must be one of {', '.join(DECISIONS)}", "wrong_type")
    tags = obj.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise InvalidEvent("'tags' must be a list of strings", "wrong_type")
    decided = obj.get("decided_at")
    try:
        decided_ms = iso_ms(decided) if isinstance(decided, str) else time.time() * 1000
    except ValueError:
        raise InvalidEvent("'decided_at' is not an ISO-8601 time", "bad_timestamp") from None
    if not 0 <= decided_ms <= MAX_EPOCH_MS:  # "9999-12-31T23:59:59-14:00" parses, and is in year 10000
        raise InvalidEvent(f"'decided_at' is out of range: {decided[:64]!r}", "bad_timestamp")
    return Feedback(
        obj["item_id"], lv, obj["decision"], obj["category_id"], tuple(sorted(set(tags))), obj["reviewer"], decided_ms
    )


@dataclass(frozen=True)
class Taxonomy:
    """What a decision is checked against: the categories (by id) and tags of a model version."""

    categories: dict[str, dict]
    tags: frozenset[str]
    note: str  # which taxonomies were checked, for a refusal's reason
    named_parents: frozenset[str] = frozenset()  # ids of parents whose results may name a new leaf

    def knows(self, category_id: str, given: str = "") -> bool:
        """A category of the taxonomy, or `given` (the item's stored category) when it is a leaf named after the
        listing's brand under a named parent: a result may give one the list lacks (`"new": true`), and a reviewer
        may accept it."""
        if category_id in self.categories:
            return True
        return category_id == given and category_id.rpartition(".")[0] in self.named_parents

    def refusal(self, fb: Feedback, given: str = "") -> tuple[str, str] | None:
        """(reason, error type) when the decision names a category or tag this taxonomy lacks, else None; `given`:
        the item's stored category id."""
        if not self.knows(fb.category_id, given):
            return f"category {fb.category_id!r} is not in the taxonomy of {self.note}", "feedback_unknown_category"
        unknown = [t for t in fb.tags if t not in self.tags]
        if unknown:
            shown = ", ".join(repr(t[:64]) for t in unknown[:5])
            return f"tag(s) {shown} not in the tags of {self.note}", "feedback_unknown_tag"
        return None


async def taxonomy_of(classifier: Any, version: str) -> Taxonomy:
    """The taxonomy a decision is checked against: that of the version which classified the item, or — when Triton
    no longer serves it (two versions stay loaded) — the version requests go to now. Waiting for an unloaded
    version would hold every later decision for ever. The worker's applier and the review page both use it."""
    from stream.classify.triton_client import VersionNotServed

    try:
        tax = await classifier.taxonomy(version, wait_for_version=False)
        note = f"model version {version}"
    except VersionNotServed:
        tax = await classifier.taxonomy()
        served = classifier.model_version or "(newest)"
        note = f"model version {version} (no longer served) nor of the served version {served}"
    return Taxonomy(
        {c["id"]: c for c in tax["categories"]},
        frozenset(tax.get("tags") or ()),
        note,
        frozenset(p["id"] for p in tax.get("named_parents") or ()),
    )


class FeedbackApplier:
    """Applies decisions with the pipeline's own sinks (same Redis rules, same idempotent producer)."""

    def __init__(self, pipeline: Any) -> None:
        self.pipeline = pipeline

    async def apply(self, records: list[InRecord]) -> dict[str, int]:
        settings = self.pipeline.settings
        topics = settings.topics
        outputs: list[OutRecord] = []
        counts: dict[str, int] = {}

        def reject(rec: InRecord, reason: str, error_type: str) -> None:
            value = dlq_record(
                error=reason,
                error_type=error_type,
                topic=rec.topic,
                partition=rec.partition,
                offset=rec.offset,
                key=rec.key,
                payload=rec.value,
                source="feedback",
            )
            outputs.append(OutRecord(topics.dlq, dlq_key(rec.key), value))
            counts[error_type] = counts.get(error_type, 0) + 1
            metrics.DLQ.labels("feedback", error_type).inc()

        stored = await self.pipeline.store.current([self._item_id(r) for r in records])
        items: list[tuple[InRecord, Feedback, StoreItem, dict]] = []
        for rec in records:
            try:
                fb = parse_feedback(rec.value)
            except InvalidEvent as exc:
                reject(rec, exc.reason, exc.error_type)
                continue
            h = stored.get(fb.item_id)
            if not h:
                reject(rec, REFUSED["unknown_item"], "feedback_unknown_item")
                continue
            taxonomy = await taxonomy_of(self.pipeline.classifier, h.get("model_version", ""))
            refused = taxonomy.refusal(fb, h.get("category_id", ""))
            if refused is not None:
                reject(rec, *refused)
                continue
            cat = taxonomy.categories.get(fb.category_id) or {  # a named leaf the result gave: as stored
                "id": fb.category_id,
                "name": h.get("category_name", ""),
                "path": stored_path(h.get("category_path", "")),
            }
            record = {
                "item_id": fb.item_id,
                "listing_version": fb.listing_version,
                "category": {"id": cat["id"], "name": cat["name"], "path": cat["path"]},
                "confidence": 1.0,
                "depth": len(cat["path"]),
                "level_confidence": [1.0] * len(cat["path"]),
                "alternatives": [],
                "tags": [{"tag": t, "score": 1.0} for t in fb.tags],
                "model": {"name": settings.triton.model_name, "version": h.get("model_version", "")},
                "source": "human",
                "event_time": h.get("event_time") or None,
                "classified_at": iso(fb.decided_at_ms),
                "needs_review": False,
                "review": {"decision": fb.decision, "reviewer": fb.reviewer},
            }
            fields = {
                "item_id": fb.item_id,
                "category_name": cat["name"],
                "category_path": path_field(cat["path"]),
                "confidence": "1.000000",
                "depth": str(len(cat["path"])),
                "tag_scores": orjson.dumps(record["tags"]).decode(),
                "source": "human",
                "classified_at": record["classified_at"],
                "needs_review": "0",
                "reviewer": fb.reviewer,
                "decision": fb.decision,
                "decided_at": record["classified_at"],
            }
            item = StoreItem(fb.item_id, fb.listing_version, 0, cat["id"], list(fb.tags), fields, mode="human")
            items.append((rec, fb, item, record))
        outcomes = await self.pipeline.store.apply([it for _, _, it, _ in items])
        confirm = []
        for (rec, fb, item, record), outcome in zip(items, outcomes, strict=True):
            if outcome.status in REFUSED:
                reject(rec, REFUSED[outcome.status], f"feedback_{outcome.status}")
                continue
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
            if not outcome.needs_outputs:
                continue
            key = fb.item_id.encode()
            outputs.append(OutRecord(topics.classified, key, orjson.dumps(record)))
            if outcome.added or outcome.removed:
                update = tag_update_record(
                    fb.item_id, outcome.added, outcome.removed, outcome.tags, record["model"], record["classified_at"]
                )
                outputs.append(OutRecord(topics.tag_updates, key, orjson.dumps(update)))
            confirm.append(item)
        await self.pipeline.out.send_all(outputs)
        await self.pipeline.store.confirm_outputs(confirm)
        return counts

    @staticmethod
    def _item_id(rec: InRecord) -> str:
        try:
            value = orjson.loads(rec.value or b"{}")
            return str(value.get("item_id", "")) if isinstance(value, dict) else ""
        except orjson.JSONDecodeError:
            return ""
