"""Settings of the runtime, from `LISTINGS_*` environment variables with local defaults.

One group per concern, each validated when it is read: Kafka (connection and security), the topics,
Redis, Triton, the worker, the backfill. `load()` reads them all and turns any bad value into one
`SettingsError` naming the variable and the value (the CLI prints it on one line and exits 2).
Secrets (`*_PASSWORD`, `LISTINGS_REVIEW_TOKEN`) are `SecretStr`: never printed, logged or shown in a repr.

The defaults point at the embedded local stack (`listings stack up`, ports 19092 / 16379 / 18001);
a production deployment sets the endpoints and credentials.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import AliasChoices, BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# one micro-batch is one Triton request, and Triton refuses a request over the model's `max_batch_size` (256 in
# triton_models/listing_classifier/config.pbtxt): a larger batch would only be refused and halved, request by request
MAX_REQUEST_ROWS = 256


class SettingsError(ValueError):
    """A `LISTINGS_*` variable holds a value its setting does not accept."""


def _default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "listing-classifier"


S = TypeVar("S", bound=BaseSettings)


def env_name(cls: type[BaseSettings], field: str) -> str:
    """The environment variable a settings field is read from."""
    alias = cls.model_fields[field].validation_alias
    if isinstance(alias, str):
        return alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"{cls.model_config.get('env_prefix', '')}{field}".upper()


def host_port_problem(entry: str) -> str | None:
    """Why `entry` is not `host:port` (port 1..65535), or None."""
    if not entry.strip():
        return "an empty entry"
    host, sep, port = entry.strip().rpartition(":")
    if not sep or not host or "/" in host:
        return f"{entry.strip()!r} is not host:port"
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"port of {entry.strip()!r} is not 1..65535"
    return None


def redis_url_problem(url: str) -> str | None:
    """Why `url` is not a Redis URL redis-py can use (it raises only when the client is made), or None."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return None if parts.path else "a unix:// URL needs the socket's path"
    try:
        port = parts.port
    except ValueError as exc:  # "Port could not be cast to integer value as 'abc'", "Port out of range 0-65535"
        return str(exc)
    if port == 0:
        return "port 0: a port is 1..65535"
    if parts.path.strip("/") and not parts.path.strip("/").isdigit():
        return f"the database {parts.path.strip('/')!r} is not a number"
    return None


def bootstrap_problem(servers: str) -> str | None:
    """Why a comma-separated bootstrap list is not `host:port` entries, or None."""
    return next(filter(None, (host_port_problem(entry) for entry in servers.split(","))), None)


def _refusing(problem: Callable[[str], str | None]) -> Callable[[str], str]:
    """A field validator from a `problem` function: its answer, when there is one, is the error."""

    def check(value: str) -> str:
        why = problem(value)
        if why:
            raise ValueError(why)
        return value

    return check


def _unset_if_empty(value: Any) -> Any:
    """An empty variable (`LISTINGS_KAFKA_SSL_CAFILE=`) means unset, not the current folder."""
    return None if isinstance(value, str) and not value.strip() else value


def _existing_file(path: Path | None) -> Path | None:
    if path is not None and not path.is_file():
        raise ValueError("no such file" if not path.exists() else "not a file")
    return path


class _Group(BaseSettings):
    # NaN and infinity are never a setting (NaN passes no bound; infinity would silently switch a limit off)
    model_config = SettingsConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)


