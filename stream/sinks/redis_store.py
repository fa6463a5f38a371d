"""Redis sink: one atomic Lua script per item (hash + category/tag index sets + update-stream entry),
applied only when the result is not older than what is stored (higher `listing_version` wins, then the
newer model version). Many items go in one pipelined round trip."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TypeVar

import orjson

from stream import connections, keys, metrics
from stream.config import RedisSettings
from stream.retry import retry_forever

T = TypeVar("T")


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


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    status: str  # applied | same | stale
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

    async def close(self) -> None:
        await self._redis.aclose()

    async def _apply_once(self, items: Sequence[StoreItem]) -> list[StoreOutcome]:
        pipe = self._redis.pipeline(transaction=False)
        for it in items:
            await self._script(
                keys=[keys.listing(it.item_id), self.stream],
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
                ],
                client=pipe,
            )
        replies = await pipe.execute()
        return [StoreOutcome(r[0].decode(), _tags(r[1]), _tags(r[2]), r[3] == b"1") for r in replies]

    async def _confirm_once(self, items: Sequence[StoreItem]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for it in items:
            await self._confirm(
                keys=[keys.listing(it.item_id)], args=[it.listing_version, it.model_version], client=pipe
            )
        await pipe.execute()

    async def _retrying(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        import redis.exceptions as rexc

        return await retry_forever(
            what,
            op,
            retryable=(rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError, OSError),
            max_backoff=self.max_backoff_s,
            on_retry=lambda _w, _e: metrics.RETRIES.labels("redis").inc(),
        )

    async def apply(self, items: Sequence[StoreItem]) -> list[StoreOutcome]:
        """Apply every item; retries while Redis is down (the script is idempotent)."""
        if not items:
            return []
        return await self._retrying("redis apply", lambda: self._apply_once(items))

    async def confirm_outputs(self, items: Sequence[StoreItem]) -> None:
        """Record that the Kafka outputs of these (applied) items were acknowledged."""
        if items:
            await self._retrying("redis confirm", lambda: self._confirm_once(items))
