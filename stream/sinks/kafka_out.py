"""Kafka sink: the downstream topics, written with an idempotent producer (acks=all).
`send_all` returns only when the broker acknowledged every record."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from stream import connections, health
from stream.config import KafkaSettings
from stream.retry import retry_forever


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
        self._producer = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaProducer

        async def _start() -> None:
            producer = AIOKafkaProducer(
                **connections.kafka(self.settings),
                client_id=self.client_id,
                acks="all",
                enable_idempotence=True,
                linger_ms=5,
                request_timeout_ms=15000,
                max_request_size=4 * 1024 * 1024,
            )
            try:
                await producer.start()
            except Exception:
                await producer.stop()
                raise
            self._producer = producer

        await retry_forever(
            "kafka producer start",
            _start,
            retryable=kafka_outage,
            max_backoff=self.max_backoff_s,
            on_retry=health.on_retry("kafka"),
        )

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def _send_once(self, records: Sequence[OutRecord]) -> None:
        assert self._producer is not None, "KafkaOut.start() first"
        futures = [await self._producer.send(r.topic, r.value, key=r.key) for r in records]
        await asyncio.gather(*futures)

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
