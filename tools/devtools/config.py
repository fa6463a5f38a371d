"""Settings of the embedded local stack: its state folder and loopback ports (plus the paths training uses:
the model repository Triton serves, the caches)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from stream import config
from training.config import REPO, TrainingSettings


class StackSettings(TrainingSettings):
    state_dir: Path = Field(REPO / ".stack", description="data, logs and pid files of the local stack")
    kafka_port: int = Field(19092, ge=1, le=65535)
    kafka_controller_port: int = Field(19093, ge=1, le=65535)
    kafka_heap: str = Field("512m", pattern=r"^\d+[kKmMgG]$")
    redis_port: int = Field(16379, ge=1, le=65535)
    triton_http_port: int = Field(18000, ge=1, le=65535)
    triton_grpc_port: int = Field(18001, ge=1, le=65535)
    triton_metrics_port: int = Field(18002, ge=1, le=65535)
    startup_timeout: float = Field(120.0, gt=0, description="seconds `stack up` waits for each part")

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def triton_grpc(self) -> str:
        return f"127.0.0.1:{self.triton_grpc_port}"

    @property
    def triton_http(self) -> str:
        return f"127.0.0.1:{self.triton_http_port}"

    def runtime(self, base: config.Settings | None = None) -> config.Settings:
        """The runtime settings (from the environment, or `base`) pointed at this stack."""
        base = base or config.load()
        return base.replace(
            kafka={"bootstrap": self.bootstrap_servers},
            redis={"url": self.redis},
            triton={"url": self.triton_grpc},
            worker={"state_dir": self.state_dir},
        )


def load() -> StackSettings:
    return config.read(StackSettings)
