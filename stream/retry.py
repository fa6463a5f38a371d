"""The one retry mechanism of the project (tenacity underneath).

* `retry_forever`: a down dependency stalls the pipeline (back-pressure) instead of losing or skipping
  events: the call is retried with capped exponential backoff and jitter until it succeeds.
* `poll`: wait until a condition holds, or fail with `TimeoutError` naming what was awaited; used by
  one-shot commands, the local stack, the demo, the benchmark and the tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    retry_if_result,
    stop_after_delay,
    wait_exponential_jitter,
    wait_fixed,
)

T = TypeVar("T")
log = logging.getLogger("listings.retry")


async def retry_forever(
    what: str,
    op: Callable[[], Awaitable[T]],
    *,
    retryable: tuple[type[BaseException], ...] | Callable[[BaseException], bool],
    max_backoff: float = 5.0,
    first_backoff: float = 0.1,
    on_retry: Callable[[str, BaseException], None] | None = None,
) -> T:
    """Run `op` until it succeeds; the `retryable` errors (types, or a predicate) are retried with capped
    exponential backoff; any other error is raised at once."""

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        if exc is None:
            return
        if on_retry is not None:
            on_retry(what, exc)
        n = state.attempt_number
        level = logging.WARNING if n in (1, 10) or n % 50 == 0 else logging.DEBUG
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        log.log(level, "%s failed (attempt %d), retrying in %.2fs: %s", what, n, delay, exc)

    async def call() -> T:  # tenacity awaits only what it recognises as a coroutine function
        return await op()

    retrying = AsyncRetrying(
        retry=retry_if_exception(retryable) if callable(retryable) else retry_if_exception_type(retryable),
        wait=wait_exponential_jitter(multiplier=first_backoff, max=max_backoff, jitter=first_backoff),
        before_sleep=before_sleep,
        reraise=True,
    )
    return await retrying(call)


def poll(
    cond: Callable[[], Any],
    timeout: float,
    what: str,
    *,
    interval: float = 0.5,
    tolerate: tuple[type[BaseException], ...] = (),
    detail: Callable[[], str] = lambda: "",
) -> Any:
    """Call `cond` every `interval` seconds until it returns something truthy (returned), for at most
    `timeout` seconds; exceptions in `tolerate` count as "not yet". Raises `TimeoutError`."""
    t0 = time.monotonic()

    def give_up(state: RetryCallState) -> Any:
        outcome = state.outcome
        last = ""
        if outcome is not None and outcome.failed:
            last = f" (last error: {type(outcome.exception()).__name__}: {outcome.exception()})"
        extra = detail()
        raise TimeoutError(
            f"timed out after {time.monotonic() - t0:.0f}s waiting for {what}{last}" + (f"\n{extra}" if extra else "")
        )

    retrying = Retrying(
        retry=retry_if_result(lambda ok: not ok) | retry_if_exception_type(tolerate),
        wait=wait_fixed(interval),
        stop=stop_after_delay(timeout),
        retry_error_callback=give_up,
    )
    return retrying(cond)
