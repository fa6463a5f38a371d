"""How long the worker's Kafka fetch may wait at the broker (`LISTINGS_FETCH_MAX_WAIT_MS`).

aiokafka keeps one fetch request in flight per broker, built only from the partitions whose earlier records were
all handed over. When a worker is a little behind, the partitions with traffic still hold records, so the next
request names only partitions without new data (the feedback topic's, or quiet ones), and the broker holds it
for `fetch_max_wait_ms` before answering. No new fetch for the busy partitions can be sent meanwhile. Faust fixes
that wait at 1,500 ms and has no setting for it: a worker that fell 100 ms behind then stalled 1.5 s at a time,
each fetch bringing exactly what arrived during the hold, so it never caught up (bench (d): a ~1.6 s lag held for
10-25 s at half load, `getmany` returning nothing for 1.0 s between fetches of ~600 records).

A short wait only means an idle worker asks again sooner (10 fetches/s at 100 ms)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("listings.fetching")


def bound_fetch_wait(max_wait_ms: int) -> None:
    """Make every worker consumer Faust creates in this process wait at most `max_wait_ms` at the broker."""
    from faust.transport.drivers import aiokafka as driver

    cls: Any = driver.AIOKafkaConsumerThread
    if getattr(cls, "listings_fetch_max_wait_ms", None) is None:
        create = cls._create_worker_consumer

        def create_bounded(self: Any, transport: Any) -> Any:
            consumer = create(self, transport)
            if hasattr(consumer, "_fetch_max_wait_ms"):  # read by AIOKafkaConsumer.start() for its Fetcher
                consumer._fetch_max_wait_ms = cls.listings_fetch_max_wait_ms
            else:
                log.warning("this aiokafka has no _fetch_max_wait_ms: the fetch wait stays Faust's 1,500 ms")
            return consumer

        cls._create_worker_consumer = create_bounded
    cls.listings_fetch_max_wait_ms = max_wait_ms
