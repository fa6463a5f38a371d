"""Redis from Debian's `redis-server`, loopback only, AOF persistence on."""

from __future__ import annotations

import shutil

from devtools.config import StackSettings
from devtools.stack.process import Managed, StackError, wait_until


def part(settings: StackSettings) -> Managed:
    return Managed(
        "redis",
        settings.state_dir / "run" / "redis.pid",
        settings.log_dir / "redis.log",
        marker="redis-server",
    )


def ready(settings: StackSettings) -> bool:
    import redis

    client = redis.Redis.from_url(settings.redis, socket_timeout=2)
    try:
        return bool(client.ping())
    finally:
        client.close()


def up(settings: StackSettings) -> str:
    p = part(settings)
    if p.running():
        return f"redis already running (pid {p.pid()}) on {settings.redis}"
    binary = shutil.which("redis-server")
    if binary is None:
        raise StackError("redis: redis-server is not installed (`make setup` installs Debian's redis-server)")
    data = settings.state_dir / "redis-data"
    data.mkdir(parents=True, exist_ok=True)
    p.start(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(settings.redis_port),
            "--protected-mode",
            "yes",
            "--dir",
            str(data),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--daemonize",
            "no",
        ]
    )
    wait_until(p, lambda: ready(settings), settings.startup_timeout)
    return f"redis started (pid {p.pid()}) on {settings.redis}"
