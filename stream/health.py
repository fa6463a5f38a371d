"""Health of a worker, and the HTTP endpoint that serves it with the metrics.

`HEALTH` is updated from the worker's event loop (pipeline progress, dependency outcomes and probes) and read
by the HTTP thread:

* `/healthz` (liveness): the event loop is not stuck (it beats every second), and the pipeline is not holding
  work without progress while nothing is being retried (an outage that is being retried is not a hang: it makes
  the worker unready, not dead, so a supervisor does not restart it in a loop while Redis is full).
* `/readyz` (readiness): alive, the consumer is running (partitions assigned or waiting for an assignment), and
  Kafka, Redis and Triton answered the last probe and the last real call.
* `/metrics`: Prometheus.

Each answers 200 or 503 with a small JSON body saying why.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from stream import metrics

log = logging.getLogger("listings.health")
DEPENDENCIES = ("kafka", "redis", "triton")


class Health:
    def __init__(self, stall_timeout_s: float = 120.0, loop_timeout_s: float = 30.0) -> None:
        self.stall_timeout_s = stall_timeout_s
        self.loop_timeout_s = loop_timeout_s
        self._lock = threading.Lock()
        now = time.monotonic()
        self.started = False
        # set while the worker waits for Kafka and Redis before it starts: alive (it is retrying), not ready
        self.waiting_for: str | None = None
        self.loop_beat = now
        self.last_progress = now
        self.last_retry = 0.0
        self.pending = 0
        self.assignment = "not started"
        # two views of each dependency: the last probe, and the last real call (a call failing with a reply the
        # probe cannot see, e.g. Redis OOM, keeps it unready until a call succeeds)
        self.probes: dict[str, tuple[bool | None, str]] = {d: (None, "not probed yet") for d in DEPENDENCIES}
        self.calls: dict[str, tuple[bool, str]] = {d: (True, "no call failed") for d in DEPENDENCIES}

    # -------------------------------------------------------------- updates (event loop)

    def start(self) -> None:
        self.started = True
        self.beat()

    def beat(self) -> None:
        self.loop_beat = time.monotonic()

    def waiting(self, reason: str | None) -> None:
        """The worker is waiting for its dependencies before it starts (`reason`), or no longer (None: the event
        loop's clock starts now, however long the wait was)."""
        self.waiting_for = reason
        self.beat()

    def work(self, pending: int) -> None:
        """Batches between consumption and their sinks' acknowledgement."""
        with self._lock:
            if self.pending == 0 and pending > 0:
                self.last_progress = time.monotonic()  # the clock starts when work arrives
            self.pending = pending

    def progress(self) -> None:
        self.last_progress = time.monotonic()

    def retried(self, dependency: str, exc: BaseException) -> None:
        self.last_retry = time.monotonic()
        with self._lock:
            self.calls[dependency] = (False, f"{type(exc).__name__}: {exc}"[:300])

    def call_ok(self, dependency: str) -> None:
        if not self.calls[dependency][0]:
            with self._lock:
                self.calls[dependency] = (True, "no call failed")

    def probed(self, dependency: str, ok: bool, detail: str = "") -> None:
        with self._lock:
            self.probes[dependency] = (ok, detail or ("ok" if ok else "not ready"))

    def failing(self) -> list[str]:
        """The dependencies whose last probe or call failed, in DEPENDENCIES order."""
        with self._lock:
            return [d for d in DEPENDENCIES if not (self.probes[d][0] and self.calls[d][0])]

    # -------------------------------------------------------------- answers (HTTP thread)

    def live(self) -> tuple[bool, dict[str, Any]]:
        if self.waiting_for is not None:
            return True, {"waiting_for": self.waiting_for, "pending_batches": 0}
        now = time.monotonic()
        loop_age = now - self.loop_beat
        stalled = (
            self.pending > 0
            and now - self.last_progress > self.stall_timeout_s
            and now - self.last_retry > self.stall_timeout_s
        )
        ok = loop_age < self.loop_timeout_s and not stalled
        why = {"event_loop_seconds_since_beat": round(loop_age, 1), "pending_batches": self.pending}
        if stalled:
            why["stalled_seconds"] = round(now - self.last_progress, 1)
        return ok, why

    def ready(self) -> tuple[bool, dict[str, Any]]:
        alive, why = self.live()
        with self._lock:
            deps = {
                d: {
                    "ok": bool(self.probes[d][0]) and self.calls[d][0],
                    "probe": self.probes[d][1],
                    "calls": self.calls[d][1],
                }
                for d in DEPENDENCIES
            }
        ok = alive and self.started and all(v["ok"] for v in deps.values())
        return ok, {"alive": alive, "consumer": self.assignment, "dependencies": deps, **why}


HEALTH = Health()


def on_retry(dependency: str) -> Callable[[str, BaseException], None]:
    """The retry hook of a dependency's calls: counted in listings_retries_total, and the dependency marked
    failing (unready) until its next success."""

    def hook(_what: str, exc: BaseException) -> None:
        metrics.RETRIES.labels(dependency).inc()
        HEALTH.retried(dependency, exc)

    return hook


def succeeded(dependency: str) -> None:
    HEALTH.call_ok(dependency)


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, generate_latest(), CONTENT_TYPE_LATEST)
        elif path in ("/healthz", "/readyz"):
            ok, why = HEALTH.live() if path == "/healthz" else HEALTH.ready()
            self._send(200 if ok else 503, orjson.dumps({"ok": ok, **why}), "application/json")
        else:
            self._send(404, b"not found\n", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve(host: str, port: int) -> ThreadingHTTPServer | None:
    """Serve /metrics, /healthz and /readyz on host:port in a daemon thread (port 0 disables)."""
    if port <= 0:
        return None
    try:
        server = ThreadingHTTPServer((host, port), _Handler)
    except OSError as exc:
        log.warning("port %d unavailable (%s): no metrics or health endpoint in this process", port, exc)
        return None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="listings-http", daemon=True).start()
    log.info("metrics and health on http://%s:%d/{metrics,healthz,readyz}", host, port)
    return server
