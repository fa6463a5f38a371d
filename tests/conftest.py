"""Shared fixtures. Tests marked `stack` run against a real local stack started from nothing
in a temporary state folder on test-only ports, and torn down at the end even when tests fail."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# test ports, away from a demo stack running beside the tests
TEST_ENV = {
    "LISTINGS_KAFKA_PORT": "29092",
    "LISTINGS_KAFKA_CONTROLLER_PORT": "29093",
    "LISTINGS_REDIS_PORT": "26379",
    "LISTINGS_TRITON_HTTP_PORT": "28000",
    "LISTINGS_TRITON_GRPC_PORT": "28001",
    "LISTINGS_TRITON_METRICS_PORT": "28002",
}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", help="run the long fault suite")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="long run: use `make test-long` (pytest --long)")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    state = tmp_path_factory.mktemp("stack")
    env = {**TEST_ENV, "LISTINGS_STATE_DIR": str(state)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def stack(stack_env: dict[str, str]) -> Iterator[object]:
    """The whole local stack, up from an empty state folder; always torn down."""
    from stream import settings
    from stream.stack import control

    s = settings.load()
    assert not any(Path(s.state_dir).iterdir()), "the test stack must start from nothing"
    try:
        control.up(s)
        yield s
    finally:
        control.down(s)
