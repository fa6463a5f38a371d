"""Redis from Debian's `redis-server`, loopback only, AOF persistence on."""

from __future__ import annotations

import shutil

from devtools.config import StackSettings
from devtools.stack.process import Managed, StackError, ensure_ports_free, wait_until


def part(settings: StackSettings) -> Managed:
    return Managed.of("redis", settings.state_dir, settings.log_dir, marker="redis-server")


def ready(settings: StackSettings) -> bool:
    from stream import connections

    client = connections.redis_sync(settings.runtime().redis, socket_timeout=2)
    try:
        return bool(client.ping())
    finally:
        client.close()


def _secure_args(settings: StackSettings) -> list[str]:
    """TLS on the port (no plain port), and one ACL user: the runtime's LISTINGS_REDIS_USERNAME/_PASSWORD."""
    r = settings.runtime().redis
    if not r.username or r.password is None:
        raise StackError("redis: the secure stack needs LISTINGS_REDIS_USERNAME and LISTINGS_REDIS_PASSWORD")
    acl = settings.state_dir / "redis-users.acl"
    acl.write_text(f"user default off\nuser {r.username} on >{r.password.get_secret_value()} ~* &* +@all\n")
    acl.chmod(0o600)
    return [
        "--port", "0",
        "--tls-port", str(settings.redis_port),
        "--tls-cert-file", str(settings.tls("server.pem")),
        "--tls-key-file", str(settings.tls("server.key")),
        "--tls-ca-cert-file", str(settings.tls("ca.pem")),
        "--tls-auth-clients", "no",
        "--aclfile", str(acl),
    ]  # fmt: skip


def up(settings: StackSettings) -> str:
    p = part(settings)
    if p.running():
        return f"redis already running (pid {p.pid()}) on {settings.redis}"
    ensure_ports_free("redis", {"redis_port": settings.redis_port})
    binary = shutil.which("redis-server")
    if binary is None:
        raise StackError("redis: redis-server is not installed (`make setup` installs Debian's redis-server)")
    data = settings.state_dir / "redis-data"
    data.mkdir(parents=True, exist_ok=True)
    listen = _secure_args(settings) if settings.stack_secure else ["--port", str(settings.redis_port)]
    p.start(
        [
            binary,
            "--bind",
            "127.0.0.1",
            *listen,
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
            # an AOF rewrite forks and rewrites the whole dataset: with Redis' 64 MB floor the bench's writes set one
            # off every 1-2 minutes, a second of CPU that showed up as a live-latency spike on the shared 2 cores
            # (a (d') spike at 05:19:13-15 on 2026-12-04 matched a rewrite to the second); the local stack rewrites
            # once the file passes 512 MB instead
            "--auto-aof-rewrite-min-size",
            "512mb",
            "--daemonize",
            "no",
        ]
    )
    wait_until(p, lambda: ready(settings), settings.startup_timeout)
    return f"redis started (pid {p.pid()}) on {settings.redis}"
