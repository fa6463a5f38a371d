"""`listings stack up | down | status`: the three parts together, in dependency order."""

from __future__ import annotations

from collections.abc import Callable

from devtools.config import StackSettings
from devtools.stack import kafka, redis, triton
from devtools.stack.process import Managed

PARTS: dict[
    str, tuple[Callable[[StackSettings], Managed], Callable[[StackSettings], str], Callable[[StackSettings], bool]]
] = {
    "redis": (redis.part, redis.up, redis.ready),
    "kafka": (kafka.part, kafka.up, kafka.ready),
    "triton": (triton.part, triton.up, triton.ready),
}


def up(settings: StackSettings, only: list[str] | None = None, echo: Callable[[str], None] = print) -> None:
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    for name, (_, start, _) in PARTS.items():
        if only and name not in only:
            continue
        echo(start(settings))


def down(settings: StackSettings, only: list[str] | None = None, echo: Callable[[str], None] = print) -> None:
    for name, (part, _, _) in reversed(list(PARTS.items())):
        if only and name not in only:
            continue
        echo(f"{name} stopped" if part(settings).stop() else f"{name} was not running")


def status(settings: StackSettings) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    for name, (part, _, ready) in PARTS.items():
        p = part(settings)
        pid = p.pid()
        healthy = False
        if pid is not None:
            try:
                healthy = ready(settings)
            except Exception:  # noqa: BLE001 - a failed probe is "not healthy"
                healthy = False
        out[name] = {"pid": pid, "running": pid is not None, "ready": healthy, "log": str(p.log_file)}
    return out
