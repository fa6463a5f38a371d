"""One micro-batch through the pipeline.

`prepare` validates and classifies (may run for several batches at once: Triton batches them);
`commit_outputs` writes the sinks and must be called in consumption order, one batch at a time, so the
outputs of an item keep the order of its events. Only after it returns may the batch's offsets be
committed: every sink has acknowledged by then."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import orjson

from stream import metrics
from stream.classify.triton_client import Classification, TritonClassifier
from stream.config import Settings
from stream.events.contract import InvalidEvent, Listing, parse_listing
from stream.events.dlq import dlq_key, dlq_record
from stream.pipeline.records import InRecord, classified_record, record_digest, redis_fields, tag_update_record
from stream.pipeline.timing import BatchTiming
from stream.sinks.kafka_out import KafkaOut, OutRecord
from stream.sinks.redis_store import RedisStore, StoreItem
from stream.timefmt import iso

log = logging.getLogger("listings.pipeline")


@dataclass(frozen=True, slots=True)
class Classified:
    record: InRecord
    listing: Listing
    result: Classification
    model_name: str
    model_version: str


@dataclass
class Prepared:
    records: list[InRecord]
    classified: list[Classified]
    invalid: list[tuple[InRecord, InvalidEvent]]
    timing: BatchTiming


@dataclass
class BatchStats:
    events: int = 0
    classified: int = 0
    dlq: int = 0
    review: int = 0
    stale: int = 0
    unchanged: int = 0
    tag_updates: int = 0
    statuses: Counter[str] = field(default_factory=Counter)

    def add(self, other: BatchStats) -> None:
        self.events += other.events
        self.classified += other.classified
        self.dlq += other.dlq
        self.review += other.review
        self.stale += other.stale
        self.unchanged += other.unchanged
        self.tag_updates += other.tag_updates
        self.statuses.update(other.statuses)


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        *,
        source: str,
        classifier: TritonClassifier,
        store: RedisStore,
        out: KafkaOut,
    ) -> None:
        self.settings = settings
        self.source = source
        self.classifier = classifier
        self.store = store
        self.out = out

    @classmethod
    def from_settings(
        cls, settings: Settings, *, source: str, priority: int, model_version: str = "", serve_from: str = ""
    ) -> Pipeline:
        backoff = settings.worker.retry_max_backoff_s
        return cls(
            settings,
            source=source,
            classifier=TritonClassifier(
                settings.triton.url,
                settings.triton.model_name,
                priority=priority,
                timeout_s=settings.triton.timeout_s,
                max_backoff_s=backoff,
                model_version=model_version,
                serve_from=serve_from,
            ),
            store=RedisStore(settings.redis, max_backoff_s=backoff),
            out=KafkaOut(settings.kafka, max_backoff_s=backoff),
        )

    async def start(self) -> None:
        await self.out.start()

    async def stop(self) -> None:
        await self.out.stop()
        await self.store.close()
        await self.classifier.close()

    async def prepare(self, records: list[InRecord], timing: BatchTiming | None = None) -> Prepared:
        timing = timing or BatchTiming(self.source, len(records))
        metrics.EVENTS_IN.labels(self.source).inc(len(records))
        valid: list[tuple[InRecord, Listing]] = []
        invalid: list[tuple[InRecord, InvalidEvent]] = []
        for rec in records:
            try:
                listing = parse_listing(rec.value, rec.key)
            except InvalidEvent as exc:
                invalid.append((rec, exc))
                continue
            if listing.key_mismatch:
                metrics.KEY_MISMATCH.labels(self.source).inc()
            valid.append((rec, listing))
        classified: list[Classified] = []
        if valid:
            metrics.BATCH_SIZE.observe(len(valid))
            await self._classify(valid, classified, invalid, timing)
        timing.mark("classified")
        return Prepared(records, classified, invalid, timing)

    async def _classify(
        self,
        valid: list[tuple[InRecord, Listing]],
        classified: list[Classified],
        invalid: list[tuple[InRecord, InvalidEvent]],
        timing: BatchTiming,
    ) -> None:
        """One Triton request for the batch. Should the model reject it (not a down server: those are retried),
        halve the batch until the rejected events are alone, and dead-letter those: one poison event must
        neither stop the worker nor take its batch-mates down with it."""
        from tritonclient.utils import InferenceServerException

        listings = [lst for _, lst in valid]
        try:
            res = await self.classifier.classify(
                [lst.title for lst in listings],
                [lst.description or "" for lst in listings],
                [lst.brand or "" for lst in listings],
            )
        except InferenceServerException as exc:
            if len(valid) == 1:
                log.warning("the model rejected an event", extra={"fields": {"error": str(exc)}})
                invalid.append((valid[0][0], InvalidEvent(f"the model rejected this event: {exc}", "model_rejected")))
                return
            half = len(valid) // 2
            await self._classify(valid[:half], classified, invalid, timing)
            await self._classify(valid[half:], classified, invalid, timing)
            return
        timing.add("triton_compute", res.compute_s)
        timing.add("triton_queue", res.total_s - res.compute_s)
        if len(res.results) != len(listings):
            raise RuntimeError(f"triton returned {len(res.results)} results for {len(listings)} listings")
        for (rec, lst), one in zip(valid, res.results, strict=True):
            classified.append(Classified(rec, lst, one, res.model_name, res.model_version))

    def _dlq_records(self, prepared: Prepared) -> list[OutRecord]:
        out = []
        for rec, exc in prepared.invalid:
            value = dlq_record(
                error=exc.reason,
                error_type=exc.error_type,
                topic=rec.topic,
                partition=rec.partition,
                offset=rec.offset,
                key=rec.key,
                payload=rec.value,
                source=self.source,
            )
            out.append(OutRecord(self.settings.topics.dlq, dlq_key(rec.key), value))
            metrics.DLQ.labels(self.source, exc.error_type).inc()
        return out

    async def commit_outputs(self, prepared: Prepared) -> BatchStats:
        """Write every sink for this batch; returns when all have acknowledged."""
        topics = self.settings.topics
        stats = BatchStats(events=len(prepared.records), dlq=len(prepared.invalid))
        outputs = self._dlq_records(prepared)
        now_ms = time.time() * 1000
        records = []
        items = []
        for c in prepared.classified:
            event_ms = c.listing.listed_at_ms if c.listing.listed_at_ms is not None else c.record.timestamp_ms
            record = classified_record(
                c.listing,
                c.result,
                model_name=c.model_name,
                model_version=c.model_version,
                source=self.source,
                event_time_ms=event_ms,
                classified_at_ms=now_ms,
                review_threshold=self.settings.worker.review_threshold,
            )
            records.append(record)
            items.append(
                StoreItem(
                    item_id=c.listing.item_id,
                    listing_version=c.listing.listing_version,
                    model_version=int(c.model_version),
                    category_id=str(c.result.category["id"]),
                    tags=[t["tag"] for t in c.result.tags],
                    fields=redis_fields(record, c.listing.title),
                    queued_at_ms=int(now_ms),
                    origin=f"{c.record.topic}:{c.record.partition}:{c.record.offset}",
                    digest=record_digest(record),
                )
            )
        t = prepared.timing
        t0 = time.perf_counter()
        outcomes = await self.store.apply(items)
        t.add("redis", time.perf_counter() - t0)
        written_ms = time.time() * 1000
        to_confirm = []
        for c, record, item, outcome in zip(prepared.classified, records, items, outcomes, strict=True):
            stats.statuses[outcome.status] += 1
            if c.record.timestamp_ms is not None:
                metrics.E2E_LATENCY.labels(self.source).observe(max(0.0, (written_ms - c.record.timestamp_ms) / 1000))
            if outcome.status == "stale":
                stats.stale += 1  # a newer result is stored: this one must not reach any output
                continue
            if not outcome.needs_outputs:
                stats.unchanged += 1  # already stored and published (e.g. a replay with the same model)
                continue
            to_confirm.append(item)
            key = record["item_id"].encode()
            value = orjson.dumps(record)
            outputs.append(OutRecord(topics.classified, key, value))
            stats.classified += 1
            if record["needs_review"]:
                outputs.append(OutRecord(topics.review, key, value))
                stats.review += 1
            if outcome.added or outcome.removed:
                update = tag_update_record(
                    record["item_id"], outcome.added, outcome.removed, outcome.tags, record["model"], iso(now_ms)
                )
                outputs.append(OutRecord(topics.tag_updates, key, orjson.dumps(update)))
                stats.tag_updates += 1
        t0 = time.perf_counter()
        await self.out.send_all(outputs)
        t.add("kafka_send", time.perf_counter() - t0)
        t0 = time.perf_counter()
        await self.store.confirm_outputs(to_confirm)
        t.add("redis", time.perf_counter() - t0)
        metrics.EVENTS_OUT.labels(self.source).inc(stats.classified)
        metrics.REVIEW.labels(self.source).inc(stats.review)
        metrics.STALE.labels(self.source).inc(stats.stale)
        metrics.TAG_UPDATES.labels(self.source).inc(stats.tag_updates)
        return stats
