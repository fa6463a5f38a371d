"""Structured logs: one JSON object per line on stderr."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import orjson


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            doc.update(extra)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc, default=str).decode()


LIBRARIES = ("aiokafka", "kafka", "faust", "mode")  # the loggers RepeatFilter thins out


class RepeatFilter(logging.Filter):
    """Of the Kafka and Faust libraries' records, at most one per logger and message template every `every_s`
    seconds; the next one that passes says how many it stood for (`suppressed`). aiokafka logs each failed
    reconnect and fetch, ~50 lines a second while a broker is down: the outage stays visible (and
    `listings_retries_total`, `/readyz` say it too) without burying every other line. Our own records pass as
    they are (one template, many events: "batch done")."""

    def __init__(self, every_s: float = 10.0, libraries: tuple[str, ...] = LIBRARIES) -> None:
        super().__init__()
        self.every_s = every_s
        self.libraries = libraries
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}  # (logger, template) -> (last passed, dropped)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.partition(".")[0] not in self.libraries:
            return True
        key = (record.name, str(record.msg))
        last, dropped = self._seen.get(key, (float("-inf"), 0))
        if record.created - last < self.every_s:
            self._seen[key] = (last, dropped + 1)
            return False
        if len(self._seen) > 1000:  # templates are few; this only bounds a pathological caller
            self._seen.clear()
        self._seen[key] = (record.created, 0)
        if dropped:
            record.fields = {**(getattr(record, "fields", None) or {}), "suppressed": dropped}
        return True


SLOW_STEP_LOGGER = "kafka.net.selector"


class SlowStepFilter(logging.Filter):
    """kafka-python 3 warns whenever one step of its I/O thread's loop takes over 0.1 s ("Task … ran for 0.374s
    (>0.100s threshold). It is blocking the event loop …"). The step's clock includes waiting for the GIL, so on a
    busy host — the demo fine-tunes beside its producer on two cores — it fires with nothing wrong, in the middle of
    the demo's screen, and a producer cannot raise the threshold (kafka-python refuses the option). Those records
    pass only where the logger is set to debug; a failed send still surfaces as its own error."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "blocking the event loop" not in str(record.msg):
            return True
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def quiet_slow_steps() -> None:
    """Install `SlowStepFilter` on kafka-python's I/O-loop logger (once)."""
    logger = logging.getLogger(SLOW_STEP_LOGGER)
    if not any(isinstance(f, SlowStepFilter) for f in logger.filters):
        logger.addFilter(SlowStepFilter())


def logging_config(level: str = "INFO", quiet: bool = False) -> dict[str, Any]:
    """A dictConfig for the worker (Faust's own loggers included). `quiet`: the Kafka client libraries say
    nothing (one-shot commands report a dependency problem in one line of their own)."""
    libraries = {"kafka": {"level": "CRITICAL"}, "aiokafka": {"level": "CRITICAL"}} if quiet else {}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "filters": {"repeats": {"()": RepeatFilter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
                "filters": ["repeats"],
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "aiokafka": {"level": "WARNING"},
            "faust": {"level": "WARNING"},
            "mode": {"level": "WARNING"},
            **libraries,
        },
    }


def setup(level: str = "INFO", quiet: bool = False) -> None:
    import logging.config

    logging.config.dictConfig(logging_config(level, quiet))
