"""The local stack, for real: Kafka (KRaft), Redis and Triton started by the project's own code."""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.stack


def test_stack_up_is_ready_and_idempotent(local) -> None:
    from devtools.stack import control

    st = control.status(local)
    assert all(v["ready"] for v in st.values()), st
    lines: list[str] = []
    control.up(local, echo=lines.append)
    assert len(lines) == 3 and all("already running" in line for line in lines), lines
    # same pids after the second `up`
    assert control.status(local) == st


def test_topics_created_with_partitions_and_compaction(stack) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import ConfigResource, ConfigResourceType

    admin = KafkaAdminClient(bootstrap_servers=stack.kafka.bootstrap)
    try:
        meta = {t["name"]: t for t in admin.describe_topics()}
        assert len(meta[stack.topics.input]["partitions"]) >= 4
        res = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, stack.topics.classified)])
        assert res["topic"][stack.topics.classified]["cleanup.policy"]["value"] == "compact"
    finally:
        admin.close()


def test_kafka_message_round_trip(stack) -> None:
    from kafka import KafkaConsumer, KafkaProducer

    topic = f"smoke-{uuid.uuid4().hex[:8]}"
    value = uuid.uuid4().bytes
    producer = KafkaProducer(bootstrap_servers=stack.kafka.bootstrap, acks="all")
    producer.send(topic, key=b"k1", value=value).get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=stack.kafka.bootstrap,
        auto_offset_reset="earliest",
        consumer_timeout_ms=15000,
        group_id=None,
    )
    got = [(m.key, m.value) for m in consumer]
    consumer.close()
    assert got == [(b"k1", value)]


def test_redis_survives_restart(local, stack) -> None:
    import redis as redis_lib

    from devtools.stack import control
    from devtools.stack import redis as redis_part

    client = redis_lib.Redis.from_url(stack.redis.url)
    token = uuid.uuid4().hex
    client.hset("smoke:restart", mapping={"token": token})
    old_pid = redis_part.part(local).pid()
    control.down(local, ["redis"])
    assert not redis_part.part(local).running()
    control.up(local, ["redis"])
    assert redis_part.part(local).pid() != old_pid
    client = redis_lib.Redis.from_url(stack.redis.url)
    assert client.hget("smoke:restart", "token") == token.encode()


def test_triton_serves_trivial_model(stack) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(stack.triton.url)
    assert client.is_model_ready("text_length")
    texts = np.array([["héllo".encode()], [b""], [b"x" * 1000]], dtype=object)
    inp = grpcclient.InferInput("TEXT", list(texts.shape), "BYTES")
    inp.set_data_from_numpy(texts)
    out = client.infer("text_length", [inp]).as_numpy("LENGTH")
    assert out.reshape(-1).tolist() == [5, 0, 1000]


def test_a_crashed_triton_is_restarted_by_its_supervisor(local, stack) -> None:
    """Triton 2.51's python backend can abort the whole server (boost::interprocess::lock_exception): the stack's
    supervisor starts it again with the same models, and the log says so."""
    import os
    import signal
    import time

    import tritonclient.grpc as grpcclient

    from devtools.stack import triton

    supervisor, server = triton.part(local).pid(), triton.server_pid(local)
    assert supervisor is not None and server is not None and server != supervisor
    # the supervisor restarts only a server that lived 30 s (a shorter life is a start-up failure)
    started = int(Path(f"/proc/{server}/stat").read_text().rsplit(")", 1)[1].split()[19]) / os.sysconf("SC_CLK_TCK")
    uptime = float(Path("/proc/uptime").read_text().split()[0]) - started
    time.sleep(max(0.0, 31 - uptime))
    before = len(triton.restarts(local))
    os.kill(server, signal.SIGABRT)  # Triton's own handler prints a stack trace, then dies of it
    deadline = time.monotonic() + 180
    while Path(f"/proc/{server}").exists():
        assert time.monotonic() < deadline, "the aborted tritonserver is still there"
        time.sleep(0.2)
    client = grpcclient.InferenceServerClient(stack.triton.url)
    while True:
        try:
            if client.is_model_ready("text_length") and client.is_model_ready(stack.triton.model_name):
                break
        except Exception:  # noqa: BLE001 - down while it restarts
            pass
        assert time.monotonic() < deadline, triton.part(local).log_tail()
        time.sleep(0.5)
    assert triton.part(local).pid() == supervisor
    assert triton.server_pid(local) not in (None, server)
    lines = triton.restarts(local)[before:]
    assert len(lines) == 1 and "signal 6 (SIGABRT)" in lines[0], lines
    texts = np.array([[b"back"]], dtype=object)
    inp = grpcclient.InferInput("TEXT", list(texts.shape), "BYTES")
    inp.set_data_from_numpy(texts)
    assert client.infer("text_length", [inp]).as_numpy("LENGTH").reshape(-1).tolist() == [4]


def test_status_reports_a_stopped_part_and_down_only_stops_ours(local) -> None:
    from devtools.stack import control

    control.down(local, ["triton"])
    st = control.status(local)
    assert st["triton"]["running"] is False and st["kafka"]["ready"] is True
    control.up(local, ["triton"])
    assert control.status(local)["triton"]["ready"] is True
