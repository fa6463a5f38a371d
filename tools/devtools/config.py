"""Settings of the embedded local stack: its state folder and loopback ports (plus the paths training uses:
the model repository Triton serves, the caches)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from stream import config
from training.config import REPO, TrainingSettings

TLS_FILES = ("ca.pem", "server.pem", "server.key")


class StackSettings(TrainingSettings):
    state_dir: Path = Field(REPO / ".stack", description="data, logs and pid files of the local stack")
    kafka_port: int = Field(19092, ge=1, le=65535)
    kafka_controller_port: int = Field(19093, ge=1, le=65535)
    kafka_heap: str = Field("512m", pattern=r"^\d+[kKmMgG]$")
    kafka_jvm_opts: str = Field(
        "",
        description="more JVM options for the local broker, space-separated, after the stack's own (a later "
        "HotSpot flag wins)",
    )
    redis_port: int = Field(16379, ge=1, le=65535)
    triton_http_port: int = Field(18000, ge=1, le=65535)
    triton_grpc_port: int = Field(18001, ge=1, le=65535)
    triton_metrics_port: int = Field(18002, ge=1, le=65535)
    startup_timeout: float = Field(120.0, gt=0, description="seconds `stack up` waits for each part")
    # secure mode: Kafka on a SASL_SSL listener (SCRAM-SHA-512) and Redis on TLS with an ACL user; the TLS files
    # (ca.pem, server.pem, server.key) come from stack_tls_dir, the credentials from the runtime's
    # LISTINGS_KAFKA_SASL_USERNAME/_PASSWORD and LISTINGS_REDIS_USERNAME/_PASSWORD
    stack_secure: bool = False
    stack_tls_dir: Path | None = None

    @field_validator("kafka_jvm_opts")
    @classmethod
    def _jvm_opts(cls, value: str) -> str:
        bad = [opt for opt in value.split() if not opt.startswith("-")]
        if bad:
            raise ValueError(f"LISTINGS_KAFKA_JVM_OPTS takes JVM options, each starting with '-': not {bad[0]!r}")
        return value

    @model_validator(mode="after")
    def _tls(self) -> StackSettings:
        if self.stack_secure:
            missing = [n for n in TLS_FILES if self.stack_tls_dir is None or not (self.stack_tls_dir / n).exists()]
            if missing:
                raise ValueError(f"LISTINGS_STACK_SECURE needs LISTINGS_STACK_TLS_DIR holding {', '.join(TLS_FILES)}")
        return self

    def tls(self, name: str) -> Path:
        assert self.stack_tls_dir is not None
        return self.stack_tls_dir / name

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis(self) -> str:
        return f"{'rediss' if self.stack_secure else 'redis'}://127.0.0.1:{self.redis_port}/0"

    @property
    def triton_grpc(self) -> str:
        return f"127.0.0.1:{self.triton_grpc_port}"

    @property
    def triton_http(self) -> str:
        return f"127.0.0.1:{self.triton_http_port}"

    def runtime(self, base: config.Settings | None = None) -> config.Settings:
        """The runtime settings (from the environment, or `base`) pointed at this stack."""
        base = base or config.load()
        kafka: dict = {"bootstrap": self.bootstrap_servers}
        redis: dict = {"url": self.redis}
        if self.stack_secure:
            kafka.update(security_protocol="SASL_SSL", ssl_cafile=self.tls("ca.pem"))
            redis.update(ca_file=self.tls("ca.pem"))
        return base.replace(
            kafka=kafka, redis=redis, triton={"url": self.triton_grpc}, worker={"state_dir": self.state_dir}
        )


def load() -> StackSettings:
    return config.read(StackSettings)
