"""Which model version is live: an explicit decision shared by every worker, kept in Redis.

`model:live:{model}` is a hash: `version` (the live one), `history` (JSON list of the versions promoted before,
newest last, for `--rollback`), `promoted_at`, `by`. `listings promote N` checks that Triton serves N before
recording it; every worker reads the record every couple of seconds (`LiveVersion`) and sends its next requests
to that version — no restart. Without a record (a fresh install), workers use the newest version Triton serves.
Every output already names the version that served it.
"""

from __future__ import annotations

import getpass
import json
import time
from dataclasses import dataclass, replace
from typing import Any

import orjson

from stream import connections
from stream.config import Settings
from stream.timefmt import iso


def live_key(model: str) -> str:
    return f"model:live:{model}"


class UnknownVersion(ValueError):
    """A version Triton does not serve."""


@dataclass(frozen=True)
class Live:
    version: str  # "" = no promotion recorded: Triton's newest
    history: list[str]
    promoted_at: str = ""
    by: str = ""
    replaced: str = ""  # from promote(): the version served before it (not stored; without a record, the newest
    # served); the same version when unchanged


def read_live(r: Any, model: str) -> Live:
    h = r.hgetall(live_key(model))
    h = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v) for k, v in h.items()}
    return Live(h.get("version", ""), json.loads(h.get("history", "[]")), h.get("promoted_at", ""), h.get("by", ""))


def served_versions(settings: Settings) -> dict[str, str]:
    """Version -> state (READY, UNAVAILABLE, ...) of every version Triton knows for the model."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(settings.triton.url)
    try:
        index = client.get_model_repository_index(as_json=True).get("models", [])
        out = {
            m.get("version", ""): m.get("state", "")
            for m in index
            if m.get("name") == settings.triton.model_name and m.get("version")
        }
        try:
            meta = client.get_model_metadata(settings.triton.model_name, as_json=True)
        except InferenceServerException as exc:
            if str(exc.status()) != "StatusCode.NOT_FOUND":
                raise
            meta = {}  # Triton is up but does not know the model (or serves no version of it): none is served
        for v in meta.get("versions", []):
            out[v] = "READY" if client.is_model_ready(settings.triton.model_name, v) else out.get(v, "UNAVAILABLE")
        return dict(sorted(out.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else 0))
    finally:
        client.close()


def newest_ready(served: dict[str, str]) -> str:
    """The newest READY version of `served_versions()` ("" when none): what workers use while no promotion is
    recorded."""
    return max((v for v, state in served.items() if state == "READY"), key=int, default="")


def unserved(settings: Settings, version: str) -> str:
    """Why Triton cannot take requests for `version` of the model, naming the versions it can; "" when READY."""
    served = served_versions(settings)
    if served.get(version) == "READY":
        return ""
    ready = ", ".join(v for v, state in served.items() if state == "READY") or "none"
    return f"version {version} of {settings.triton.model_name} is not served by Triton (ready versions: {ready})"


def promote(settings: Settings, version: str | None, rollback: bool = False, by: str | None = None) -> Live:
    """Make `version` live (it must be READY in Triton), or return to the previous one with `rollback`. The record
    is changed with a compare-and-set (WATCH): two promotions, or a promotion and a rollback, at the same time
    cannot lose one another's history or silently undo each other — the later one re-reads and re-decides.
    Promoting the version already live changes nothing (its history would hold it twice)."""
    import redis

    model = settings.triton.model_name
    r = connections.redis_sync(settings.redis)
    try:
        for _ in range(PROMOTE_ATTEMPTS):
            with r.pipeline() as pipe:
                try:
                    pipe.watch(live_key(model))
                    current = read_live(pipe, model)
                    live = _next_live(settings, current, version, rollback, by)
                    if live is None:
                        return replace(current, replaced=current.version)
                    pipe.multi()
                    pipe.hset(
                        live_key(model),
                        mapping={
                            "version": live.version,
                            "history": json.dumps(live.history),
                            "promoted_at": live.promoted_at,
                            "by": live.by,
                        },
                    )
                    pipe.execute()
                    return live
                except redis.WatchError:
                    continue  # the record changed meanwhile (another promotion): decide again on the new one
        raise UnknownVersion(f"the live record of {model} kept changing during {PROMOTE_ATTEMPTS} attempts: try again")
    finally:
        r.close()


PROMOTE_ATTEMPTS = 10


def _next_live(settings: Settings, current: Live, version: str | None, rollback: bool, by: str | None) -> Live | None:
    """The record after this promotion or rollback (None when nothing changes)."""
    history = list(current.history)
    replaced = current.version
    if rollback:
        if not history:
            raise UnknownVersion("nothing to roll back to: no earlier promotion is recorded")
        version = history.pop()
    else:
        assert version is not None
        if str(version) == current.version:
            why = unserved(settings, str(version))
            if why:  # "already live" would hide that the workers are holding their events
                raise UnknownVersion(
                    f"{why}; it is the live version: workers hold their events until Triton serves it again "
                    "(load it) or a served version is promoted"
                )
            return None
        # without a record, workers served the newest
        before = current.version or newest_ready(served_versions(settings))
        if before and before != str(version):
            history.append(before)
            replaced = before
    why = unserved(settings, str(version))
    if why:
        raise UnknownVersion(why)
    return Live(str(version), history[-20:], iso(time.time() * 1000), by or current_user(), replaced=replaced)


def current_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # a container whose uid has no name
        return "unknown"


class LiveVersion:
    """The live version as a worker sees it: re-read from Redis by `refresh()` (a timer calls it)."""

    def __init__(self, settings: Settings, pinned: str = "") -> None:
        self.settings = settings
        self.pinned = pinned  # a backfill's --model-version wins over the live record
        self.current = pinned
        self._redis: Any = None

    async def refresh(self) -> str:
        if self.pinned:
            return self.pinned
        if self._redis is None:
            self._redis = connections.redis_async(self.settings.redis)
        raw = await self._redis.hget(live_key(self.settings.triton.model_name), "version")
        self.current = raw.decode() if raw else ""
        return self.current

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None


def repository_versions(repository: Any, model: str) -> list[str]:
    """The numbered version folders of a model in a repository folder (Triton may serve fewer of them)."""
    from pathlib import Path

    folder = Path(repository) / model
    if not folder.is_dir():
        return []
    return sorted((p.name for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), key=int)


def training_metrics(repository: Any, model: str, version: str) -> dict[str, Any] | None:
    """A version's headline training metrics from the model repository's metrics.json, when readable."""
    from pathlib import Path

    path = Path(repository) / model / version / "metrics.json"
    try:
        m = orjson.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    keys = ("accuracy_leaf", "weighted_f1_leaf", "mean_level_weighted_f1", "tag_micro_f1")
    return {
        "model": {k: m.get("model", {}).get(k) for k in keys},
        "baseline": {k: m.get("baseline", {}).get(k) for k in keys},
        "engine": m.get("engines", {}).get("default"),
    }
