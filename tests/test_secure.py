"""Authenticated connections, for real: the local stack in secure mode (Kafka SASL_SSL with SCRAM-SHA-512, Redis
over TLS with an ACL user, a throwaway CA made here), a worker end to end through it, and wrong passwords
failing fast with one line naming the part."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import free_ports

from devtools.workers import WorkerProcess, isolated, produce_raw
from support import TITLES, assert_categories, direct_categories, listing, make_test_ca, redis_items, wait_for

pytestmark = pytest.mark.stack

KAFKA_PASSWORD = "kafka-s3cret-for-tests"
REDIS_PASSWORD = "redis-s3cret-for-tests"


@pytest.fixture(scope="module")
def secure(stack, tmp_path_factory):
    """A second Kafka + Redis in secure mode (Triton is the main test stack's)."""
    from devtools import config as stack_config
    from devtools.stack import control
    from stream import config

    kafka_port, controller_port, redis_port = free_ports(3)
    env = {
        "LISTINGS_STACK_SECURE": "true",
        "LISTINGS_STACK_TLS_DIR": str(make_test_ca(tmp_path_factory.mktemp("tls"))),
        "LISTINGS_STATE_DIR": str(tmp_path_factory.mktemp("secure-stack")),
        "LISTINGS_KAFKA_PORT": str(kafka_port),
        "LISTINGS_KAFKA_CONTROLLER_PORT": str(controller_port),
        "LISTINGS_REDIS_PORT": str(redis_port),
        "LISTINGS_KAFKA_SASL_USERNAME": "listings",
        "LISTINGS_KAFKA_SASL_PASSWORD": KAFKA_PASSWORD,
        "LISTINGS_REDIS_USERNAME": "listings",
        "LISTINGS_REDIS_PASSWORD": REDIS_PASSWORD,
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    local = stack_config.load()
    try:
        control.up(local, ["redis", "kafka"])
        yield local, local.runtime(config.load()).replace(triton={"url": stack.triton.url})
    finally:
        control.down(local, ["kafka", "redis"])
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_worker_end_to_end_over_sasl_ssl_and_redis_tls(secure, tmp_path) -> None:
    _, runtime = secure
    assert runtime.kafka.security_protocol == "SASL_SSL" and runtime.redis.url.startswith("rediss://")
    s = isolated(runtime, "secure")
    ids = [f"sec-{i}" for i in range(16)]
    titles = [TITLES[i % len(TITLES)] for i in range(len(ids))]
    produce_raw(s, [listing(i, t) for i, t in zip(ids, titles, strict=True)])
    w = WorkerProcess(s, tmp_path, name="secure").start()
    try:
        wait_for(lambda: len(redis_items(s, ids)) == len(ids), 180, "results through the secure stack", w.log_tail)
    finally:
        w.kill()
    stored = redis_items(s, ids)
    assert_categories([stored[i]["category_id"] for i in ids], direct_categories(s, titles))
    log = w.log_path.read_text()
    assert KAFKA_PASSWORD not in log and REDIS_PASSWORD not in log  # secrets never logged


@pytest.mark.parametrize("part", ["Kafka", "Redis"])
def test_a_wrong_password_stops_the_worker_with_one_clear_line(secure, tmp_path, part: str) -> None:
    _, runtime = secure
    s = isolated(runtime, f"wrong-{part.lower()}")
    wrong = {"Kafka": "LISTINGS_KAFKA_SASL_PASSWORD", "Redis": "LISTINGS_REDIS_PASSWORD"}[part]
    w = WorkerProcess(s, tmp_path, name=f"wrong-{part}", **{wrong: "not-the-password"}).start()
    assert w.proc is not None
    try:
        w.proc.wait(90)
    except subprocess.TimeoutExpired:
        w.kill()
        pytest.fail(f"the worker kept running with a wrong {part} password:\n{w.log_tail()}")
    assert w.proc.returncode != 0
    lines = [ln for ln in w.log_path.read_text().splitlines() if '"level":"critical"' in ln]
    assert lines and part in lines[-1] and "credentials" in lines[-1], w.log_tail()
    assert "not-the-password" not in w.log_path.read_text()


def test_one_shot_command_with_a_wrong_password_says_so_in_one_line(secure) -> None:
    _, runtime = secure
    env = {**os.environ, **runtime.to_env(), "LISTINGS_KAFKA_SASL_PASSWORD": "not-the-password"}
    out = subprocess.run(
        [sys.executable, "-m", "stream", "backfill", "--from-beginning", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 1, out.stderr[-2000:]
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("listings backfill: Kafka at"), out.stderr[-2000:]
    assert "not-the-password" not in out.stderr
