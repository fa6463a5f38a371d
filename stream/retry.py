"""Retry with exponential backoff and jitter, forever: a down dependency stalls the pipeline
(back-pressure) instead of losing or skipping events."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("listings.retry")


class Permanent(Exception):
    """An error that retrying cannot fix (bad input, not a down dependency)."""


async def retry_forever(
    what: str,
    op: Callable[[], Awaitable[T]],
    *,
    retryable: tuple[type[BaseException], ...],
    max_backoff: float = 5.0,
    first_backoff: float = 0.1,
    on_retry: Callable[[str, BaseException], None] | None = None,
) -> T:
    """Run `op` until it succeeds; retry the `retryable` errors with capped exponential backoff."""
    delay = first_backoff
    attempt = 0
    while True:
        try:
            return await op()
        except retryable as exc:
            attempt += 1
            if on_retry is not None:
                on_retry(what, exc)
            level = logging.WARNING if attempt in (1, 10) or attempt % 50 == 0 else logging.DEBUG
            log.log(level, "%s failed (attempt %d), retrying in %.2fs: %s", what, attempt, delay, exc)
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, max_backoff)
