"""Which Triton model a backfill's requests go to (TritonClassifier's serve_from): the choice logic alone, on a
stand-in client; the real-stack behaviour is tests/test_backfill.py's."""

from __future__ import annotations

import asyncio
import logging

import pytest

from stream.classify.triton_client import TritonClassifier


class _SlowTriton:
    """A Triton client stand-in that answers readiness slowly and knows no background copy."""

    def __init__(self) -> None:
        self.asked = 0
        self.timeouts: list[float | None] = []

    async def is_model_ready(self, name: str, version: str = "", client_timeout: float | None = None) -> bool:
        self.asked += 1
        self.timeouts.append(client_timeout)
        await asyncio.sleep(0.05)
        return False


def test_concurrent_requests_ask_for_the_copy_once_and_warn_once(caplog: pytest.LogCaptureFixture) -> None:
    classifier = TritonClassifier("127.0.0.1:1", "listing_classifier", serve_from="no_such_model")
    fake = _SlowTriton()

    async def four_requests() -> list[str]:
        classifier._choosing = asyncio.Lock()
        return list(await asyncio.gather(*(classifier._target(fake, "") for _ in range(4))))

    with caplog.at_level(logging.WARNING, logger="listings.triton"):
        targets = asyncio.run(four_requests())
    assert targets == ["listing_classifier"] * 4
    assert fake.asked == 1
    assert fake.timeouts == [classifier.timeout_s]  # a blackholed Triton cannot hold the lock for ever
    assert len([r for r in caplog.records if "does not serve no_such_model" in r.getMessage()]) == 1
