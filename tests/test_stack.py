"""The local stack, for real: Kafka (KRaft), Redis and Triton started by the project's own code (the tests marked
`stack`); the others check the parts' guards — busy ports, stale pid files, Kafka data of another mode, paths
Triton cannot use, Triton's reason for a failed load — without starting a stack."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest


@pytest.mark.stack
def test_stack_up_is_ready_and_idempotent(local) -> None:
    from devtools.stack import control

    st = control.status(local)
    assert all(v["ready"] for v in st.values()), st
    lines: list[str] = []
    control.up(local, echo=lines.append)
    assert len(lines) == 3 and all("already running" in line for line in lines), lines
    # same pids after the second `up`
    assert control.status(local) == st


@pytest.mark.stack
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


@pytest.mark.stack
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


@pytest.mark.stack
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
    # no AOF rewrite while it runs (a rewrite's fork stalled the writes and set live's p99 in the bench) ...
    assert client.config_get("auto-aof-rewrite-percentage") == {"auto-aof-rewrite-percentage": "0"}


@pytest.mark.stack
def test_redis_compacts_a_grown_append_only_file_at_start(local, stack, monkeypatch) -> None:
    """... instead the stack compacts the file when it starts, once it has grown (here: from 1 byte and doubled)."""
    import time

    import redis as redis_lib

    from devtools.stack import redis as redis_part

    client = redis_lib.Redis.from_url(stack.redis.url)
    client.set("smoke:aof", "x" * 200_000)
    for _ in range(20):
        client.append("smoke:aof", "y" * 100_000)
    forks = client.info("stats")["total_forks"]
    monkeypatch.setattr(redis_part, "COMPACT_FROM_BYTES", 1)
    redis_part._compact_aof(local)
    deadline = time.monotonic() + 30
    while client.info("persistence")["aof_rewrite_in_progress"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert client.info("stats")["total_forks"] == forks + 1
    info = client.info("persistence")
    assert info["aof_current_size"] < 2 * info["aof_base_size"]  # rewritten: the base is the whole dataset now
    client.delete("smoke:aof")


@pytest.mark.stack
def test_triton_serves_trivial_model(stack) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(stack.triton.url)
    assert client.is_model_ready("text_length")
    texts = np.array([["héllo".encode()], [b""], [b"x" * 1000]], dtype=object)
    inp = grpcclient.InferInput("TEXT", list(texts.shape), "BYTES")
    inp.set_data_from_numpy(texts)
    out = client.infer("text_length", [inp]).as_numpy("LENGTH")
    assert out.reshape(-1).tolist() == [5, 0, 1000]


@pytest.mark.stack
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


@pytest.mark.stack
def test_status_reports_a_stopped_part_and_down_only_stops_ours(local) -> None:
    from devtools.stack import control

    control.down(local, ["triton"])
    st = control.status(local)
    assert st["triton"]["running"] is False and st["kafka"]["ready"] is True
    control.up(local, ["triton"])
    assert control.status(local)["triton"]["ready"] is True


# --- the guards, without a stack ---


def settings_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> object:
    """Stack settings with their state folder in `tmp_path`, ports free now, and these LISTINGS_* variables."""
    from conftest import PORT_VARS, free_ports

    from devtools import config

    monkeypatch.setenv("LISTINGS_STATE_DIR", str(tmp_path / "state"))
    for name, port in zip(PORT_VARS, free_ports(len(PORT_VARS)), strict=True):
        monkeypatch.setenv(name, str(port))
    for name, value in env.items():
        monkeypatch.setenv(f"LISTINGS_{name.upper()}", value)
    return config.load()


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port another process (here: a plain socket) listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("part", ["redis", "kafka", "triton"])
def test_up_refuses_a_port_another_process_listens_on(tmp_path, monkeypatch, busy_port, part) -> None:
    """`stack up` probed whatever listened on its port (e.g. a stack of another LISTINGS_STATE_DIR), said
    "started", and its own process then died on the clash: it now refuses, naming the port and the setting."""
    from devtools.stack import control
    from devtools.stack.process import StackError

    setting = {"redis": "redis_port", "kafka": "kafka_controller_port", "triton": "triton_grpc_port"}[part]
    s = settings_in(tmp_path, monkeypatch, **{setting: str(busy_port)})
    with pytest.raises(StackError, match=f"port {busy_port} .* in use .*LISTINGS_{setting.upper()}"):
        control.PARTS[part][1](s)
    assert not control.PARTS[part][0](s).pid_file.exists()  # nothing started


@pytest.fixture
def bystander() -> Iterator[subprocess.Popen[bytes]]:
    """An unrelated process whose command line happens to hold the marker word `redis-server`."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "redis-server"])
    deadline = time.monotonic() + 10
    while b"redis-server" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("recorded", ["pid only (old file)", "another start time"])
