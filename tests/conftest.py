"""Shared fixtures. Tests marked `stack` run against a real local stack started from nothing in a temporary
state folder on test-only ports, and torn down at the end even when tests fail.

`local` is the stack's own settings (ports, state folder, model repository); `stack` is the runtime
settings pointed at it (what a worker started by a test reads from its environment)."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

PORT_VARS = [
    "LISTINGS_KAFKA_PORT",
    "LISTINGS_KAFKA_CONTROLLER_PORT",
    "LISTINGS_REDIS_PORT",
    "LISTINGS_TRITON_HTTP_PORT",
    "LISTINGS_TRITON_GRPC_PORT",
    "LISTINGS_TRITON_METRICS_PORT",
]


def free_ports(n: int) -> list[int]:
    """Ports free on loopback now, so a test stack never collides with a demo stack or another test run."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", help="the fault suite's long scenarios (more events, 30 s outages)")


def make_model_repository(dest: Path) -> Path:
    """A copy of the project's `triton_models/` without trained versions; `ensure_model` then puts one
    quick-trained classifier version in it (trained once, then taken from the model cache)."""
    from training.config import MODEL_NAME, REPO

    src = REPO / "triton_models"

    def ignore(folder: str, names: list[str]) -> list[str]:
        in_classifier = Path(folder).resolve() == (src / MODEL_NAME).resolve()
        # the background copy is generated (`stack up` mirrors the versions the test repository gets)
        generated = Path(folder).resolve() == src.resolve()
        return [
            n
            for n in names
            if n == "__pycache__" or (in_classifier and n.isdigit()) or (generated and n.endswith("_background"))
        ]

    shutil.copytree(src, dest, ignore=ignore)
    return dest


@pytest.fixture(scope="session")
def stack_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    from devtools import config as stack_config

    state = tmp_path_factory.mktemp("stack")
    env = {**dict(zip(PORT_VARS, map(str, free_ports(len(PORT_VARS))), strict=True)), "LISTINGS_STATE_DIR": str(state)}
    repo = make_model_repository(tmp_path_factory.mktemp("models") / "triton_models")
    env["LISTINGS_MODEL_REPOSITORY"] = str(repo)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    local = stack_config.load()
    # the runtime's endpoints: every client (and every worker a test starts) talks to this stack
    client_env = {
        "LISTINGS_KAFKA_BOOTSTRAP": local.bootstrap_servers,
        "LISTINGS_REDIS_URL": local.redis,
        "LISTINGS_TRITON_URL": local.triton_grpc,
    }
    old.update({k: os.environ.get(k) for k in client_env})
    os.environ.update(client_env)
    from training.release import ensure_model

    try:
        ensure_model(local, quick=True)
        yield env
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def local(stack_env: dict[str, str]) -> Iterator[object]:
    """The whole local stack, up from an empty state folder; always torn down. Yields its StackSettings."""
    from devtools import config as stack_config
    from devtools.stack import control, triton

    s = stack_config.load()
    assert not any(Path(s.state_dir).iterdir()), "the test stack must start from nothing"
    try:
        control.up(s)
        yield s
    finally:
        TRITON_RESTARTS.extend(triton.restarts(s))
        control.down(s)


# Triton's supervisor restart lines from the test stack's log (one is test_stack's deliberate crash): shown at the
# end of the run, so a crash the suite recovered from is never silent
TRITON_RESTARTS: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TRITON_RESTARTS:
        terminalreporter.section("Triton restarted by its supervisor")
        for line in TRITON_RESTARTS:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def stack(local) -> object:
    """The runtime settings pointed at the test stack."""
    from stream import config

    return local.runtime(config.load())