class KafkaSettings(_Group):
    """How every client (worker, backfill, produce, shadow) connects to Kafka."""

    model_config = SettingsConfigDict(env_prefix="LISTINGS_KAFKA_", frozen=True, extra="ignore")

    bootstrap: str = Field("127.0.0.1:19092", min_length=1, description="bootstrap servers, host:port comma-separated")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = "SCRAM-SHA-512"
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(None, description="CA bundle that signed the brokers' certificates")
    ssl_certfile: Path | None = Field(None, description="client certificate (mutual TLS)")
    ssl_keyfile: Path | None = None
    # a dead consumer's partitions move to another member after this long without heartbeats
    session_timeout_ms: int = Field(10_000, ge=1_000, le=300_000)
    heartbeat_interval_ms: int = Field(2_000, ge=100, le=100_000)

    _bootstrap = field_validator("bootstrap")(_refusing(bootstrap_problem))

    _empty_files = field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile", mode="before")(_unset_if_empty)
    _files = field_validator("ssl_cafile", "ssl_certfile", "ssl_keyfile")(_existing_file)

    @model_validator(mode="after")
    def _check(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and not (self.sasl_username and self.sasl_password):
            raise ValueError(
                "LISTINGS_KAFKA_SECURITY_PROTOCOL is SASL_*: set LISTINGS_KAFKA_SASL_USERNAME and _SASL_PASSWORD"
            )
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError("LISTINGS_KAFKA_HEARTBEAT_INTERVAL_MS must be at most a third of _SESSION_TIMEOUT_MS")
        return self

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")


TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")  # what Kafka accepts as a topic name


class TopicSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="LISTINGS_TOPIC_", frozen=True, extra="ignore")

    input: str = "listings.new"
    classified: str = "listings.classified"
    tag_updates: str = "listings.tag-updates"
    review: str = "listings.review"
    dlq: str = "listings.dlq"
    feedback: str = "listings.feedback"
    shadow: str = "listings.shadow"
    partitions: int = Field(4, ge=1, le=10_000, validation_alias=AliasChoices("LISTINGS_INPUT_PARTITIONS"))
    replication: int = Field(1, ge=1, le=32, description="replication factor of topics `listings topics` creates")

    @field_validator("input", "classified", "tag_updates", "review", "dlq", "feedback", "shadow")
    @classmethod
    def _topic(cls, value: str) -> str:
        if not TOPIC_NAME.fullmatch(value) or value in (".", ".."):
            raise ValueError("not a Kafka topic name (1 to 249 letters, digits, '.', '_' or '-')")
        return value


class RedisSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="LISTINGS_REDIS_", frozen=True, extra="ignore")

    url: str = Field("redis://127.0.0.1:16379/0", pattern=r"^(redis|rediss|unix)://")
    username: str | None = Field(None, description="ACL user (overrides the URL's)")
    password: SecretStr | None = Field(None, description="password of the ACL user (overrides the URL's)")
    ca_file: Path | None = Field(None, description="CA bundle for a rediss:// (TLS) URL")
    updates_stream: str = Field(
        "listings:updates", min_length=1, validation_alias=AliasChoices("LISTINGS_UPDATES_STREAM")
    )
    updates_maxlen: int = Field(100_000, ge=1, validation_alias=AliasChoices("LISTINGS_UPDATES_MAXLEN"))

    _url = field_validator("url")(_refusing(redis_url_problem))

    _empty_file = field_validator("ca_file", mode="before")(_unset_if_empty)
    _file = field_validator("ca_file")(_existing_file)


class TritonSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="LISTINGS_TRITON_", frozen=True, extra="ignore")

    url: str = Field("127.0.0.1:18001", min_length=1, description="gRPC endpoint host:port")
    timeout_s: float = Field(30.0, gt=0, le=3600)
    model_name: str = Field("listing_classifier", min_length=1, validation_alias=AliasChoices("LISTINGS_MODEL_NAME"))

    _url = field_validator("url")(_refusing(host_port_problem))


class WorkerSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="LISTINGS_", frozen=True, extra="ignore")

    group_id: str = Field("listing-classifier", min_length=1)
    max_batch: int = Field(64, ge=1, le=MAX_REQUEST_ROWS)
    # at least 1: Faust's take(within=0) would wait for a full batch however long that takes
    max_wait_ms: int = Field(50, ge=1, le=60_000)
    max_in_flight: int = Field(4, ge=1, le=256)
    # longest a Kafka fetch waits at the broker (Faust's fixed 1,500 ms stalls a worker that is behind; see
    # stream/events/fetching.py)
    fetch_max_wait_ms: int = Field(100, ge=1, le=30_000)
    review_threshold: float = Field(0.5, ge=0.0, le=1.0)
    retry_max_backoff_s: float = Field(5.0, gt=0, le=600)
    metrics_host: str = "127.0.0.1"
    metrics_port: int = Field(9108, ge=0, le=65535)
    state_dir: Path = Field(default_factory=_default_state_dir)
    # /healthz fails when the pipeline holds work but has made no progress for this long
    stall_timeout_s: float = Field(120.0, gt=0)
    # a stop (SIGTERM/SIGINT) that has not finished after this long exits anyway (Kafka unreachable: Faust's consumer
    # otherwise waits 60 s for a broker that is gone); below Kubernetes' grace period (deploy/: 45 s)
    shutdown_timeout_s: float = Field(20.0, gt=0, le=3600)
    # per-batch stage timings as JSON lines (the benchmark's breakdown); off when unset
    timings_file: Path | None = None
    # OpenTelemetry spans per batch: none (default), console, or otlp (OTEL_EXPORTER_OTLP_* say where)
    otel_exporter: Literal["none", "console", "otlp"] = "none"

    _empty_file = field_validator("timings_file", mode="before")(_unset_if_empty)


