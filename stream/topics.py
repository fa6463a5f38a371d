"""The Kafka topics of the design, with their partitions and configs, and `ensure()` that creates the
missing ones (the local stack calls it; in production `listings topics ensure` runs it as a one-shot Job)."""

from __future__ import annotations

from dataclasses import dataclass, field

from stream.config import Settings


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


def ensure(settings: Settings) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    from stream import connections

    admin = KafkaAdminClient(**connections.kafka(settings.kafka, request_timeout_ms=10000))
    try:
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
        return [t.name for t in new]
    finally:
        admin.close()


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
