"""One settings object, read from environment variables with local defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _int(name: str, default: int) -> int:
    return int(_env(name, str(default)))


def _float(name: str, default: float) -> float:
    return float(_env(name, str(default)))


@dataclass(frozen=True)
class Settings:
    """Every knob of the worker and the local stack. Each field maps to `LISTINGS_<FIELD>`."""

    # where the local stack keeps its data, logs and pid files
    state_dir: Path = field(default_factory=lambda: Path(_env("LISTINGS_STATE_DIR", str(ROOT / ".stack"))))
    # build outputs shared by every checkout and stack: resolved Kafka jars, cached model artifacts
    cache_dir: Path = field(
        default_factory=lambda: Path(_env("LISTINGS_CACHE_DIR", str(Path.home() / ".cache" / "listing-classifier")))
    )
    model_repository: Path = field(
        default_factory=lambda: Path(_env("LISTINGS_MODEL_REPOSITORY", str(ROOT / "triton_models")))
    )
    # labelled product data the classifier trains on (flipkart_20k.csv, myntra_styles_44k.csv)
    data_dir: Path = field(
        default_factory=lambda: Path(_env("LISTINGS_DATA_DIR", str(ROOT.parent / "shared" / "data")))
    )
    # Kafka
    kafka_port: int = field(default_factory=lambda: _int("LISTINGS_KAFKA_PORT", 19092))
    kafka_controller_port: int = field(default_factory=lambda: _int("LISTINGS_KAFKA_CONTROLLER_PORT", 19093))
    kafka_heap: str = field(default_factory=lambda: _env("LISTINGS_KAFKA_HEAP", "512m"))
    kafka_bootstrap: str = field(default_factory=lambda: _env("LISTINGS_KAFKA_BOOTSTRAP", ""))
    input_partitions: int = field(default_factory=lambda: _int("LISTINGS_INPUT_PARTITIONS", 4))
    topic_input: str = field(default_factory=lambda: _env("LISTINGS_TOPIC_INPUT", "listings.new"))
    topic_classified: str = field(default_factory=lambda: _env("LISTINGS_TOPIC_CLASSIFIED", "listings.classified"))
    topic_tag_updates: str = field(default_factory=lambda: _env("LISTINGS_TOPIC_TAG_UPDATES", "listings.tag-updates"))
    topic_review: str = field(default_factory=lambda: _env("LISTINGS_TOPIC_REVIEW", "listings.review"))
    topic_dlq: str = field(default_factory=lambda: _env("LISTINGS_TOPIC_DLQ", "listings.dlq"))
    # Redis
    redis_port: int = field(default_factory=lambda: _int("LISTINGS_REDIS_PORT", 16379))
    redis_url: str = field(default_factory=lambda: _env("LISTINGS_REDIS_URL", ""))
    # Triton
    triton_http_port: int = field(default_factory=lambda: _int("LISTINGS_TRITON_HTTP_PORT", 18000))
    triton_grpc_port: int = field(default_factory=lambda: _int("LISTINGS_TRITON_GRPC_PORT", 18001))
    triton_metrics_port: int = field(default_factory=lambda: _int("LISTINGS_TRITON_METRICS_PORT", 18002))
    triton_url: str = field(default_factory=lambda: _env("LISTINGS_TRITON_URL", ""))
    model_name: str = field(default_factory=lambda: _env("LISTINGS_MODEL_NAME", "listing_classifier"))
    # the worker
    group_id: str = field(default_factory=lambda: _env("LISTINGS_GROUP_ID", "listing-classifier"))
    max_batch: int = field(default_factory=lambda: _int("LISTINGS_MAX_BATCH", 64))
    max_wait_ms: int = field(default_factory=lambda: _int("LISTINGS_MAX_WAIT_MS", 50))
    max_in_flight: int = field(default_factory=lambda: _int("LISTINGS_MAX_IN_FLIGHT", 4))
    review_threshold: float = field(default_factory=lambda: _float("LISTINGS_REVIEW_THRESHOLD", 0.5))
    triton_timeout_s: float = field(default_factory=lambda: _float("LISTINGS_TRITON_TIMEOUT_S", 30.0))
    retry_max_backoff_s: float = field(default_factory=lambda: _float("LISTINGS_RETRY_MAX_BACKOFF_S", 5.0))
    updates_stream: str = field(default_factory=lambda: _env("LISTINGS_UPDATES_STREAM", "listings:updates"))
    updates_maxlen: int = field(default_factory=lambda: _int("LISTINGS_UPDATES_MAXLEN", 100_000))
    metrics_port: int = field(default_factory=lambda: _int("LISTINGS_METRICS_PORT", 9108))
    # readiness wait for `stack up`, seconds
    startup_timeout: float = field(default_factory=lambda: _float("LISTINGS_STARTUP_TIMEOUT", 120.0))

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.kafka_port}"

    @property
    def redis(self) -> str:
        return self.redis_url or f"redis://127.0.0.1:{self.redis_port}/0"

    @property
    def triton_grpc(self) -> str:
        return self.triton_url or f"127.0.0.1:{self.triton_grpc_port}"

    @property
    def triton_http(self) -> str:
        return f"127.0.0.1:{self.triton_http_port}"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    def describe(self) -> dict[str, str]:
        return {f.name: str(getattr(self, f.name)) for f in fields(self)}


def load() -> Settings:
    return Settings()
