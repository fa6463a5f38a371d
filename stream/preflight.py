"""Before a command starts its real work: can it reach Kafka and Redis, and do they accept its credentials?

One connection each, with a short timeout: a Kafka SASL handshake (aiokafka's connection, which raises the
broker's refusal itself instead of only logging it) and a Redis PING. Credentials refused is never retried: it
is a setting to fix. A dependency that is down is reported by one-shot commands at once; the long-running worker
waits for it (with backoff) instead of exiting, as it does for outages later on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from stream import connections, errors
from stream.config import KafkaSettings, RedisSettings, Settings
from stream.retry import retry_forever

log = logging.getLogger("listings.preflight")
TIMEOUT_S = 10.0


class CredentialsRefused(errors.Unreachable):
    """The dependency answered, and refused our credentials."""

    def __str__(self) -> str:
        return f"{self.part} at {self.target} refused our credentials ({self.detail}): {self.hint}"


async def check_kafka(k: KafkaSettings) -> None:
    from aiokafka.conn import create_conn

    kw = connections.kafka(k)
    host, _, port = kw.pop("bootstrap_servers").split(",")[0].strip().rpartition(":")
    try:
        conn = await asyncio.wait_for(
            create_conn(host, int(port), request_timeout_ms=int(TIMEOUT_S * 1000), **kw), TIMEOUT_S
        )
    except Exception as exc:  # noqa: BLE001 - classified below
        if errors.is_auth_failure(exc):
            hint = "check LISTINGS_KAFKA_SASL_USERNAME / _SASL_PASSWORD (and _SASL_MECHANISM)"
            raise CredentialsRefused("Kafka", k.bootstrap, f"{type(exc).__name__}: {exc}"[:300], hint) from None
        raise errors.Unreachable("Kafka", k.bootstrap, f"{type(exc).__name__}: {exc}"[:300]) from None
    conn.close()


async def check_redis(r: RedisSettings) -> None:
    client = None
    try:  # making the client parses the URL: a bad one is reported like the rest, never a traceback
        client = connections.redis_async(r, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S)
        await client.ping()
    except Exception as exc:  # noqa: BLE001 - classified below
        where = r.url.split("@")[-1]
        if errors.is_auth_failure(exc):
            hint = "check LISTINGS_REDIS_USERNAME / LISTINGS_REDIS_PASSWORD"
            raise CredentialsRefused("Redis", where, f"{type(exc).__name__}: {exc}"[:300], hint) from None
        raise errors.Unreachable("Redis", where, f"{type(exc).__name__}: {exc}"[:300]) from None
    finally:
        if client is not None:
            await client.aclose()


ORDER = ("kafka", "redis")  # the order `check` tries them in


async def check(settings: Settings, kafka: bool = True, redis: bool = True) -> None:
    """Raise Unreachable (or CredentialsRefused) for the first dependency that fails, in ORDER."""
    if kafka:
        await check_kafka(settings.kafka)
    if redis:
        await check_redis(settings.redis)


def one_shot(settings: Settings, kafka: bool = True, redis: bool = True) -> None:
    asyncio.run(check(settings, kafka, redis))


async def wait_ready(settings: Settings, on_retry: Callable[[str, BaseException], None] | None = None) -> None:
    """For the worker: wait (backoff) while a dependency is down; raise CredentialsRefused at once. `on_retry` sees
    each failure (the worker's health endpoints say what it waits for)."""

    def down(exc: BaseException) -> bool:
        return isinstance(exc, errors.Unreachable) and not isinstance(exc, CredentialsRefused)

    await retry_forever(
        "dependencies at start",
        lambda: check(settings),
        retryable=down,
        max_backoff=settings.worker.retry_max_backoff_s,
        on_retry=on_retry,
    )