def test_a_stale_pid_file_never_gets_an_unrelated_process_killed(tmp_path, bystander, recorded) -> None:
    """A pid file left behind whose pid now belongs to another process with the marker in its command line (another
    stack's redis, here any process) was taken as ours, and `stack down` killed it."""
    from devtools.stack.process import Managed

    part = Managed.of("redis", tmp_path / "state", tmp_path / "logs", marker="redis-server")
    part.pid_file.parent.mkdir(parents=True)
    started = int(Path(f"/proc/{bystander.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    text = f"{bystander.pid}\n" if recorded.startswith("pid only") else f"{bystander.pid} {started - 1}\n"
    part.pid_file.write_text(text)
    assert part.pid() is None and not part.pid_file.exists()  # stale: removed
    part.pid_file.write_text(text)
    assert part.stop() is False
    time.sleep(0.2)
    assert bystander.poll() is None  # left alone


def test_a_pid_file_names_the_process_by_pid_and_start_time(tmp_path) -> None:
    from devtools.stack.process import Managed, start_time

    state = tmp_path / "state"
    part = Managed.of("fake", state, tmp_path / "logs", marker="fake-server-marker")
    pid = part.start([sys.executable, "-c", "import time; time.sleep(120)", "fake-server-marker", str(state)])
    try:
        assert part.pid_file.read_text().split() == [str(pid), str(start_time(pid))]
        assert part.pid() == pid
        part.pid_file.write_text(f"{pid}\n")  # a pid file written before start times were: our state folder counts
        assert part.pid() == pid
        assert part.stop(timeout=10) is True
        assert part.pid() is None
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_kafka_refuses_data_of_another_mode_or_password(tmp_path) -> None:
    """Formatting (which adds the SCRAM user) is skipped when the data exists: a switch to secure mode or a new
    password started a broker that was never ready ("not ready after 120s"). The mode is recorded beside the data."""
    from devtools.stack.kafka import MODE_FILE, check_storage, record_storage
    from devtools.stack.process import StackError

    state = tmp_path / "state"
    (state / "kafka-data").mkdir(parents=True)
    check_storage(state, True, ("listings", "pw"))  # no data yet: nothing to check
    (state / "kafka-data" / "meta.properties").write_text("node.id=1\n")
    record_storage(state, False, None)
    check_storage(state, False, None)
    with pytest.raises(StackError, match=r"plaintext mode, not secure .*make clean.*LISTINGS_STATE_DIR"):
        check_storage(state, True, ("listings", "pw"))
    record_storage(state, True, ("listings", "pw"))
    assert "pw" not in (state / MODE_FILE).read_text()
    check_storage(state, True, ("listings", "pw"))
    with pytest.raises(StackError, match="another SASL user or password"):
        check_storage(state, True, ("listings", "new-pw"))
    with pytest.raises(StackError, match=r"secure .* mode, not plaintext"):
        check_storage(state, False, None)
    # data from before the record: judged by the last kafka.properties, then recorded
    (state / MODE_FILE).unlink()
    (state / "kafka.properties").write_text("listeners=PLAINTEXT://127.0.0.1:1,CONTROLLER://127.0.0.1:2\n")
    with pytest.raises(StackError, match="plaintext mode"):
        check_storage(state, True, ("listings", "pw"))
    check_storage(state, False, None)
    assert json.loads((state / MODE_FILE).read_text()) == {"secure": False}


def test_the_brokers_extra_jvm_options_come_after_the_stacks_own(tmp_path, monkeypatch) -> None:
    """LISTINGS_KAFKA_JVM_OPTS is appended to the broker's JVM options (HotSpot lets a later flag win over an
    earlier one), before the class path; a word that is not an option is refused when the settings load."""
    from pydantic import ValidationError

    from devtools.config import StackSettings
    from devtools.stack.kafka import _java_cmd

    monkeypatch.setenv("LISTINGS_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("LISTINGS_KAFKA_JVM_OPTS", "-XX:TieredStopAtLevel=1  -Xss2m")
    cmd = _java_cmd(StackSettings(), "kafka.Kafka", "server.properties")
    assert cmd[cmd.index("-XX:MaxGCPauseMillis=20") :].index("-XX:TieredStopAtLevel=1") > 0
    assert cmd.index("-Xss2m") == cmd.index("-cp") - 1
    assert cmd[-2:] == ["kafka.Kafka", "server.properties"]
    monkeypatch.delenv("LISTINGS_KAFKA_JVM_OPTS")
    assert "-XX:TieredStopAtLevel=1" not in _java_cmd(StackSettings(), "kafka.Kafka")
    monkeypatch.setenv("LISTINGS_KAFKA_JVM_OPTS", "-XX:TieredStopAtLevel=1 TieredStopAtLevel=1")
    with pytest.raises(ValidationError, match="each starting with '-': not 'TieredStopAtLevel=1'"):
        StackSettings()


@pytest.mark.parametrize("where", ["state_dir", "model_repository"])
def test_triton_refuses_a_path_with_whitespace(tmp_path, monkeypatch, where) -> None:
    """The python backend starts its stub through `bash -c` with the paths unquoted: every model failed to load."""
    from devtools.stack import triton
    from devtools.stack.process import StackError

    spaced = tmp_path / "my models"
    s = settings_in(tmp_path, monkeypatch, **{where: str(spaced)})
    with pytest.raises(StackError, match=f"LISTINGS_{where.upper()} .*my models.* whitespace"):
        triton.up(s)
    assert not triton.part(s).pid_file.exists()


def test_a_failed_model_load_names_tritons_reason(tmp_path, monkeypatch) -> None:
    """Triton answers a failed load with HTTP 400 and its reason in the body; the user saw only "HTTP Error 400:
    Bad Request"."""
    from devtools.stack import triton
    from devtools.stack.process import StackError

    class Refuse(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = b'{"error":"failed to load \'listing_classifier\' version 3: Internal: no model.onnx"}'
            self.send_response(400)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        s = settings_in(tmp_path, monkeypatch, triton_http_port=str(server.server_address[1]))
        with pytest.raises(StackError, match=r"HTTP 400.*version 3: Internal: no model.onnx"):
            triton.load_model(s, "listing_classifier")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.stack
def test_a_second_stack_on_the_same_ports_is_refused(local, tmp_path) -> None:
    """Another state folder on the running stack's ports: refused before it starts anything, and the running stack
    is untouched."""
    from devtools.stack import control
    from devtools.stack.process import StackError

    other = local.model_copy(update={"state_dir": tmp_path / "other-stack"})
    before = control.status(local)
    with pytest.raises(StackError, match=f"redis: port {local.redis_port} .* in use"):
        control.up(other, echo=lambda _: None)
    assert not (tmp_path / "other-stack" / "run" / "redis.pid").exists()
    assert control.status(local) == before
