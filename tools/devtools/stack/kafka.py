"""Apache Kafka in KRaft mode (one combined broker + controller), jars from Maven Central."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shutil
import subprocess
import uuid
from pathlib import Path

from devtools.config import StackSettings
from devtools.stack.process import Managed, StackError, ensure_ports_free, wait_until
from stream import topics
from training.config import REPO as ROOT

POM = ROOT / "deploy" / "pom.xml"
LOG4J = ROOT / "deploy" / "kafka-log4j.properties"
MODE_FILE = "kafka-data.mode.json"  # beside kafka-data/: the mode it was formatted for (see check_storage)


def part(settings: StackSettings) -> Managed:
    return Managed.of("kafka", settings.state_dir, settings.log_dir, marker="kafka.Kafka")


def jar_dir(settings: StackSettings) -> Path:
    return settings.cache_dir / "kafka-jars"


def ensure_jars(settings: StackSettings) -> Path:
    """Resolve the broker's jars with Maven (cached in ~/.m2 and in the state folder)."""
    jars = jar_dir(settings)
    stamp = jars / f".pom-{_pom_hash()}"
    if stamp.exists():
        return jars
    if shutil.which("mvn") is None:
        raise StackError("kafka: Maven (mvn) is not installed; `make setup` installs it")
    shutil.rmtree(jars, ignore_errors=True)
    jars.mkdir(parents=True)
    out = subprocess.run(
        ["mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={jars}"],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise StackError(f"kafka: resolving jars from Maven Central failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    stamp.touch()
    return jars


def _pom_hash() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()[:12]


def _java_cmd(settings: StackSettings, main: str, *args: str) -> list[str]:
    return [
        "java",
        f"-Xmx{settings.kafka_heap}",
        f"-Xms{settings.kafka_heap}",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j.configuration=file:{LOG4J}",
        f"-Dkafka.logs.dir={settings.log_dir}",
        *settings.kafka_jvm_opts.split(),
        "-cp",
        f"{jar_dir(settings)}/*",
        main,
        *args,
    ]


def _listener_lines(settings: StackSettings) -> list[str]:
    port, cport = settings.kafka_port, settings.kafka_controller_port
    if not settings.stack_secure:
        return [
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        ]
    user, password = _credentials(settings)
    keystore = settings.state_dir / "kafka-keystore.pem"  # key and chain in one PEM file, as Kafka reads it
    keystore.write_text(settings.tls("server.key").read_text() + settings.tls("server.pem").read_text())
    keystore.chmod(0o600)
    jaas = f'org.apache.kafka.common.security.scram.ScramLoginModule required username="{user}" password="{password}";'
    return [
        f"listeners=SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
        f"advertised.listeners=SASL_SSL://127.0.0.1:{port}",
        "inter.broker.listener.name=SASL_SSL",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL",
        "sasl.enabled.mechanisms=SCRAM-SHA-512",
        "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
        f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config={jaas}",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={keystore}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={settings.tls('ca.pem')}",
        "ssl.client.auth=none",
    ]


def _credentials(settings: StackSettings) -> tuple[str, str]:
    """The SCRAM user the secure stack creates: the runtime's own Kafka credentials."""
    k = settings.runtime().kafka
    if not k.sasl_username or k.sasl_password is None:
        raise StackError("kafka: the secure stack needs LISTINGS_KAFKA_SASL_USERNAME and LISTINGS_KAFKA_SASL_PASSWORD")
    return k.sasl_username, k.sasl_password.get_secret_value()


def write_config(settings: StackSettings) -> Path:
    data = settings.state_dir / "kafka-data"
    conf = settings.state_dir / "kafka.properties"
    conf.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{settings.kafka_controller_port}",
                *_listener_lines(settings),
                "controller.listener.names=CONTROLLER",
                f"log.dirs={data}",
                f"num.partitions={settings.runtime().topics.partitions}",
                "offsets.topic.replication.factor=1",
                "offsets.topic.num.partitions=4",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=true",
                "log.retention.hours=168",
                "log.segment.bytes=67108864",
                "log.cleaner.dedupe.buffer.size=16777216",
                "num.network.threads=2",
                "num.io.threads=2",
                "",
            ]
        )
    )
    conf.chmod(0o600)  # it holds the SCRAM password in secure mode
    return conf


