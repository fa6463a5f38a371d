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
EXIT_CONFIG = 78  # EX_CONFIG: credentials refused
EXIT_STOP_TIMEOUT = 75  # EX_TEMPFAIL: told to stop, and the stop outran LISTINGS_SHUTDOWN_TIMEOUT_S
PROBE_TIMEOUT_S = 3.0

HELP = "run the streaming worker (Faust) on listings.new"


def make_app(settings: Settings) -> Any:
    import asyncio
    import time

    import faust

    from stream import connections, errors, metrics, tracing
    from stream.classify.triton_client import LIVE_PRIORITY
    from stream.events.fetching import bound_fetch_wait
    from stream.health import HEALTH
    from stream.models import LiveVersion
    from stream.pipeline.conveyor import Conveyor
    from stream.pipeline.process import BatchStats, Pipeline
    from stream.pipeline.records import InRecord, kafka_time_ms
    from stream.pipeline.timing import BatchTiming, Recorder, now_ms

    w = settings.worker
    bound_fetch_wait(w.fetch_max_wait_ms)
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
    running: dict[str, Pipeline] = {}
    live = LiveVersion(settings)

    def fatal(exc: BaseException) -> None:
        """Stop now: a supervisor restarts the worker, which resumes from the committed offsets."""
        down = errors.classify(exc, settings) if errors.is_auth_failure(exc) else None
        if down is not None:
            log.critical(f"{down.part} at {down.target} refused our credentials ({down.detail}): {down.hint}")
            os._exit(EXIT_CONFIG)
        log.critical("unexpected failure: exiting so the uncommitted events are redelivered", exc_info=exc)
        os._exit(EXIT_UNEXPECTED)

    @app.agent(source, name="classify")
    async def classify(stream: Any) -> None:
        pipeline = Pipeline.from_settings(settings, source="live", priority=LIVE_PRIORITY)
        try:
            await pipeline.start()
        except Exception as exc:  # noqa: BLE001 - outages are retried inside start(); this is not one
            fatal(exc)
        running["pipeline"] = pipeline
        await follow_live_version()
        HEALTH.start()

        async def done(events: list[Any], stats: BatchStats) -> None:
            for event in events:  # in offset order: Faust commits only contiguous acked offsets
                await stream.ack(event)
                msg = event.message
                next_offset[(msg.topic, msg.partition)] = msg.offset + 1
            log.debug("batch done", extra={"fields": {"events": stats.events, "statuses": dict(stats.statuses)}})

        recorder = Recorder(w.timings_file, tracing.tracer(w.otel_exporter))
        conveyor = Conveyor(pipeline, w.max_in_flight, done, on_failure=fatal, recorder=recorder)
        conveyor.start()
        resumed_ms = 0.0  # when the last submit returned: until then the worker waited for an in-flight slot
        try:
            async for events in stream.noack_take(w.max_batch, within=w.max_wait_ms / 1000):
                timing = BatchTiming("live", len(events))
                mono, wall = time.monotonic(), timing.dispatched_ms
                records = []
                for e in events:
                    m = e.message
                    # Faust's monitor stamps each message (monotonic) when the consumer hands it over
                    received = wall - (mono - m.time_in) * 1000 if m.time_in else None
                    records.append(
                        InRecord(
                            m.topic,
                            m.partition,
                            m.offset,
                            m.key,
                            m.value,
                            kafka_time_ms(m.timestamp * 1000) if m.timestamp else None,
                            received,
                        )
                    )
                timing.events_(
                    "kafka_wait",
                    [
                        (r.received_ms - r.timestamp_ms) / 1000
                        for r in records
                        if r.received_ms is not None and r.timestamp_ms is not None
                    ],
                )
                received = [r.received_ms for r in records if r.received_ms is not None]
                # an event received while the worker waited for a slot waited on back-pressure until it returned
                timing.events_("batch_forming", [(wall - max(at, resumed_ms)) / 1000 for at in received])
                blocked = [max(0.0, resumed_ms - at) / 1000 for at in received]
                formed_ms = timing.dispatched_ms
                await conveyor.submit(records, events, timing)
                resumed_ms = now_ms()
                slot_s = (timing.dispatched_ms - formed_ms) / 1000  # this batch's own wait for a slot
                timing.events_("in_flight_wait", [b + slot_s for b in blocked])
        except Exception as exc:  # noqa: BLE001
            # Not a down dependency (those are retried) but a bug or a broken invariant. Restarting the agent
            # in place would go on past the failed batch's events; exiting makes a supervisor restart the
            # worker, which resumes from the committed offsets: nothing is skipped.
            fatal(exc)
        finally:
            await conveyor.cancel()
            await pipeline.stop()

    feedback_topic = app.topic(
        settings.topics.feedback, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )

    @app.agent(feedback_topic, name="feedback")
    async def apply_feedback(stream: Any) -> None:
        """Human review decisions: applied with the live pipeline's sinks, acked once written (see feedback.py)."""
        from stream.feedback import FeedbackApplier

        while "pipeline" not in running:
            await asyncio.sleep(0.2)
        applier = FeedbackApplier(running["pipeline"])
        try:
            async for events in stream.noack_take(64, within=0.2):
                records = [
                    InRecord(
                        e.message.topic, e.message.partition, e.message.offset, e.message.key, e.message.value, None
                    )
                    for e in events
                ]
                counts = await applier.apply(records)
                for event in events:
                    await stream.ack(event)
                log.info("feedback applied", extra={"fields": counts})
        except Exception as exc:  # noqa: BLE001 - outages are retried inside; anything else stops the worker
            fatal(exc)

    @app.timer(interval=1.0)
    async def beat() -> None:
        HEALTH.beat()

    @app.timer(interval=2.0)
    async def live_version_timer() -> None:
        await follow_live_version()

    async def follow_live_version() -> None:
        """Send the next requests to the version promoted as live (`listings promote`), without a restart."""
        pipeline = running.get("pipeline")
        if pipeline is None:
            return
        try:
            version = await live.refresh()
        except Exception as exc:  # noqa: BLE001 - Redis down: keep the version we have (probes report Redis)
            log.debug("live version not read: %s", exc)
            return
        if version != pipeline.classifier.model_version:
            log.info("live model version", extra={"fields": {"version": version or "newest served"}})
            pipeline.classifier.model_version = version

    @app.timer(interval=2.0)
    async def probe() -> None:
        """Ask each dependency whether it is ready, so /readyz is right even when no event flows."""
        pipeline = running.get("pipeline")
        if pipeline is None:
            return
        for name, ping in (
            ("kafka", pipeline.out.ping),
            ("redis", pipeline.store.ping),
            ("triton", pipeline.classifier.ping),
        ):
            try:
                HEALTH.probed(name, bool(await asyncio.wait_for(ping(), PROBE_TIMEOUT_S)))
            except Exception as exc:  # noqa: BLE001 - a failed probe is "not ready"
                if errors.is_auth_failure(exc):
                    fatal(exc)
                HEALTH.probed(name, False, f"{type(exc).__name__}: {exc}"[:300])
        HEALTH.assignment = "assigned" if app.consumer.assignment() else "waiting for an assignment"

    lag_reported: set[tuple[str, int]] = set()

    @app.timer(interval=5.0)
    async def report_lag() -> None:
        """Per assigned partition: the high watermark minus the next offset to finish (the last acked + 1; before
        this worker finished a batch of it, the group's committed offset, or the log's start for a group without
        one, so a worker started during an outage shows its backlog). A partition no longer assigned drops its series
        (another worker reports it now)."""
        consumer = app.consumer
        committed = getattr(consumer, "_committed_offset", {})  # Faust's view of the group's commits
        # the next offset to process: the last acked + 1, else the group's commit (None: none yet)
        start = {tp: next_offset.get((tp.topic, tp.partition), committed.get(tp)) for tp in consumer.assignment()}
        uncommitted = [tp for tp, pos in start.items() if pos is None]
        if uncommitted:  # no commit: the group starts at the log's start (auto_offset_reset=earliest)
            start.update(await consumer.earliest_offsets(*uncommitted))
        for tp, pos in start.items():
            hw = consumer.highwater(tp)
            if hw is not None and pos is not None:
                metrics.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, hw - pos))
                lag_reported.add((tp.topic, tp.partition))
        assigned = {(tp.topic, tp.partition) for tp in start}
        for key in lag_reported - assigned:
            lag_reported.discard(key)
            next_offset.pop(key, None)
            try:
                metrics.CONSUMER_LAG.remove(key[0], str(key[1]))
            except KeyError:
                pass

    return app


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stream.cli import port_or_off

    parser.add_argument(
        "--metrics-port",
        type=port_or_off,
        default=None,
        help="Prometheus and health port (default LISTINGS_METRICS_PORT; 0: none)",
    )
    parser.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, default="INFO")


