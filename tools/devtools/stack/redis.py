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
            # no automatic AOF rewrite while the stack runs: a rewrite forks and rewrites the whole dataset, and its
            # stall of Redis' writes set live's p99 (a (d') spike on 2026-12-04 matched a rewrite to the second;
            # on 12-06 the judged (d') round of three bench runs had a fork, x1.21-2.15, and a run with rewrites
            # off met x1.3 in 3 of 3 rounds). The file is compacted at start-up instead, while nothing writes.
            "--auto-aof-rewrite-percentage",
            "0",
            "--daemonize",
            "no",
        ]
    )
    wait_until(p, lambda: ready(settings), settings.startup_timeout)
    _compact_aof(settings)
    return f"redis started (pid {p.pid()}) on {settings.redis}"


COMPACT_FROM_BYTES = 64 * 1024 * 1024  # an append-only file this big, and twice its last rewrite, is rewritten at start


def _compact_aof(settings: StackSettings) -> None:
    """Rewrite the append-only file once at start-up when it has grown (rewrites are off while the stack runs: see
    `up`), so it does not grow without bound over many sessions. In the background: Redis answers meanwhile."""
    from stream import connections

    client = connections.redis_sync(settings.runtime().redis, socket_timeout=5)
    try:
        info = client.info("persistence")
        size, base = int(info.get("aof_current_size", 0)), int(info.get("aof_base_size", 0))
        if size >= COMPACT_FROM_BYTES and size >= 2 * base:
            client.bgrewriteaof()
    finally:
        client.close()
