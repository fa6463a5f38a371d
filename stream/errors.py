"""One-line errors for one-shot commands: which part could not be reached, where, and what to do.

The long-running worker never exits for a down dependency (it retries with back-pressure); a one-shot
command (backfill, produce, models, promote, ...) gives up after a bounded wait and says why."""

from __future__ import annotations

from stream.config import Settings

HINTS = {
    "Kafka": "start it (`listings stack up kafka`) or set LISTINGS_KAFKA_BOOTSTRAP",
    "Redis": "start it (`listings stack up redis`) or set LISTINGS_REDIS_URL",
    "Triton": "start it (`listings stack up triton`) or set LISTINGS_TRITON_URL",
}


class Unreachable(RuntimeError):
    """A dependency could not be reached (or refused our credentials)."""

    def __init__(self, part: str, target: str, detail: str, hint: str | None = None) -> None:
        self.part, self.target, self.detail = part, target, detail
        self.hint = hint if hint is not None else HINTS.get(part, "")
        super().__init__(f"{part} at {target} is not reachable ({detail})" + (f": {self.hint}" if self.hint else ""))


def is_auth_failure(exc: BaseException) -> bool:
    """Credentials refused (Kafka SASL, Redis ACL): a setting to fix, never retried."""
    name = type(exc).__name__
    text = str(exc)
    return (
        "Authentication" in name
        or "Authorization" in name
        or "NoPermission" in name
        or name.startswith("Sasl")
        or text.startswith(("NOAUTH", "WRONGPASS", "NOPERM"))
    )


def classify(exc: BaseException, settings: Settings) -> Unreachable | None:
    """The `Unreachable` that a client library's exception stands for, or None when it is something else."""
    if isinstance(exc, Unreachable):
        return exc
    module = type(exc).__module__ or ""
    name = type(exc).__name__
    detail = f"{name}: {exc}".strip().rstrip(":")[:300]
    if module.startswith(("kafka.", "aiokafka")):
        auth = "Authentication" in name or "SASL" in name.upper()
        hint = "check LISTINGS_KAFKA_SASL_USERNAME / _SASL_PASSWORD" if auth else None
        return Unreachable("Kafka", settings.kafka.bootstrap, detail, hint)
    if module.startswith("redis"):
        auth = "Authentication" in name or "NOAUTH" in str(exc) or "WRONGPASS" in str(exc)
        hint = "check LISTINGS_REDIS_USERNAME / LISTINGS_REDIS_PASSWORD" if auth else None
        return Unreachable("Redis", settings.redis.url.split("@")[-1], detail, hint)
    if module.startswith("tritonclient"):
        return Unreachable("Triton", settings.triton.url, detail)
    return None