def run(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    import faust

    from stream import errors, health, logs, preflight

    if args.metrics_port is not None:
        settings = settings.replace(worker={"metrics_port": args.metrics_port})
    logs.setup(args.log_level)
    # the health endpoints answer from the start: while Kafka or Redis is down the worker waits for them, alive
    # (/healthz 200: a restart would not help) and not ready (/readyz 503 naming what it waits for)
    health.HEALTH.stall_timeout_s = settings.worker.stall_timeout_s
    health.HEALTH.waiting("Kafka and Redis (checked before the worker starts)")
    health.serve(settings.worker.metrics_host, settings.worker.metrics_port)

    def still_down(_what: str, exc: BaseException) -> None:
        if isinstance(exc, errors.Unreachable) and exc.part.lower() in preflight.ORDER:
            failed = preflight.ORDER.index(exc.part.lower())
            for i, part in enumerate(preflight.ORDER[: failed + 1]):  # the ones checked before it answered
                health.HEALTH.probed(part, i < failed, "" if i < failed else str(exc)[:300])
        health.HEALTH.waiting(str(exc)[:300])  # after the probes: a reading naming this wait shows its probes

    try:  # Kafka and Redis reachable, and our credentials accepted (waits while they are down)
        asyncio.run(preflight.wait_ready(settings, on_retry=still_down))
    except preflight.CredentialsRefused as exc:
        log.critical(str(exc))
        return EXIT_CONFIG
    health.HEALTH.waiting(None)
    app = make_app(settings)
    fields = {"group": settings.worker.group_id, "topic": settings.topics.input}
    log.info("worker starting", extra={"fields": fields})
    worker = bounded_stop(faust.Worker, settings.worker.shutdown_timeout_s)(
        app, loglevel=args.log_level, logging_config=logs.logging_config(args.log_level), redirect_stdouts=False
    )
    worker.execute_from_commandline()
    return 0


def bounded_stop(worker_class: Any, timeout_s: float) -> Any:
    """`worker_class` (Faust's Worker) whose stop on SIGTERM/SIGINT ends the process after `timeout_s` at the
    latest. With the broker unreachable, Faust's consumer thread waits 60 s for its fetcher before giving up (and
    Kubernetes kills the pod at its grace period anyway); nothing is lost by not waiting: events after the last
    committed offset are delivered again to whichever worker takes the partition, and Redis keeps the newer result."""
    import threading

    class Worker(worker_class):  # type: ignore[misc, valid-type]
        _deadline: threading.Timer | None = None

        def _schedule_shutdown(self, signal: Any) -> None:  # mode.Worker's handler of both signals
            if self._deadline is None:
                self._deadline = threading.Timer(timeout_s, _stop_now, args=(timeout_s,))
                self._deadline.daemon = True
                self._deadline.start()
            super()._schedule_shutdown(signal)

    return Worker


def _stop_now(timeout_s: float) -> None:
    from stream.health import HEALTH

    failing = HEALTH.failing()
    why = (
        f"{' and '.join(failing)} failing (the batches in flight were being retried)"
        if failing
        else "no dependency reported failing: likely Kafka unreachable for the final commit"
    )
    log.warning(
        f"the stop took longer than {timeout_s:g}s (LISTINGS_SHUTDOWN_TIMEOUT_S), {why}: exiting now; events after "
        "the last committed offset will be delivered again"
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(EXIT_STOP_TIMEOUT)
