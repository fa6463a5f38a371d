"""The pipeline's timestamps: ISO-8601 UTC with milliseconds and a `Z` (`2026-11-28T12:00:00.123Z`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso(ms: float) -> str:
    """Epoch milliseconds as the pipeline's ISO-8601 text (whole milliseconds, exact to year 9999: a float of
    seconds loses the last millisecond after about 2100)."""
    return (EPOCH + timedelta(milliseconds=int(ms))).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_iso() -> str:
    return iso(datetime.now(UTC).timestamp() * 1000)


def iso_ms(text: str) -> float:
    """Epoch milliseconds of an ISO-8601 time with a zone (`Z` or an offset)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000
