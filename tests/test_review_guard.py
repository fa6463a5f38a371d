"""The review page's request guard and argument checks, which answer before any dependency is asked (pure: the
app's start-up, which connects to Redis, Kafka and Triton, is left out; tests/test_review.py runs the real one)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from stream.config import ReviewSettings, Settings
from stream.review.app import host_name, make_app

PAGE = {"Content-Type": "application/json", "X-Requested-With": "listings-review"}


def answers(token: str | None, calls: list[tuple[str, str, dict[str, str]]]) -> list[int]:
    """The status of each (method, path, headers) call on an app without its dependencies."""
    settings = Settings(review=ReviewSettings(token=SecretStr(token) if token else None))
    app = make_app(settings)
    app.on_startup.clear()
    app.on_cleanup.clear()

    async def run() -> list[int]:
        async with TestClient(TestServer(app)) as client:
            out = []
            for method, path, headers in calls:
                body: dict[str, Any] = {"json": {}} if method == "POST" else {}
                out.append((await client.request(method, path, headers=headers, **body)).status)
            return out

    return asyncio.run(run())


def test_a_token_with_any_characters_is_checked_not_a_server_error() -> None:
    # compare_digest refuses str with non-ASCII characters: the API answered 500 to such a header, and to every
    # request when the configured token had one
    assert answers("t0ken-for-tests", [("GET", "/api/queue", {"X-Review-Token": "tökén-123"})]) == [401]
    assert answers("pässwörd-123", [("GET", "/api/queue", {}), ("GET", "/api/queue", {"X-Review-Token": "x"})]) == [
        401,
        401,
    ]


def test_without_a_token_only_a_loopback_host_is_served() -> None:
    """DNS rebinding: a page on evil.test re-pointed at 127.0.0.1 is same-origin with itself; its Host header is
    the tell."""
    got = answers(
        None,
        [
            ("GET", "/", {"Host": "evil.test:8088"}),
            ("GET", "/api/stats", {"Host": "evil.test:8088"}),
            ("POST", "/api/decision", {**PAGE, "Host": "evil.test:8088", "Origin": "http://evil.test:8088"}),
        ],
    )
    assert got == [403, 403, 403]
    assert answers(None, [("GET", "/", {"Host": "localhost:8088"}), ("GET", "/", {"Host": "[::1]:8088"})]) == [200, 200]
    assert [host_name(h) for h in ("127.0.0.1:8088", "[::1]:8088", "localhost", "evil.test:80")] == [
        "127.0.0.1",
        "::1",
        "localhost",
        "evil.test",
    ]


def test_queue_filters_are_checked() -> None:
    bad = ["limit=0", "limit=-3", "min_confidence=nan", "max_confidence=inf", "limit=x"]
    assert answers(None, [("GET", f"/api/queue?{q}", {}) for q in bad]) == [400] * len(bad)
    assert answers(None, [("GET", "/api/taxonomy?version=abc", {})]) == [400]
