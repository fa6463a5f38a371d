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
    """Every record of a topic from its beginning, stopping after `timeout_s` without a new one (no group)."""
    from kafka import KafkaConsumer

    from stream import connections

    consumer = KafkaConsumer(
        topic,
        **connections.kafka(settings.kafka),
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=int(timeout_s * 1000),
    )
    try:
        return list(consumer)
    finally:
        consumer.close()
