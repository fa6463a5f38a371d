"""The Kafka topics of the design, with their partitions and configs."""

from __future__ import annotations

from dataclasses import dataclass, field

from stream.settings import Settings


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings) -> list[TopicSpec]:
    parts = settings.input_partitions
    return [
        TopicSpec(settings.topic_input, parts),
        # the latest classification of each item: keyed and log-compacted
        TopicSpec(settings.topic_classified, parts, {"cleanup.policy": "compact"}),
        TopicSpec(settings.topic_tag_updates, parts),
        TopicSpec(settings.topic_review, parts),
        TopicSpec(settings.topic_dlq, 1),
    ]