class BackfillSettings(_Group):
    model_config = SettingsConfigDict(env_prefix="LISTINGS_BACKFILL_", frozen=True, extra="ignore")

    # 64, like the worker: on the background copy (the default model) a backfill batch holds none of live's instances,
    # and per event a batch of 64 costs ~1.3 core-ms against ~1.8 for 16 (Triton, the backfill, Kafka, Redis; the
    # 12-04 scratch A/B in the README). With `model: live` a smaller batch (16) shortens what a live batch waits for.
    max_batch: int = Field(
        64, ge=1, le=MAX_REQUEST_ROWS, description="events per backfill request (and per Kafka commit)"
    )
    # 1: one backfill batch at a time, so the copy computes on at most one core at once and live's compute always
    # has a core the backfill's does not hold (at 2 the copy's two instances can take both cores at once). In the
    # bench of 12-08 morning (bench/README.md) the backfill took 0.53-0.89 of the capacity live left free at
    # x1.09-1.48 of live alone's p99 with 1 in flight, against 0.33-0.70 at x1.49-1.89 with 2 an hour earlier (one
    # run each; over all rounds of 12-07/08, both of issue 12's goals in 6 of 12 rounds at 1, 9 of 24 at 2)
    max_in_flight: int = Field(1, ge=1, le=256, description="backfill requests in flight to Triton")
    governor: bool = Field(True, description="yield to live traffic (see stream/governor.py)")
    live_target_ms: float = Field(
        0.0, ge=0, description="a fixed live end-to-end latency (ms, at live_percentile) to protect; 0: relative"
    )
    # 1.3 since 12-08 (1.2 before): with one backfill batch in flight and the niceness reaching the kernel, the
    # target, not live's tail, was what held the backfill under half the free capacity (bench/README.md, 12-08)
    live_tolerance: float = Field(1.3, ge=1.0, le=10.0, description="live latency allowed, relative to live alone")
    live_percentile: float = Field(99.0, ge=50.0, le=100.0, description="the live latency percentile protected")
    min_rate: float = Field(5.0, ge=0)
    rate_step: float = Field(20.0, gt=0)
    nice: int = Field(10, ge=0, le=19, description="CPU niceness of the backfill process (live work goes first)")
    model: str = Field(
        "auto",
        min_length=1,
        description="the Triton model backfill and shadow requests go to: auto = the live model's background copy "
        "(`<LISTINGS_MODEL_NAME>_background`: its own instances at CPU niceness 19), live = the live model at the "
        "low priority, or a model name; a copy Triton does not serve means the live model",
    )

    def serve_from(self, live_model: str) -> str:
        """The Triton model name `model` stands for, given the live model's name."""
        if self.model == "auto":
            return f"{live_model}_background"
        return live_model if self.model == "live" else self.model


MIN_TOKEN = 8


