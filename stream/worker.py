"""`listings worker`: the Faust app that classifies `listings.new` as it arrives.

Every process started with this command joins one consumer group; Kafka spreads the input partitions
over them (scale out = start more processes). Each event is validated, micro-batched
(`stream.noack_take(max_batch, within=max_wait)`), classified by Triton and written to Redis and the
output topics; an event is acked (so its offset may be committed) only after every sink acknowledged
it, in consumption order, so Faust never commits past an unfinished event."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

from stream.config import Settings

log = logging.getLogger("listings.worker")
EXIT_UNEXPECTED = 70  # EX_SOFTWARE

HELP = "run the streaming worker (Faust) on listings.new"


def make_app(settings: Settings) -> Any:
    import faust

    from stream import connections, metrics
    from stream.classify.triton_client import LIVE_PRIORITY
    from stream.pipeline.conveyor import Conveyor
    from stream.pipeline.process import BatchStats, Pipeline
    from stream.pipeline.records import InRecord

    w = settings.worker
    datadir = w.state_dir / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    brokers, credentials = connections.faust_broker(settings.kafka)
    app = faust.App(
        w.group_id,
        broker=brokers,
        broker_credentials=credentials,
        broker_session_timeout=settings.kafka.session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.kafka.heartbeat_interval_ms / 1000,
        store="memory://",
        datadir=str(datadir / "{conf.id}"),
        web_enabled=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        broker_commit_every=max(1, w.max_batch),
        stream_buffer_maxsize=max(256, w.max_batch * w.max_in_flight * 2),
        producer_acks=-1,
    )
    source = app.topic(
        settings.topics.input, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    next_offset: dict[tuple[str, int], int] = {}

    @app.agent(source, name="classify")
    async def classify(stream: Any) -> None:
        pipeline = Pipeline.from_settings(settings, source="live", priority=LIVE_PRIORITY)
        await pipeline.start()

        async def done(events: list[Any], stats: BatchStats) -> None:
            for event in events:  # in offset order: Faust commits only contiguous acked offsets
                await stream.ack(event)
                msg = event.message
                next_offset[(msg.topic, msg.partition)] = msg.offset + 1
            log.debug("batch done", extra={"fields": {"events": stats.events, "statuses": dict(stats.statuses)}})

        conveyor = Conveyor(pipeline, w.max_in_flight, done)
        conveyor.start()
        try:
            async for events in stream.noack_take(w.max_batch, within=w.max_wait_ms / 1000):
                records = [
                    InRecord(
                        topic=e.message.topic,
                        partition=e.message.partition,
                        offset=e.message.offset,
                        key=e.message.key,
                        value=e.message.value,
                        timestamp_ms=int(e.message.timestamp * 1000) if e.message.timestamp else None,
                    )
                    for e in events
                ]
                await conveyor.submit(records, events)
        except Exception:
            # Not a down dependency (those are retried) but a bug or a broken invariant. Restarting the agent
            # in place would go on past the failed batch's events; exiting makes a supervisor restart the
            # worker, which resumes from the committed offsets: nothing is skipped.
            log.critical("unexpected failure: exiting so the uncommitted events are redelivered", exc_info=True)
            os._exit(EXIT_UNEXPECTED)
        finally:
            await conveyor.cancel()
            await pipeline.stop()

    @app.timer(interval=5.0)
    async def report_lag() -> None:
        consumer = app.consumer
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            pos = next_offset.get((tp.topic, tp.partition))
            if hw is not None and pos is not None:
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, hw - pos))

    return app


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics-port", type=int, default=None, help="Prometheus port (default LISTINGS_METRICS_PORT)"
    )
    parser.add_argument("--log-level", default="INFO")


def run(args: argparse.Namespace, settings: Settings) -> int:
    import faust

    from stream import logs, metrics

    if args.metrics_port is not None:
        settings = settings.replace(worker={"metrics_port": args.metrics_port})
    logs.setup(args.log_level)
    metrics.serve(settings.worker.metrics_host, settings.worker.metrics_port)
    app = make_app(settings)
    fields = {"group": settings.worker.group_id, "topic": settings.topics.input}
    log.info("worker starting", extra={"fields": fields})
    worker = faust.Worker(
        app, loglevel=args.log_level, logging_config=logs.logging_config(args.log_level), redirect_stdouts=False
    )
    worker.execute_from_commandline()
    return 0
