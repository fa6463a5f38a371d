"""Redis sink: one atomic Lua script per item (hash + category/tag index sets + update-stream entry),
applied only when the result is not older than what is stored (higher `listing_version` wins, then the
newer model version). Many items go in one pipelined round trip."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

import orjson

from stream import connections, health, keys
from stream.config import RedisSettings
from stream.retry import retry_forever

T = TypeVar("T")
# replies of a Redis that is up but cannot take writes now: full (maxmemory + noeviction), a replica after a
# failover, loading its data, without a reachable primary, busy with a script, or a cluster resharding
OUTAGE_REPLIES = ("OOM", "READONLY", "LOADING", "MASTERDOWN", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS")
PIPELINE_PREFIX_END = " of pipeline caused error: "


def redis_outage(exc: BaseException) -> bool:
    """Retried like a lost connection (back-pressure, nothing dead-lettered). Authentication and permission
    errors are settings to fix: they fail fast."""
    import redis.exceptions as rexc

    if isinstance(exc, rexc.AuthenticationError | rexc.AuthorizationError | rexc.NoPermissionError):
        return False
    if isinstance(exc, rexc.ConnectionError | rexc.TimeoutError | OSError):
        return True
    # redis-py maps the reply prefix to a class and drops it from the message (a pipeline prefixes its own text)
    names = (
        "OutOfMemoryError",
        "ReadOnlyError",
        "BusyLoadingError",
        "MasterDownError",
        "TryAgainError",
        "ClusterDownError",
    )
    if isinstance(exc, tuple(getattr(rexc, n) for n in names if hasattr(rexc, n))):
        return True
    if not isinstance(exc, rexc.ResponseError):
        return False
    # the others keep their reply's first word: as `status_code` (redis-py 5.1+), and in the message — after the
    # "Command # N (...) of pipeline caused error: " a pipeline puts in front of it
    text = str(exc).split(PIPELINE_PREFIX_END, 1)[-1]
    return str(getattr(exc, "status_code", "") or "").upper() in OUTAGE_REPLIES or text.upper().startswith(
        OUTAGE_REPLIES
    )


def lua(name: str) -> str:
    """A Lua script shipped with the package (declared as package data)."""
    return resources.files("stream.sinks").joinpath("lua", name).read_text(encoding="utf-8")


@dataclass(frozen=True, slots=True)
class StoreItem:
    item_id: str
    listing_version: int
    model_version: int
    category_id: str
    tags: list[str]
    fields: dict[str, str]
    mode: str = "model"  # "model": a classification; "human": a review decision (see apply_result.lua)
    queued_at_ms: int = 0  # when a result that needs review entered the review queue
    # the input record (topic:partition:offset) and a digest of the output record: tell a redelivery of the same
    # record from another record of the same edit (see apply_result.lua); "" = unknown
    origin: str = ""
    digest: str = ""


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    status: str  # applied | same | stale, and for human decisions unknown_item | older_version | unknown_version
    tags: list[str]
    prev_tags: list[str]
    pending: bool  # the stored result's Kafka outputs are not confirmed yet

    @property
    def needs_outputs(self) -> bool:
        """Applied now, or stored earlier by a run that died before its outputs were acknowledged."""
        return self.status == "applied" or (self.status == "same" and self.pending)

    @property
    def added(self) -> list[str]:
        return sorted(set(self.tags) - set(self.prev_tags))

    @property
    def removed(self) -> list[str]:
        return sorted(set(self.prev_tags) - set(self.tags))


def _tags(raw: bytes | str) -> list[str]:
    value = orjson.loads(raw)
    return list(value) if isinstance(value, list) else []  # cjson encodes an empty list as {}


class RedisStore:
    def __init__(self, settings: RedisSettings, *, max_backoff_s: float = 5.0) -> None:
        self._redis = connections.redis_async(settings)
        self._script = self._redis.register_script(lua("apply_result.lua"))
        self._confirm = self._redis.register_script(lua("confirm_outputs.lua"))
        self.stream = settings.updates_stream
        self.maxlen = settings.updates_maxlen
        self.max_backoff_s = max_backoff_s

    @property
    def client(self) -> Any:
        """The asyncio Redis client (shared by readers that need no retries of their own)."""
        return self._redis

    async def close(self) -> None:
        await self._redis.aclose()

    async def _apply_once(self, items: Sequence[StoreItem]) -> list[StoreOutcome]:
        pipe = self._redis.pipeline(transaction=False)
        for it in items:
            await self._script(
                keys=[keys.listing(it.item_id), self.stream, keys.REVIEW_QUEUE, keys.REVIEW_STATS],
                args=[
                    it.item_id,
                    it.listing_version,
                    it.model_version,
                    it.category_id,
                    orjson.dumps(sorted(it.tags)),
                    orjson.dumps(it.fields),
                    self.maxlen,
                    keys.CATEGORY,
                    keys.TAG,
                    it.mode,
                    it.queued_at_ms,
                    it.origin,
                    it.digest,
                ],
                client=pipe,
            )
        replies = await pipe.execute()
        return [StoreOutcome(r[0].decode(), _tags(r[1]), _tags(r[2]), r[3] == b"1") for r in replies]

    async def _confirm_once(self, items: Sequence[StoreItem]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for it in items:
            await self._confirm(
                keys=[keys.listing(it.item_id)], args=[it.listing_version, it.model_version, it.mode], client=pipe
            )
        await pipe.execute()

    async def _retrying(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        out = await retry_forever(
            what, op, retryable=redis_outage, max_backoff=self.max_backoff_s, on_retry=health.on_retry("redis")
        )
        health.succeeded("redis")
        return out

    async def ping(self) -> bool:
        """Redis answers and can take writes (a readiness probe): not loading, a primary, not full under a
        no-eviction policy."""
        info = await self._redis.info()
        full = (
            int(info.get("maxmemory", 0) or 0) > 0
            and str(info.get("maxmemory_policy", "")) == "noeviction"
            and int(info.get("used_memory", 0)) >= int(info.get("maxmemory", 0))
        )
        return not info.get("loading") and info.get("role") == "master" and not full

    async def current(self, item_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """The stored hash of each item that has one."""

        async def read() -> dict[str, dict[str, str]]:
            pipe = self._redis.pipeline(transaction=False)
            for iid in item_ids:
                pipe.hgetall(keys.listing(iid))
            rows = await pipe.execute()
            return {
                iid: {k.decode(): v.decode() for k, v in row.items()}
                for iid, row in zip(item_ids, rows, strict=True)
                if row
            }

        return await self._retrying("redis read", read) if item_ids else {}

    async def apply(self, items: Sequence[StoreItem]) -> list[StoreOutcome]:
        """Apply every item; retries while Redis is down (the script is idempotent)."""
        if not items:
            return []
        return await self._retrying("redis apply", lambda: self._apply_once(items))

    async def confirm_outputs(self, items: Sequence[StoreItem]) -> None:
        """Record that the Kafka outputs of these (applied) items were acknowledged."""
        if items:
            await self._retrying("redis confirm", lambda: self._confirm_once(items))
