"""Kafka sink: the downstream topics, written with an idempotent producer (acks=all).
`send_all` returns only when the broker acknowledged every record."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from stream import connections, metrics
from stream.config import KafkaSettings
from stream.retry import retry_forever


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

        from aiokafka.errors import KafkaError

        await retry_forever(
            "kafka producer start", _start, retryable=(KafkaError, OSError), max_backoff=self.max_backoff_s
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
        from aiokafka.errors import KafkaError

        if not records:
            return
        await retry_forever(
            "kafka send",
            lambda: self._send_once(records),
            retryable=(KafkaError, OSError, asyncio.TimeoutError),
            max_backoff=self.max_backoff_s,
            on_retry=lambda _w, _e: metrics.RETRIES.labels("kafka").inc(),
        )
