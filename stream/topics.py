"""The Kafka topics of the design, with their partitions and configs, and `ensure()` that creates the
missing ones (the local stack calls it; in production `listings topics ensure` runs it as a one-shot Job)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from stream.config import Settings


class TopicsRefused(Exception):
    """The broker refused to create a topic (a replication factor above its broker count, a policy, an ACL)."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def specs(settings: Settings) -> list[TopicSpec]:
    t = settings.topics
    parts = t.partitions
    compact = {"cleanup.policy": "compact"}
    return [
        TopicSpec(t.input, parts),
        # the latest classification of each item: keyed and log-compacted
        TopicSpec(t.classified, parts, compact),
        TopicSpec(t.tag_updates, parts),
        TopicSpec(t.review, parts),
        TopicSpec(t.dlq, 1),
        # review decisions, keyed by item: the latest decision per item is what counts
        TopicSpec(t.feedback, parts, compact),
        TopicSpec(t.shadow, parts),
    ]


@contextmanager
def _admin(settings: Settings) -> Iterator[Any]:
    """A Kafka admin client for one command, closed after it."""
    from kafka import KafkaAdminClient

    from stream import connections

    admin = KafkaAdminClient(**connections.kafka(settings.kafka, request_timeout_ms=10000))
    try:
        yield admin
    finally:
        admin.close()


def ensure(settings: Settings) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    from kafka.admin import NewTopic
    from kafka.errors import BrokerResponseError, TopicAlreadyExistsError

    with _admin(settings) as admin:
        existing = set(admin.list_topics())
        new = [
            NewTopic(
                t.name,
                num_partitions=t.partitions,
                replication_factor=settings.topics.replication,
                topic_configs=t.config,
            )
            for t in specs(settings)
            if t.name not in existing
        ]
        if new:
            try:
                admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass
            except BrokerResponseError as exc:  # the broker answered and refused: not an outage to wait out
                names = ", ".join(t.name for t in new)
                raise TopicsRefused(
                    f"Kafka refused to create {names}: {type(exc).__name__}: {exc} (replication factor "
                    f"{settings.topics.replication}: LISTINGS_TOPIC_REPLICATION must not exceed the brokers)"
                ) from None
        return [t.name for t in new]


def differences(settings: Settings) -> list[str]:
    """How the design's existing topics differ from their specs, one line each: fewer partitions than configured
    (less parallelism than the workers are scaled for: more is fine), or another `cleanup.policy` (a compacted
    topic that deletes loses the latest result of items not re-classified within its retention)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    with _admin(settings) as admin:
        existing = set(admin.list_topics())
        wanted = [t for t in specs(settings) if t.name in existing]
        if not wanted:
            return []
        out = []
        described = {d["name"]: d for d in admin.describe_topics([t.name for t in wanted])}
        configs = admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t.name) for t in wanted], config_filter="all"
        )
        for t in wanted:
            have = len(described.get(t.name, {}).get("partitions") or [])
            if have < t.partitions:
                out.append(f"{t.name}: {have} partitions, configured {t.partitions} (LISTINGS_INPUT_PARTITIONS)")
            actual = _topic_configs(configs, t.name)
            for key, value in t.config.items():
                if actual.get(key, value) != value:
                    out.append(f"{t.name}: {key}={actual[key]}, the design needs {key}={value}")
        return out


def _topic_configs(described: Any, topic: str) -> dict[str, str]:
    """{config name: value} of `topic` from KafkaAdminClient.describe_configs' answer
    ({"topic": {name: {key: {"value": ...}}}})."""
    entries = (described or {}).get("topic", {}).get(topic, {})
    return {k: v.get("value") for k, v in entries.items() if isinstance(v, dict)}


def read_all(settings: Settings, topic: str, timeout_s: float = 5.0) -> list:
    """Every record of a topic from its beginning up to its end *as of the call* (no group): a topic something is
    still writing to (a running shadow, live feedback) is read to that end, not followed forever. Stops early after
    `timeout_s` without a record (an unreachable partition leader)."""
    import time

    from kafka import KafkaConsumer, TopicPartition

    from stream import connections

    consumer = KafkaConsumer(**connections.kafka(settings.kafka), group_id=None, enable_auto_commit=False)
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return []
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        end = consumer.end_offsets(tps)
        records: list = []
        idle_until = time.monotonic() + timeout_s
        while any(consumer.position(tp) < end[tp] for tp in tps) and time.monotonic() < idle_until:
            polled = consumer.poll(timeout_ms=500)
            for tp, batch in polled.items():
                records += [m for m in batch if m.offset < end[tp]]
            if polled:
                idle_until = time.monotonic() + timeout_s
        return records
    finally:
        consumer.close()
