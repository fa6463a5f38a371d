"""Optional OpenTelemetry spans: one span per micro-batch with a child span per stage.

Off by default (`LISTINGS_OTEL_EXPORTER=none`): nothing is imported and no collector is needed. `console` prints
spans (debugging); `otlp` sends them where the standard `OTEL_EXPORTER_OTLP_*` variables say. The SDK is an
optional install: `pip install 'listing-classifier[otel]'`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("listings.tracing")


def tracer(exporter: str) -> Any:
    if exporter == "none":
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        log.warning("LISTINGS_OTEL_EXPORTER=%s but the OpenTelemetry SDK is not installed: no spans", exporter)
        return None
    if exporter == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError:
            log.warning("LISTINGS_OTEL_EXPORTER=otlp needs opentelemetry-exporter-otlp-proto-http: no spans")
            return None
        span_exporter: Any = OTLPSpanExporter()
    else:
        span_exporter = ConsoleSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "listing-classifier"}))
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    return provider.get_tracer("listings")


def batch_span(tracer: Any, timing: Any, order: Sequence[str]) -> None:
    """The batch as a span from its dispatch, its stages (in `order`) laid end to end as child spans."""
    from opentelemetry import trace

    start = int(timing.dispatched_ms * 1_000_000)
    total = int(sum(timing.stages.values()) * 1_000_000_000)
    with tracer.start_as_current_span("batch", start_time=start, end_on_exit=False) as span:
        span.set_attribute("listings.source", timing.source)
        span.set_attribute("listings.events", timing.events)
        at = start
        for stage in order:
            if stage in timing.stages:
                length = int(timing.stages[stage] * 1_000_000_000)
                child = tracer.start_span(stage, context=trace.set_span_in_context(span), start_time=at)
                child.end(end_time=at + length)
                at += length
        span.end(end_time=start + total)
