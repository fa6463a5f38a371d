"""Running the real worker from code, for the tests, the benchmarks and the demo: topics and a group of
its own per run, the worker as a real process (so it can be SIGKILLed), and readers of what it wrote to
Kafka and Redis."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from stream.settings import ROOT, Settings

TOPIC_ENV = {
    "topic_input": "LISTINGS_TOPIC_INPUT",
    "topic_classified": "LISTINGS_TOPIC_CLASSIFIED",
    "topic_tag_updates": "LISTINGS_TOPIC_TAG_UPDATES",
    "topic_review": "LISTINGS_TOPIC_REVIEW",
    "topic_dlq": "LISTINGS_TOPIC_DLQ",
}


def isolated(settings: Settings, name: str) -> Settings:
    """Settings with topics, group and update stream of their own, and the topics created."""
    from stream.stack.kafka import ensure_topics

    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    s = dataclasses.replace(
        settings,
        topic_input=f"t.{tag}.new",
        topic_classified=f"t.{tag}.classified",
        topic_tag_updates=f"t.{tag}.tag-updates",
        topic_review=f"t.{tag}.review",
        topic_dlq=f"t.{tag}.dlq",
        group_id=f"g.{tag}",
        updates_stream=f"t:{tag}:updates",
    )
    ensure_topics(s)
    return s


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    for attr, var in TOPIC_ENV.items():
        env[var] = getattr(settings, attr)
    env["LISTINGS_GROUP_ID"] = settings.group_id
    env["LISTINGS_UPDATES_STREAM"] = settings.updates_stream
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class WorkerProcess:
    """`listings worker` as a child process, logging to a file."""

    def __init__(
        self, settings: Settings, log_dir: Path, name: str = "worker", metrics_port: int = 0, **extra_env: str
    ) -> None:
        self.settings = settings
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:4]}.log"
        self.env = env_for(settings, **extra_env)
        self.metrics_port = metrics_port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stream.cli", "worker", "--metrics-port", str(self.metrics_port)],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 30) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except FileNotFoundError:
            return ""


def produce_raw(
    settings: Settings, values: Iterable[tuple[bytes | None, bytes | None]], topic: str | None = None
) -> int:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all", linger_ms=5)
    n = 0
    for key, value in values:
        producer.send(topic or settings.topic_input, key=key, value=value)
        n += 1
    producer.flush(60)
    producer.close()
    return n


def listing(item_id: str, title: str, **fields: Any) -> tuple[bytes, bytes]:
    return item_id.encode(), orjson.dumps({"item_id": item_id, "title": title, **fields})


def read_topic(settings: Settings, topic: str, timeout_s: float = 5.0, expected: int = 0) -> list[Any]:
    """Every record of the topic from the beginning: stops after `timeout_s` without new ones, or, when
    `expected` is given, once that many arrived (waiting up to six idle periods for them)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        consumer_timeout_ms=int(timeout_s * 1000),
    )
    out: list[Any] = []
    try:
        for _ in range(6 if expected else 1):
            out.extend(consumer)
            if len(out) >= expected:
                break
    finally:
        consumer.close()
    return out


def wait_for(cond: Callable[[], bool], timeout: float, what: str, on_fail: Callable[[], str] = lambda: "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{on_fail()}")


def direct_categories(settings: Settings, titles: list[str]) -> list[str]:
    """The category id Triton gives each title when asked directly (no Kafka, no worker): the expected result."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(settings.triton_grpc)
    arr = np.array([[t.encode()] for t in titles], dtype=object)
    inp = grpcclient.InferInput("TITLE", list(arr.shape), "BYTES")
    inp.set_data_from_numpy(arr)
    res = client.infer(settings.model_name, [inp], outputs=[grpcclient.InferRequestedOutput("RESULT")])
    return [orjson.loads(r)["category"]["id"] for r in res.as_numpy("RESULT").reshape(-1)]


def result_fields(h: dict[str, str]) -> dict[str, str]:
    """A stored result without its delivery bookkeeping (`outputs_pending` flips to 0 once a redelivery has
    re-sent the outputs of a result whose first run died before Kafka acknowledged them)."""
    return {k: v for k, v in h.items() if k != "outputs_pending"}


def redis_items(settings: Settings, item_ids: Iterable[str]) -> dict[str, dict[str, str]]:
    import redis

    r = redis.Redis.from_url(settings.redis, decode_responses=True)
    pipe = r.pipeline(transaction=False)
    ids = list(item_ids)
    for iid in ids:
        pipe.hgetall(f"listing:{iid}")
    res = pipe.execute()
    r.close()
    return {iid: h for iid, h in zip(ids, res, strict=True) if h}


def group_members(settings: Settings, group: str | None = None) -> int:
    """Members of a consumer group once it is Stable (partitions assigned), else 0."""
    from kafka import KafkaAdminClient

    name = group or settings.group_id
    admin = KafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, request_timeout_ms=10000)
    try:
        g = admin.describe_groups([name]).get(name, {})
    finally:
        admin.close()
    return len(g.get("members") or []) if g.get("group_state") == "Stable" else 0


def wait_group_stable(
    settings: Settings,
    members: int = 1,
    timeout: float = 120,
    group: str | None = None,
    workers: Sequence[WorkerProcess] = (),
) -> float:
    """Wait until `members` consumers share the group's partitions (workers started and assigned); fails at
    once, with its log, if one of `workers` exits meanwhile. Returns the seconds it took."""
    t0 = time.monotonic()

    def stable() -> bool:
        dead = [w for w in workers if not w.alive()]
        if dead:
            raise AssertionError(f"worker exited while joining; log {dead[0].log_path}:\n{dead[0].log_tail()}")
        try:
            return group_members(settings, group) >= members
        except Exception:  # noqa: BLE001 - the group may not exist yet
            return False

    wait_for(stable, timeout, f"{members} member(s) in group {group or settings.group_id}")
    return time.monotonic() - t0
