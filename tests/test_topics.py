"""`listings topics ensure` against the real broker: it creates what is missing, says how existing topics differ
from the design (a compacted topic that deletes, fewer partitions than configured) and exits 1 then, and a broker
that refuses to create a topic is named as such (it was reported as "Kafka not reachable: start it")."""

from __future__ import annotations

import uuid

import pytest

from stream import connections
from support import listings_cli

pytestmark = pytest.mark.stack


def test_ensure_creates_the_missing_topics_and_names_the_existing_ones_that_differ(stack) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    tag = uuid.uuid4().hex[:6]
    names = ("input", "classified", "tag_updates", "review", "dlq", "feedback", "shadow")
    s = stack.replace(topics={n: f"t.{tag}.{n.replace('_', '-')}" for n in names})
    admin = KafkaAdminClient(**connections.kafka(s.kafka))
    try:  # made by hand before: the input with one partition, the compacted output with the default policy
        admin.create_topics([NewTopic(s.topics.input, 1, 1), NewTopic(s.topics.classified, 4, 1)])
    finally:
        admin.close()
    out = listings_cli(s, "topics", "ensure")
    assert out.returncode == 1, out.stderr
    assert f"created {s.topics.tag_updates}" in out.stdout and s.topics.input not in out.stdout
    assert f"{s.topics.input}: 1 partitions, configured 4" in out.stderr
    assert f"{s.topics.classified}: cleanup.policy=delete, the design needs cleanup.policy=compact" in out.stderr
    assert s.topics.feedback not in out.stderr  # created by ensure: as designed
    # a topic set as designed: nothing to say
    t = s.replace(topics={"input": s.topics.tag_updates, "classified": s.topics.feedback})
    again = listings_cli(t, "topics", "ensure")
    assert (again.returncode, again.stdout.strip(), again.stderr.strip()) == (0, "every topic exists", "")


def test_a_broker_refusing_to_create_a_topic_is_not_called_unreachable(stack) -> None:
    s = stack.replace(topics={"dlq": f"t.{uuid.uuid4().hex[:6]}.dlq"})
    out = listings_cli(s, "topics", "ensure", env={"LISTINGS_TOPIC_REPLICATION": "3"})  # one broker
    assert out.returncode == 2 and "Kafka refused to create" in out.stderr, out.stderr
    assert "InvalidReplicationFactor" in out.stderr and "not reachable" not in out.stderr
