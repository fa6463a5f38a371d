"""Health endpoints and production Redis conditions, on the real stack: /readyz follows the dependencies,
a full Redis is an outage (back-pressure, retries, nothing lost or dead-lettered), not a crash."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest
import redis
from conftest import free_ports

from devtools.workers import WorkerProcess, isolated, produce_raw, wait_group_stable
from stream import connections
from support import TITLES, listing, probe, read_topic, redis_items, wait_for

pytestmark = pytest.mark.stack


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@pytest.fixture
def worker(stack, tmp_path):
    s = isolated(stack, "health")
    [port] = free_ports(1)
    w = WorkerProcess(s, tmp_path, metrics_port=port).start()
    try:
        wait_group_stable(s, workers=[w])
        wait_for(lambda: probe(port, "/readyz")[0] == 200, 60, "/readyz ready", w.log_tail)
        yield s, w, port
    finally:
        w.kill()


def test_readyz_follows_triton_and_healthz_stays_alive(local, worker) -> None:
    from devtools.stack import control

    _, w, port = worker
    status, body = probe(port, "/healthz")
    assert status == 200 and body["ok"]
    control.down(local, ["triton"])
    try:
        wait_for(lambda: probe(port, "/readyz")[0] == 503, 30, "/readyz unready while Triton is down", w.log_tail)
        status, body = probe(port, "/readyz")
        assert body["dependencies"]["triton"]["ok"] is False and body["dependencies"]["redis"]["ok"] is True
        assert probe(port, "/healthz")[0] == 200  # an outage makes it unready, not dead
        assert w.alive()
    finally:
        control.up(local, ["triton"])
    wait_for(lambda: probe(port, "/readyz")[0] == 200, 60, "/readyz ready again after Triton returns", w.log_tail)


def test_full_redis_is_an_outage_not_a_crash(worker) -> None:
    s, w, port = worker
    r = connections.redis_sync(s.redis)
    ids = [f"oom-{i}" for i in range(40)]
    retries_before = metric(port, "listings_retries_total")
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory-policy", "noeviction")
    r.config_set("maxmemory", str(used // 2))  # below what it holds: every write is refused, reads still served
    try:
        with pytest.raises(redis.exceptions.OutOfMemoryError):  # Redis is full
            r.set("oom-probe", "x")
        produce_raw(s, [listing(i, TITLES[n % len(TITLES)]) for n, i in enumerate(ids)])
        wait_for(lambda: metric(port, "listings_retries_total") > retries_before, 60, "retries", w.log_tail)
        wait_for(lambda: probe(port, "/readyz")[0] == 503, 30, "/readyz unready while Redis is full", w.log_tail)
        assert "OutOfMemoryError" in probe(port, "/readyz")[1]["dependencies"]["redis"]["calls"]
        assert w.alive() and probe(port, "/healthz")[0] == 200
        assert redis_items(s, ids) == {}  # not one written
    finally:
        r.config_set("maxmemory", "0")
    wait_for(lambda: len(redis_items(s, ids)) == len(ids), 120, "every event written once Redis has room", w.log_tail)
    wait_for(lambda: probe(port, "/readyz")[0] == 200, 30, "/readyz ready again")
    assert read_topic(s, s.topics.dlq, timeout_s=2) == []  # nothing dead-lettered
    assert w.alive()
    r.close()


def test_a_worker_waiting_for_redis_at_start_is_alive_and_not_ready(stack, tmp_path) -> None:
    """Before it starts, the worker waits for Kafka and Redis; its health endpoints answer meanwhile, so a
    Kubernetes startup probe does not restart a worker that is only waiting (they answered nothing before)."""
    [port, closed] = free_ports(2)
    s = isolated(stack, "waiting").replace(redis={"url": f"redis://127.0.0.1:{closed}/0"})
    w = WorkerProcess(s, tmp_path, metrics_port=port).start()
    try:
        wait_for(lambda: _answers(port), 30, "the health endpoint of a waiting worker", w.log_tail)
        wait_for(lambda: "Redis" in probe(port, "/healthz")[1].get("waiting_for", ""), 30, "waiting for Redis")
        status, body = probe(port, "/healthz")
        assert status == 200 and body["ok"]
        # one reading where the wait names Redis: a Kafka check that failed on an earlier attempt (a slow broker
        # under load) is only overwritten by a later attempt's reading
        wait_for(
            lambda: (
                "Redis" in probe(port, "/readyz")[1].get("waiting_for", "")
                and probe(port, "/readyz")[1]["dependencies"]["kafka"]["ok"]
            ),
            30,
            "Kafka answering while the worker waits for Redis",
            w.log_tail,
        )
        status, body = probe(port, "/readyz")
        assert status == 503 and body["consumer"] == "not started"
        assert body["dependencies"]["kafka"]["ok"] is True  # checked first, and it answered
        assert body["dependencies"]["redis"]["ok"] is False and str(closed) in body["dependencies"]["redis"]["probe"]
        assert w.alive()
    finally:
        w.kill()


def _answers(port: int) -> bool:
    try:
        probe(port, "/healthz")
    except OSError:
        return False
    return True


def test_a_worker_started_during_an_outage_reports_its_backlog_as_lag(local, stack, tmp_path) -> None:
    """The lag gauge was set only for partitions this worker had finished a batch of: a worker (re)started while
    Triton was down showed no lag at all, so a lag alert never fired."""
    from devtools.stack import control

    s = isolated(stack, "lag-outage")
    ids = [f"lag-{i}" for i in range(30)]
    produce_raw(s, [listing(i, TITLES[n % len(TITLES)]) for n, i in enumerate(ids)])
    [port] = free_ports(1)
    control.down(local, ["triton"])
    try:
        w = WorkerProcess(s, tmp_path, metrics_port=port).start()
        wait_for(lambda: _answers(port) and metric(port, "listings_consumer_lag") == 30, 90, "lag 30", w.log_tail)
    finally:
        control.up(local, ["triton"])
    try:
        wait_for(lambda: len(redis_items(s, ids)) == len(ids), 120, "the backlog classified", w.log_tail)
        wait_for(lambda: metric(port, "listings_consumer_lag") == 0, 30, "lag 0", w.log_tail)
    finally:
        w.kill()