def check_storage(state_dir: Path, secure: bool, credentials: tuple[str, str] | None) -> None:
    """Refuse a storage formatted for the other mode (plain or SASL_SSL) or with other SCRAM credentials: Kafka
    adds them only when it formats its storage, so it would start and never become ready. A storage from before
    the mode was recorded is judged by the last kafka.properties, then recorded as it is now."""
    data = state_dir / "kafka-data"
    if not (data / "meta.properties").exists():
        return
    try:
        stored = json.loads((state_dir / MODE_FILE).read_text())
    except (FileNotFoundError, ValueError):
        stored = None
    if not isinstance(stored, dict):
        conf = state_dir / "kafka.properties"
        was_secure = conf.exists() and "listeners=SASL_SSL://" in conf.read_text()
        if was_secure != secure:
            raise _storage_error(data, f"was formatted for {_mode(was_secure)} mode, not {_mode(secure)}")
        record_storage(state_dir, secure, credentials)
        return
    if bool(stored.get("secure")) != secure:
        raise _storage_error(data, f"was formatted for {_mode(bool(stored.get('secure')))} mode, not {_mode(secure)}")
    if secure and credentials and not _same_credentials(stored, credentials):
        raise _storage_error(data, "holds another SASL user or password (Kafka sets them only when it formats it)")


def record_storage(state_dir: Path, secure: bool, credentials: tuple[str, str] | None) -> None:
    """Write, beside the storage, the mode it was formatted for and a salted hash of its SCRAM credentials."""
    record: dict[str, object] = {"secure": secure}
    if secure and credentials:
        salt = secrets.token_hex(8)
        record.update(salt=salt, credentials=_digest(salt, *credentials))
    path = state_dir / MODE_FILE
    path.write_text(json.dumps(record) + "\n")
    path.chmod(0o600)


def _same_credentials(stored: dict[str, object], credentials: tuple[str, str]) -> bool:
    """Whether the recorded hash is of these credentials (a record without one cannot tell: taken as the same)."""
    if "credentials" not in stored:
        return True
    return stored["credentials"] == _digest(str(stored.get("salt", "")), *credentials)


def _digest(salt: str, user: str, password: str) -> str:
    return hashlib.sha256(f"{salt}\0{user}\0{password}".encode()).hexdigest()


def _mode(secure: bool) -> str:
    return "secure (SASL_SSL)" if secure else "plaintext"


def _storage_error(data: Path, what: str) -> StackError:
    return StackError(
        f"kafka: its data {data} {what}; it would never become ready: remove it (`make clean`: the whole local "
        "stack's data), or use another LISTINGS_STATE_DIR"
    )


def format_storage(settings: StackSettings, conf: Path) -> None:
    data = settings.state_dir / "kafka-data"
    if (data / "meta.properties").exists():
        return
    cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    args = ["format", f"--cluster-id={cluster_id}", "-c", str(conf)]
    if settings.stack_secure:
        user, password = _credentials(settings)
        args += ["--add-scram", f"SCRAM-SHA-512=[name={user},password={password}]"]
    out = subprocess.run(_java_cmd(settings, "kafka.tools.StorageTool", *args), capture_output=True, text=True)
    if out.returncode != 0:
        raise StackError(f"kafka: formatting storage failed:\n{out.stdout}{out.stderr}")
    record_storage(settings.state_dir, settings.stack_secure, _credentials(settings) if settings.stack_secure else None)


def ready(settings: StackSettings) -> bool:
    from kafka import KafkaAdminClient

    from stream import connections

    admin = KafkaAdminClient(**connections.kafka(settings.runtime().kafka, request_timeout_ms=3000))
    try:
        return len(admin.describe_cluster()["brokers"]) >= 1
    finally:
        admin.close()


def ensure_topics(settings: StackSettings) -> list[str]:
    """Create the design's topics that do not exist yet on this stack's broker; returns the names created."""
    return topics.ensure(settings.runtime())


def up(settings: StackSettings) -> str:
    p = part(settings)
    if p.running():
        ensure_topics(settings)
        return f"kafka already running (pid {p.pid()}) on {settings.bootstrap_servers}"
    ensure_ports_free(
        "kafka", {"kafka_port": settings.kafka_port, "kafka_controller_port": settings.kafka_controller_port}
    )
    check_storage(settings.state_dir, settings.stack_secure, _credentials(settings) if settings.stack_secure else None)
    ensure_jars(settings)
    conf = write_config(settings)
    format_storage(settings, conf)
    p.start(_java_cmd(settings, "kafka.Kafka", str(conf)))
    wait_until(p, lambda: ready(settings), settings.startup_timeout)
    ensure_topics(settings)
    return f"kafka started (pid {p.pid()}) on {settings.bootstrap_servers}"
