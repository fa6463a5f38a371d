"""Async gRPC client of the Triton `listing_classifier` model, with retries and priorities.

One request per micro-batch; several requests may be in flight and Triton's dynamic batcher merges
them. Live traffic uses priority level 1 (highest), backfill level 2. A backfill or shadow client sends to
`serve_from`, the live model's background copy (the same versions on instances of their own at a low CPU
priority; tools/training/background.py), and falls back to the live model when Triton does not serve the copy.
Either way its results name the live model."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from stream import health, metrics
from stream.retry import retry_forever

LIVE_PRIORITY = 1
BACKFILL_PRIORITY = 2
RECHECK_S = 30.0  # how long a fallback to the live model holds before the background copy is asked for again
log = logging.getLogger("listings.triton")
NOT_AT_READY = "is not at ready state"  # Triton's answer for a version that is loading, unloading or unloaded
RETRYABLE_CODES = {"StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.RESOURCE_EXHAUSTED"}


class TritonUnavailable(Exception):
    """Triton could not be reached or timed out: retried."""


class ModelFailing(TritonUnavailable):
    """The model fails requests (not INVALID_ARG) and fails a known-good title too: the model's problem (a
    crashed backend stub, memory), retried like an outage — never the batch's events' fault."""


CANARY_TITLE = "Silicone back cover for mobile phone"  # any title a working model classifies


class VersionNotServed(TritonUnavailable):
    """Triton answers, and does not serve this model version (not loaded, or unloaded as newer ones came):
    retried like an outage where the version is the one requests must go to."""


@dataclass(frozen=True, slots=True)
class Classification:
    category: dict[str, Any]  # id, name, path
    confidence: float
    alternatives: list[dict[str, Any]]
    tags: list[dict[str, Any]]
    depth: int = 0  # the deepest level of `category.path` the model is confident in
    level_confidence: tuple[float, ...] = ()  # probability of each prefix of the path


@dataclass(frozen=True, slots=True)
class BatchResult:
    model_name: str
    model_version: str
    results: list[Classification]
    total_s: float = 0.0  # the request as the client saw it (retries included)
    compute_s: float = 0.0  # the model's execute() time for the merged batch that served it (TIMING output)


def text_inputs(client_module: Any, **columns: Sequence[str | bytes]) -> list[Any]:
    """One `[n, 1]` BYTES input per named column (`TITLE=[...]`, `BRAND=[...]`), for either tritonclient
    flavour (`tritonclient.grpc` or `tritonclient.grpc.aio`, passed as `client_module`)."""
    out = []
    for name, values in columns.items():
        arr = np.array([[v if isinstance(v, bytes) else v.encode("utf-8")] for v in values], dtype=object)
        inp = client_module.InferInput(name, list(arr.shape), "BYTES")
        inp.set_data_from_numpy(arr)
        out.append(inp)
    return out


def channel_args(max_backoff_s: float) -> list[tuple[str, int]]:
    """tritonclient's own channel options (message size, keep-alive) plus a reconnect backoff bounded like our
    retries: gRPC's default grows to 120 s, so after a long Triton outage the channel kept failing for 12-16 s
    after Triton was back, however often we retried (a new client on the same target did too)."""
    import tritonclient.grpc.aio as grpcclient

    keepalive = grpcclient.KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", grpcclient.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", max(1000, int(max_backoff_s * 1000))),
    ]


class TritonClassifier:
    def __init__(
        self,
        url: str,
        model_name: str,
        *,
        priority: int = LIVE_PRIORITY,
        timeout_s: float = 30.0,
        max_backoff_s: float = 5.0,
        model_version: str = "",
        serve_from: str = "",
    ) -> None:
        self.url = url
        self.model_name = model_name
        # the Triton model the requests go to when it serves the version: another name for the same versions
        # (the background copy); "" = model_name
        self.serve_from = serve_from if serve_from != model_name else ""
        self._targets: dict[str, tuple[str, float]] = {}  # version -> (the model that serves it, when checked)
        # concurrent requests ask Triton once, and warn once, per version; made with the client (one event loop)
        self._choosing: asyncio.Lock | None = None
        self.priority = priority
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        self.model_version = model_version  # "" = the version Triton's policy serves (latest)
        self._client: Any = None
        self._taxonomies: dict[str, dict[str, Any]] = {}

    def _connect(self) -> Any:
        import tritonclient.grpc.aio as grpcclient

        if self._client is None:
            self._client = grpcclient.InferenceServerClient(self.url, channel_args=channel_args(self.max_backoff_s))
            self._choosing = asyncio.Lock()
        return self._client

    async def taxonomy(self, version: str = "", *, wait_for_version: bool = True) -> dict[str, Any]:
        """The categories (id, name, path) and tags of a served version (the model's INFO request); retried
        while Triton is unavailable, like a classification. With `wait_for_version=False` a version Triton does not
        serve raises VersionNotServed at once (an older version asked about, not one requests depend on)."""
        import tritonclient.grpc.aio as grpcclient

        key = version or self.model_version
        # "" is whichever version Triton serves newest, which a new export changes: asked each time, never cached
        if not key or key not in self._taxonomies:

            async def ask() -> Any:
                return await self._call(
                    text_inputs(grpcclient, TITLE=["-"], INFO=["taxonomy"]), key, ["RESULT"], priority=0
                )

            def retryable(exc: BaseException) -> bool:
                return isinstance(exc, TritonUnavailable) and (
                    wait_for_version or not isinstance(exc, VersionNotServed)
                )

            res = await retry_forever(
                "triton taxonomy",
                ask,
                retryable=retryable,
                max_backoff=self.max_backoff_s,
                on_retry=health.on_retry("triton"),
            )
            health.succeeded("triton")  # a retried call that got through: ready again (as after a classification)
            taxonomy = orjson.loads(res.as_numpy("RESULT").reshape(-1)[0])
            if not key:
                return taxonomy
            self._taxonomies[key] = taxonomy
        return self._taxonomies[key]

    async def ping(self) -> bool:
        """Triton serves this model, in the version the requests go to (a readiness probe)."""
        client = self._connect()
        return bool(await client.is_server_ready() and await client.is_model_ready(self.model_name, self.model_version))

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    async def _infer_checked(self, titles: Sequence[str], descriptions: Sequence[str], brands: Sequence[str]) -> Any:
        """One request. A refusal the model gives a request it cannot read (INVALID_ARG) is raised as it is: the
        pipeline isolates the events responsible. Any other failure (INTERNAL: the model's own code failed, for
        every request of its batch) is the events' fault only if the model still classifies a known-good title and
        the same request fails again: when the title fails too, it is ModelFailing, retried like an outage instead
        of dead-lettering every batch."""
        from tritonclient.utils import InferenceServerException

        try:
            return await self._infer_once(titles, descriptions, brands)
        except InferenceServerException as exc:
            if str(exc.status()) == "StatusCode.INVALID_ARGUMENT":
                raise
            try:
                await self._infer_once([CANARY_TITLE], [""], [""])
            except InferenceServerException as canary:
                raise ModelFailing(f"the model fails a known-good title too: {canary}") from exc
            # the model works. A failed pass fails every request merged into it, other clients' too, so the batch
            # is sent once more before its events are blamed: a second failure is theirs (the pipeline isolates it)
            return await self._infer_once(titles, descriptions, brands)

    async def _infer_once(self, titles: Sequence[str], descriptions: Sequence[str], brands: Sequence[str]) -> Any:
        import tritonclient.grpc.aio as grpcclient

        inputs = text_inputs(grpcclient, TITLE=titles, DESCRIPTION=descriptions, BRAND=brands)
        return await self._call(inputs, self.model_version, ["RESULT", "TIMING"], self.priority)

    async def _call(self, inputs: list[Any], version: str, outputs: list[str], priority: int) -> Any:
        """One request; an unreachable or not-ready Triton becomes TritonUnavailable (retried by the callers)."""
        import tritonclient.grpc.aio as grpcclient
        from tritonclient.utils import InferenceServerException

        client = self._connect()
        target = self.model_name
        try:
            target = await self._target(client, version)
            return await client.infer(
                target,
                inputs,
                model_version=version,
                outputs=[grpcclient.InferRequestedOutput(o) for o in outputs],
                priority=priority,
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as exc:
            text = f"{exc.status()} {exc}".lower()
            unloaded = version and target == self.model_name and NOT_AT_READY in text
            if unloaded and not await self._loading(client, version):
                # a version Triton has unloaded (`latest N` unloads the oldest as a newer one loads) stays in its
                # table and answers UNAVAILABLE like one still loading: only the repository index tells them apart
                raise VersionNotServed(
                    f"Triton no longer serves {self.model_name} version {version} (unloaded): {exc}"
                ) from exc
            if target != self.model_name and any(w in text for w in ("unknown", "not_found", "not found", "ready")):
                # the background copy went away (unloaded, its version removed): the retry asks again
                self._targets.pop(version, None)
                raise TritonUnavailable(str(exc)) from exc
            if str(exc.status()) in RETRYABLE_CODES or "failed to connect" in str(exc).lower():
                raise TritonUnavailable(str(exc)) from exc
            # a model that is loading or unloaded also answers UNAVAILABLE-like errors
            if "unavailable" in str(exc).lower() or "not ready" in str(exc).lower():
                raise TritonUnavailable(str(exc)) from exc
            if str(exc.status()) == "StatusCode.NOT_FOUND" or "unknown model" in text:
                # the model or this version is not loaded (a live record naming a version Triton does not serve,
                # a version removed or not loaded yet): a serving problem, never the event's — retried, not
                # dead-lettered
                raise VersionNotServed(
                    f"Triton does not serve {self.model_name} version {version or '(newest)'}: load it, or promote "
                    f"a version it serves (listings promote N; listings models lists them): {exc}"
                ) from exc
            raise

    async def _loading(self, client: Any, version: str) -> bool:
        """Whether Triton's repository index says `version` of the model is loading (or cannot say: then it may be,
        and the caller keeps retrying)."""
        try:
            index = await client.get_model_repository_index(client_timeout=self.timeout_s)
        except Exception:  # noqa: BLE001 - no answer: treated as loading, retried like the request
            return True
        for model in getattr(index, "models", ()):
            if model.name == self.model_name and model.version == version:
                return model.state.upper() == "LOADING"
        return False  # not in the index at all: not served

    async def _target(self, client: Any, version: str) -> str:
        """The model to send `version`'s requests to: `serve_from` while Triton serves that version of it, else
        the live model (asked again after RECHECK_S, so a copy loaded later is picked up). Connection errors
        propagate, to be retried like the request itself."""
        from tritonclient.utils import InferenceServerException

        if not self.serve_from:
            return self.model_name
        known = self._targets.get(version)
        if known is not None and (known[0] == self.serve_from or time.monotonic() - known[1] < RECHECK_S):
            return known[0]
        assert self._choosing is not None, "made with the client"
        async with self._choosing:
            fresh = self._targets.get(version)
            if fresh is not None and fresh is not known:
                return fresh[0]  # another request checked while this one waited
            try:
                ready = bool(await client.is_model_ready(self.serve_from, version, client_timeout=self.timeout_s))
            except InferenceServerException as exc:
                if str(exc.status()) in RETRYABLE_CODES or "failed to connect" in str(exc).lower():
                    raise
                ready = False  # a model Triton does not know
            target = self.serve_from if ready else self.model_name
            if not ready and known is None:
                log.warning(
                    "Triton does not serve %s version %s: requests go to %s instead (priority %d; each of these "
                    "batches then holds an instance live batches wait for)",
                    self.serve_from,
                    version or "(latest)",
                    self.model_name,
                    self.priority,
                )
            self._targets[version] = (target, time.monotonic())
            return target

    async def classify(self, titles: Sequence[str], descriptions: Sequence[str], brands: Sequence[str]) -> BatchResult:
        """Classify one micro-batch; retries while Triton is unavailable (back-pressure)."""
        start = time.perf_counter()
        response = await retry_forever(
            "triton infer",
            lambda: self._infer_checked(titles, descriptions, brands),
            retryable=(TritonUnavailable,),
            max_backoff=self.max_backoff_s,
            on_retry=health.on_retry("triton"),
        )
        health.succeeded("triton")
        total = time.perf_counter() - start
        metrics.TRITON_LATENCY.observe(total)
        raw = response.as_numpy("RESULT").reshape(-1)
        results = []
        for row in raw:
            d = orjson.loads(row)
            path = d["category"].get("path", [])
            results.append(
                Classification(
                    d["category"],
                    float(d["confidence"]),
                    d["alternatives"],
                    d["tags"],
                    int(d.get("depth", len(path))),
                    tuple(d.get("level_confidence", ())),
                )
            )
        timing = response.as_numpy("TIMING")
        compute = float(timing[0][0]) / 1000 if timing is not None and timing.size else 0.0
        # the version that served it, under the live model's name (a background copy serves the same versions)
        return BatchResult(self.model_name, response.get_response().model_version, results, total, compute)
