"""Removing what a measurement run wrote: its topics and consumer groups, and its items in Redis.

Every bench run classifies events on topics of its own (`devtools.workers.isolated`) with item ids of its own, so
nothing it leaves behind is ever read again. Left there, it is paid for by every later run: after a day of bench
and profiling runs the local Kafka held 2,611 partition directories (1.3 GB) and Redis 736k items (2 GB), whose
background AOF rewrite forked a 2 GB process and wrote for 21 s on the same two cores as the next run."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import orjson

from stream import connections, keys, topics
from stream.config import Settings

log = logging.getLogger("devtools.cleanup")
CHUNK = 1000


def forget_items(settings: Settings, item_ids: Sequence[str]) -> int:
    """Delete these items' hashes and their entries in the category and tag indexes and the review queue (what
    `apply_result.lua` wrote for them); returns how many hashes existed."""
    r = connections.redis_sync(settings.redis, decode_responses=True)
    removed = 0
    try:
        for i in range(0, len(item_ids), CHUNK):
            chunk = list(item_ids[i : i + CHUNK])
            read = r.pipeline(transaction=False)
            for iid in chunk:
                read.hmget(keys.listing(iid), "category_id", "tags")
            write = r.pipeline(transaction=False)
            for iid, (category, tags) in zip(chunk, read.execute(), strict=True):
                if category is None and tags is None:
                    continue
                removed += 1
                if category:
                    write.srem(keys.category(category), iid)
                for tag in orjson.loads(tags or "[]"):
                    write.srem(keys.tag(tag), iid)
                write.delete(keys.listing(iid))
            write.zrem(keys.REVIEW_QUEUE, *chunk)
            write.execute()
    finally:
        r.close()
    return removed


def drop_run(settings: Settings, groups: Sequence[str] = ()) -> None:
    """Delete an isolated run's topics, its update stream and the consumer groups it used (best effort: a
    failure is logged, never raised, so it cannot hide the run's own result)."""
    try:
        _drop_kafka(settings, groups)
    except Exception as exc:  # noqa: BLE001 - best effort, as documented
        log.warning("could not delete the run's topics or groups: %s", exc)
    try:
        _drop_redis(settings, groups)
    except Exception as exc:  # noqa: BLE001 - best effort, as documented
        log.warning("could not delete the run's update stream or backfill plans in Redis: %s", exc)


def _drop_kafka(settings: Settings, groups: Sequence[str]) -> None:
    from kafka import KafkaAdminClient

    names = [spec.name for spec in topics.specs(settings)]
    admin: Any = KafkaAdminClient(**connections.kafka(settings.kafka, request_timeout_ms=30000))
    try:
        existing = set(admin.list_topics())
        gone = [n for n in names if n in existing]
        if gone:
            admin.delete_topics(gone)
        if groups:
            result = admin.delete_groups(list(groups)) or {}  # {group: "OK" or the error's name}
            for group, error in dict(result).items():
                # (a group that never committed has nothing to delete)
                if error and str(error) not in ("OK", "NoError") and "GroupIdNotFound" not in str(error):
                    log.warning("consumer group %s not deleted: %s", group, error)
    finally:
        admin.close()


def _drop_redis(settings: Settings, groups: Sequence[str]) -> None:
    r = connections.redis_sync(settings.redis)
    try:
        r.delete(settings.redis.updates_stream, *(keys.backfill_plan(g) for g in groups))
    finally:
        r.close()
