"""Running real workers from code, for the demo, the benchmark and the tests: topics and a group of their
own per run, each worker a real `listings worker` process (so it can be SIGKILLed), logging to a file."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

from stream import connections, topics
from stream.config import Settings
from stream.retry import poll


def isolated(settings: Settings, name: str) -> Settings:
    """Settings with topics, a consumer group and an update stream of their own, and the topics created."""
    tag = f"{name}-{uuid.uuid4().hex[:6]}"
    names = ("input", "classified", "tag_updates", "review", "dlq", "feedback", "shadow")
    s = settings.replace(
        topics={n: f"t.{tag}.{n.replace('_', '-')}" for n in names},
        worker={"group_id": f"g.{tag}"},
        redis={"updates_stream": f"t:{tag}:updates"},
    )
    topics.ensure(s)
    return s


class WorkerProcess:
    """`listings worker` (or, with `args`, another `listings` command) as a child process with these settings,
    logging to a file; `capture_stdout` keeps its standard output apart (a `--json` summary) for the caller."""

    def __init__(
        self,
        settings: Settings,
        log_dir: Path,
        name: str = "worker",
        metrics_port: int = 0,
        args: Sequence[str] | None = None,
        capture_stdout: bool = False,
        **extra_env: str,
    ) -> None:
        self.settings = settings
        self.log_path = Path(log_dir) / f"{name}-{uuid.uuid4().hex[:4]}.log"
        self.env = {**os.environ, **settings.to_env(), "PYTHONUNBUFFERED": "1", **extra_env}
        self.args = list(args) if args is not None else ["worker", "--metrics-port", str(metrics_port)]
        self.capture_stdout = capture_stdout
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stream", *self.args],
                env=self.env,
                stdout=subprocess.PIPE if self.capture_stdout else log,
                stderr=log if self.capture_stdout else subprocess.STDOUT,
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


class WorkerDied(RuntimeError):
    """A worker process exited while it was expected to run."""


def produce_raw(
    settings: Settings, values: Iterable[tuple[bytes | None, bytes | None]], topic: str | None = None
) -> int:
    """Send raw (key, value) pairs as they are (malformed events included)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(**connections.kafka(settings.kafka), acks="all", linger_ms=5)
    n = 0
    for key, value in values:
        producer.send(topic or settings.topics.input, key=key, value=value)
        n += 1
    producer.flush(60)
    producer.close()
    return n


def group_members(settings: Settings, group: str | None = None) -> int:
    """Members of a consumer group once it is Stable (partitions assigned), else 0."""
    from kafka import KafkaAdminClient

    name = group or settings.worker.group_id
    # Faust's member metadata is not the consumer protocol kafka-python decodes: it warns on every call; the
    # members and the state, all this needs, are read regardless
    logging.getLogger("kafka.admin").setLevel(logging.ERROR)
    admin = KafkaAdminClient(**connections.kafka(settings.kafka, request_timeout_ms=10000))
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
    import time

    t0 = time.monotonic()

    def stable() -> bool:
        dead = [w for w in workers if not w.alive()]
        if dead:
            raise WorkerDied(f"worker exited while joining; log {dead[0].log_path}:\n{dead[0].log_tail()}")
        return group_members(settings, group) >= members

    from kafka.errors import KafkaError

    poll(stable, timeout, f"{members} member(s) in group {group or settings.worker.group_id}", tolerate=(KafkaError,))
    return time.monotonic() - t0
