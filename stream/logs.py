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


def logging_config(level: str = "INFO", quiet: bool = False) -> dict[str, Any]:
    """A dictConfig for the worker (Faust's own loggers included). `quiet`: the Kafka client libraries say
    nothing (one-shot commands report a dependency problem in one line of their own)."""
    libraries = {"kafka": {"level": "CRITICAL"}, "aiokafka": {"level": "CRITICAL"}} if quiet else {}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}},
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