class ReviewSettings(_Group):
    """The review page (`listings review-ui`)."""

    model_config = SettingsConfigDict(env_prefix="LISTINGS_REVIEW_", frozen=True, extra="ignore")

    # not empty: aiohttp binds an empty host on every interface
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8088, ge=1, le=65535)
    # set but empty would switch authentication off; a short one is guessed
    token: SecretStr | None = Field(
        None, description="required when the page is bound beyond loopback (8 characters or more)"
    )
    page_size: int = Field(200, ge=1, le=5000)

    @field_validator("token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_TOKEN:
            raise ValueError(f"a token needs {MIN_TOKEN} characters or more (an empty one would switch it off)")
        return value


class Settings(BaseModel):
    """Every runtime setting, by concern."""

    model_config = {"frozen": True}

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    triton: TritonSettings = Field(default_factory=TritonSettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    backfill: BackfillSettings = Field(default_factory=BackfillSettings)
    review: ReviewSettings = Field(default_factory=ReviewSettings)

    def replace(self, **groups: dict[str, Any]) -> Settings:
        """A copy with some fields of some groups changed, validated like the environment's values:
        `s.replace(topics={"input": "x"})`; raises `SettingsError` naming each bad value."""
        update = {name: _changed(getattr(self, name), fields) for name, fields in groups.items()}
        return self.model_copy(update=update)

    def to_env(self) -> dict[str, str]:
        """These settings as `LISTINGS_*` variables (secrets included), for a child process."""
        env: dict[str, str] = {}
        for name in type(self).model_fields:
            group = getattr(self, name)
            for field in type(group).model_fields:
                value = getattr(group, field)
                if value is None:
                    continue
                if isinstance(value, SecretStr):
                    value = value.get_secret_value()
                elif isinstance(value, bool):
                    value = "true" if value else "false"
                env[env_name(type(group), field)] = str(value)
        return env


def _changed(group: _Group, fields: dict[str, Any]) -> _Group:
    """`group` with `fields` changed, validated (`model_copy` would not: `metrics_port=70000` went through)."""
    cls = type(group)
    unknown = set(fields) - set(cls.model_fields)
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {', '.join(sorted(unknown))}")
    values = {**{field: getattr(group, field) for field in cls.model_fields}, **fields}
    try:  # by the names validation takes (a field's alias where it has one); the environment is not read again
        return cls.model_validate({_input_name(cls, field): value for field, value in values.items()})
    except ValidationError as exc:
        raise SettingsError(describe_error(cls, exc)) from None


def _input_name(cls: type[BaseSettings], field: str) -> str:
    alias = cls.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return alias if isinstance(alias, str) else field


GROUPS: dict[str, type[_Group]] = {
    name: info.default_factory  # type: ignore[misc]
    for name, info in Settings.model_fields.items()
}


SECRETS = ("PASSWORD", "TOKEN")  # variables whose value an error never shows


def without_password(value: Any) -> Any:
    """A URL-shaped value with its password masked (`redis://u:***@host/0`): an error shows the value it refuses."""
    if not isinstance(value, str) or "://" not in value or "@" not in value:
        return value
    scheme, rest = value.split("://", 1)
    userinfo, at, host = rest.rpartition("@")
    if ":" not in userinfo:
        return value
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***{at}{host}"


def describe_error(group: type[BaseSettings], exc: ValidationError) -> str:
    """One line per bad value: `LISTINGS_MAX_BATCH='abc': Input should be a valid integer`."""
    lines = []
    for err in exc.errors():
        loc = err.get("loc") or ()
        if loc and isinstance(loc[0], str) and loc[0] in group.model_fields:
            var = env_name(group, loc[0])
        elif loc:
            var = str(loc[0]).upper()
        else:
            var = group.__name__
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if loc and "input" in err and not isinstance(err["input"], dict):
            shown = "<secret>" if any(secret in var for secret in SECRETS) else repr(without_password(err["input"]))
            lines.append(f"{var}={shown}: {msg}")
        else:
            lines.append(msg if msg.startswith("LISTINGS_") else f"{var}: {msg}")
    return "; ".join(lines)


def read(cls: type[S]) -> S:
    """One settings class from the environment; raises `SettingsError` naming each bad variable."""
    try:
        return cls()
    except ValidationError as exc:
        raise SettingsError(describe_error(cls, exc)) from None


def load() -> Settings:
    """Every runtime group from the environment; raises `SettingsError` naming each bad variable."""
    values: dict[str, BaseSettings] = {}
    problems: list[str] = []
    for name, group in GROUPS.items():
        try:
            values[name] = read(group)
        except SettingsError as exc:
            problems.append(str(exc))
    if problems:
        raise SettingsError("; ".join(problems))
    return Settings(**values)
