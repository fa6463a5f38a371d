"""Kafka sink: the downstream topics, written with an idempotent producer (acks=all).
`send_all` returns only when the broker acknowledged every record."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from stream import connections, health
from stream.config import KafkaSettings
from stream.retry import retry_forever

log = logging.getLogger("listings.kafka_out")
REQUEST_TIMEOUT_MS = 15_000  # the producer's per-request timeout; also how often a long wait counts as a retry
STOP_TIMEOUT_S = 10.0  # how long a stop waits for sends still unacknowledged (a broker away) before abandoning them

# Errors after which an idempotent aiokafka producer is dead for good: its sender task has stopped and every later
# send raises the same error. They happen when the broker lost the producer's sequence state (a restarted single
# broker whose last writes were not yet on disk answers OutOfOrderSequenceNumber). The only way on is a new
# producer, which gets a new producer id from the broker.
PRODUCER_STATE_ERRORS = frozenset(
    {
        "OutOfOrderSequenceNumber",
        "DuplicateSequenceNumber",
        "UnknownProducerId",
        "InvalidProducerEpoch",
        "InvalidProducerIdMapping",
        "ProducerFenced",
    }
)


def producer_state_lost(exc: BaseException) -> bool:
    return type(exc).__name__ in PRODUCER_STATE_ERRORS


def kafka_outage(exc: BaseException) -> bool:
    """A broker outage or refusal that passes (leader moves, not enough replicas, timeouts, lost connections):
    retried. An authentication or authorization failure is a setting to fix, not an outage: it fails fast."""
    from aiokafka import errors

    if isinstance(exc, errors.KafkaError):
        name = type(exc).__name__
        return not ("Authentication" in name or "Authorization" in name or "Sasl" in name)
    return isinstance(exc, OSError | asyncio.TimeoutError)


@dataclass(frozen=True, slots=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes


class KafkaOut:
    def __init__(self, settings: KafkaSettings, *, max_backoff_s: float = 5.0, client_id: str = "listings-out") -> None:
        self.settings = settings
        self.max_backoff_s = max_backoff_s
        self.client_id = client_id
        self._producer: Any = None
        # one KafkaOut may serve several coroutines (the worker's live and feedback agents): one of them opens a
        # replacement producer at a time, and each send uses the producer it started with
        self._opening = asyncio.Lock()  # binds to the event loop of its first contended use, not this one

    def _make_producer(self) -> Any:
        from aiokafka import AIOKafkaProducer

        return AIOKafkaProducer(
            **connections.kafka(self.settings),
            client_id=self.client_id,
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            max_request_size=4 * 1024 * 1024,
        )

    async def _open(self) -> None:
        producer = self._make_producer()
        try:
            await producer.start()
        except Exception:
            await producer.stop()
            raise
        self._producer = producer

    async def start(self) -> None:
        await retry_forever(
            "kafka producer start",
            self._open,
            retryable=kafka_outage,
            max_backoff=self.max_backoff_s,
            on_retry=health.on_retry("kafka"),
        )

    async def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Close the producer. Everything a caller waited for is delivered already; what is not (sends still
        waiting for a broker that is away) is abandoned after `timeout_s` — its offsets were never committed, so it
        is sent again by whoever consumes them next — instead of holding the process for as long as the outage."""
        if self._producer is not None:
            producer, self._producer = self._producer, None
            try:
                await asyncio.wait_for(producer.stop(), timeout=timeout_s)
            except TimeoutError:
                log.warning("kafka producer: sends still unacknowledged after %.0fs at stop: abandoned", timeout_s)

    async def _drop(self, broken: Any) -> None:
        """Close a producer whose state the broker no longer knows (best effort: it is already broken); the next
        attempt of `send_all` opens a new one, with a new producer id, and sends the whole set again. Another
        coroutine may have replaced it already: then only the broken one is closed."""
        from aiokafka.errors import KafkaError

        if self._producer is broken:
            self._producer = None
        try:
            await asyncio.wait_for(broken.stop(), timeout=5.0)
        except (TimeoutError, KafkaError, OSError) as exc:
            log.debug("closing the broken kafka producer: %r", exc)

    async def _current(self) -> Any:
        """The producer to send with, opening a replacement if the last one was dropped (once, whoever asks)."""
        if self._producer is None:  # dropped after its state was lost
            async with self._opening:
                if self._producer is None:
                    await self._open()
        return self._producer

    async def _send_once(self, records: Sequence[OutRecord]) -> None:
        producer = await self._current()
        try:
            futures = [await producer.send(r.topic, r.value, key=r.key) for r in records]
            await self._acknowledged(futures)
        except Exception as exc:
            if producer_state_lost(exc):
                log.warning(
                    "kafka producer state lost (%s), probably after a broker restart: opening a new producer",
                    type(exc).__name__,
                )
                await self._drop(producer)
            raise

    async def _acknowledged(self, futures: list[Any]) -> None:
        """Wait for every acknowledgement. An idempotent aiokafka producer never expires a batch: while the broker
        is away it resends until it is back, and the wait has no end — so each request timeout that passes is
        counted as a Kafka retry (listings_retries_total, /readyz, and /healthz's stall clock, which must not take
        a worker waiting out an outage for a hung one)."""
        waiting = [asyncio.ensure_future(f) for f in futures]
        try:
            while True:
                _, pending = await asyncio.wait(waiting, timeout=REQUEST_TIMEOUT_MS / 1000)
                if not pending:
                    break
                health.on_retry("kafka")(
                    "kafka send", TimeoutError(f"{len(pending)} sends unacknowledged after {REQUEST_TIMEOUT_MS} ms")
                )
                log.warning("kafka send: %d records still unacknowledged, waiting for the broker", len(pending))
            for f in waiting:
                f.result()  # raise a failed send's error
        except BaseException:
            for f in waiting:
                if not f.done():
                    f.cancel()
            raise

    async def send_all(self, records: Sequence[OutRecord]) -> None:
        """Send and wait for every acknowledgement; retries the whole set on broker errors
        (duplicates are harmless: outputs are keyed and idempotent)."""
        if not records:
            return
        await retry_forever(
            "kafka send",
            lambda: self._send_once(records),
            retryable=kafka_outage,
            max_backoff=self.max_backoff_s,
            on_retry=health.on_retry("kafka"),
        )
        health.succeeded("kafka")

    async def ping(self) -> bool:
        """The cluster answers a metadata request (a readiness probe)."""
        if self._producer is None:
            return False
        await self._producer.client.fetch_all_metadata()
        return True
