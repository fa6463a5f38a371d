"""Where an event's time goes, stage by stage, from the Kafka record to the acknowledgement.

| stage | per | from → to |
|---|---|---|
| `kafka_wait` | event | the record's Kafka timestamp (producer send) → received by the worker |
| `batch_forming` | event | received (or freed from back-pressure) → in a formed micro-batch (`LISTINGS_MAX_WAIT_MS`) |
| `in_flight_wait` | event | back-pressure: all `LISTINGS_MAX_IN_FLIGHT` batches busy (see below) |
| `triton_compute` | batch | the model's `execute()` time for the merged batch that served it (`TIMING` output) |
| `triton_queue` | batch | the rest of the request: dynamic-batcher queue, gRPC, (de)serialization |
| `sink_wait` | batch | classified → its turn at the sinks (sinks run in consumption order) |
| `redis` | batch | the Lua write and the outputs-confirmed mark |
| `kafka_send` | batch | the output records until every broker acknowledgement |
| `ack` | batch | acking the batch's offsets to the consumer |

`in_flight_wait` is the time an event waited because every in-flight slot was taken: received while the worker
waited for a slot (until it returned), plus its own batch's wait for one. Every stage is a
`listings_stage_seconds{stage,source}` histogram. With `LISTINGS_TIMINGS_FILE` set, each batch is
also appended there as one JSON line (the benchmark reads it); with an OpenTelemetry tracer configured
(`LISTINGS_OTEL_EXPORTER`), each batch is a span with one child span per stage.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from stream import metrics

# in the order an event meets them (spans and the benchmark's breakdown list them so)
EVENT_STAGES = ("kafka_wait", "batch_forming", "in_flight_wait")
BATCH_STAGES = ("triton_queue", "triton_compute", "sink_wait", "redis", "kafka_send", "ack")


def now_ms() -> float:
    return time.time() * 1000


@dataclass
class BatchTiming:
    source: str
    events: int = 0
    dispatched_ms: float = field(default_factory=now_ms)
    stages: dict[str, float] = field(default_factory=dict)  # stage -> seconds (per batch)
    event_stages: dict[str, list[float]] = field(default_factory=dict)  # stage -> seconds per event
    marks: dict[str, float] = field(default_factory=dict)  # named wall-clock instants (ms)

    def add(self, stage: str, seconds: float) -> None:
        self.stages[stage] = self.stages.get(stage, 0.0) + max(0.0, seconds)

    def events_(self, stage: str, seconds: list[float]) -> None:
        self.event_stages[stage] = [max(0.0, s) for s in seconds]

    def mark(self, name: str) -> None:
        self.marks[name] = now_ms()


class Recorder:
    """Observes finished batches into the histograms, the timings file and the tracer."""

    def __init__(self, timings_file: Path | None = None, tracer: object | None = None) -> None:
        self._file = open(timings_file, "ab") if timings_file else None
        self._lock = threading.Lock()
        self._tracer = tracer

    def record(self, t: BatchTiming) -> None:
        for stage, seconds in t.stages.items():
            metrics.STAGE.labels(stage, t.source).observe(seconds)
        for stage, values in t.event_stages.items():
            hist = metrics.STAGE.labels(stage, t.source)
            for v in values:
                hist.observe(v)
        if self._file is not None:
            line = {"source": t.source, "events": t.events, "at_ms": t.dispatched_ms, "stages": t.stages}
            line["event_stages_max"] = {k: max(v) for k, v in t.event_stages.items() if v}
            with self._lock:
                self._file.write(orjson.dumps(line) + b"\n")
                self._file.flush()
        if self._tracer is not None:
            from stream import tracing

            tracing.batch_span(self._tracer, t, BATCH_STAGES)
