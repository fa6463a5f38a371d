"""Prometheus metrics of the worker and the backfill."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_IN = Counter("listings_events_in_total", "Events consumed", ["source"])
EVENTS_OUT = Counter("listings_events_classified_total", "Events classified and written to every sink", ["source"])
DLQ = Counter("listings_dlq_total", "Events sent to the dead-letter topic", ["source", "error_type"])
REVIEW = Counter("listings_review_total", "Results sent to the review queue", ["source"])
STALE = Counter("listings_stale_total", "Results not applied: Redis already held a newer one", ["source"])
TAG_UPDATES = Counter("listings_tag_updates_total", "Tag-set changes published", ["source"])
KEY_MISMATCH = Counter(
    "listings_key_mismatch_total", "Events whose Kafka key differs from their item_id (item_id wins)", ["source"]
)
RETRIES = Counter("listings_retries_total", "Retries of a dependency call", ["dependency"])
BATCH_SIZE = Histogram(
    "listings_batch_size", "Events per micro-batch sent to Triton", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
)
TRITON_LATENCY = Histogram(
    "listings_triton_latency_seconds",
    "Triton request latency per micro-batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
E2E_LATENCY = Histogram(
    "listings_end_to_end_latency_seconds",
    "From the event's produce time (Kafka timestamp) to its Redis write",
    ["source"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
CONSUMER_LAG = Gauge("listings_consumer_lag", "High watermark minus next offset to process", ["topic", "partition"])
IN_FLIGHT = Gauge("listings_batches_in_flight", "Micro-batches between Triton request and sink acknowledgement")
# where an event's time goes, stage by stage (see stream/pipeline/timing.py)
STAGE = Histogram(
    "listings_stage_seconds",
    "Time spent in one pipeline stage (per event for kafka_wait and batch_forming, per batch otherwise)",
    ["stage", "source"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
