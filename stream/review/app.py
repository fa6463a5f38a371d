"""`listings review-ui`: the review page and its JSON API (aiohttp, the web server Faust already brings).

* `GET /` the page (static HTML/JS/CSS shipped with the package, no build step); every listing field is put into
  the page as text by the script (`textContent`), never as HTML: titles are seller input.
* `GET /api/queue?category=&min_confidence=&max_confidence=&limit=` the review queue, newest first: the items the
  Redis sorted set `review:queue` holds (the worker adds a result with `needs_review`, a decision or a newer
  confident result removes it), each with title, predicted path, confidence, alternatives and tags.
* `GET /api/taxonomy` the categories and tags of the live model version (asked from Triton).
* `GET /api/stats` the live panel: classification rate, dead-letter count, review backlog, accepted vs corrected.
* `POST /api/decision` a decision, published to `listings.feedback` (the worker applies it).

Security: bound to 127.0.0.1 unless `LISTINGS_REVIEW_HOST` says otherwise, and then `LISTINGS_REVIEW_TOKEN` is
required (the page asks for it; the API takes it as `X-Review-Token`). A POST must be JSON, carry the token
header (when one is set) or `X-Requested-With`, and come from the page's own origin: a cross-site form post is
refused.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import time
from importlib import resources
from typing import Any

import orjson
from aiohttp import web

from stream import connections, keys
from stream.config import Settings
from stream.events.contract import InvalidEvent
from stream.feedback import parse_feedback
from stream.models import current_user, live_key
from stream.timefmt import now_iso

log = logging.getLogger("listings.review")
STATIC = resources.files("stream.review").joinpath("static")


def loopback(host: str) -> bool:
    """Whether binding `host` keeps the page on this machine (an empty host binds every interface: not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Review:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis: Any = None
        self.producer: Any = None
        self.classifier: Any = None
        self._dlq_consumer: Any = None

    async def start(self, _app: web.Application) -> None:
        from stream.classify.triton_client import BACKFILL_PRIORITY, TritonClassifier
        from stream.sinks.kafka_out import KafkaOut

        s = self.settings
        self.redis = connections.redis_async(s.redis)
        self.producer = KafkaOut(s.kafka, client_id="listings-review")
        await self.producer.start()
        self.classifier = TritonClassifier(s.triton.url, s.triton.model_name, priority=BACKFILL_PRIORITY)

    async def stop(self, _app: web.Application) -> None:
        if self._dlq_consumer is not None:
            await self._dlq_consumer.stop()
        await self.producer.stop()
        await self.classifier.close()
        await self.redis.aclose()

    # ---------------------------------------------------------------------------------------- data

    async def queue(self, category: str, lo: float, hi: float, limit: int) -> list[dict]:
        ids = [i.decode() for i in await self.redis.zrevrange(keys.REVIEW_QUEUE, 0, self.settings.review.page_size * 5)]
        pipe = self.redis.pipeline(transaction=False)
        for iid in ids:
            pipe.hgetall(keys.listing(iid))
        out = []
        for iid, raw in zip(ids, await pipe.execute(), strict=True):
            h = {k.decode(): v.decode() for k, v in raw.items()}
            if not h or h.get("needs_review") != "1" or h.get("label_source") == "human":
                continue
            conf = float(h.get("confidence") or 0)
            if category and not h.get("category_path", "").startswith(category):
                continue
            if not lo <= conf <= hi:
                continue
            out.append(
                {
                    "item_id": iid,
                    "listing_version": int(h.get("listing_version") or 0),
                    "title": h.get("title", ""),
                    "category_id": h.get("category_id", ""),
                    "path": [p for p in h.get("category_path", "").split(" > ") if p],
                    "confidence": conf,
                    "alternatives": json.loads(h.get("alternatives") or "[]"),
                    "tags": [t["tag"] for t in json.loads(h.get("tag_scores") or "[]")],
                    "model_version": h.get("model_version", ""),
                    "classified_at": h.get("classified_at", ""),
                }
            )
            if len(out) >= limit:
                break
        return out

    async def taxonomy(self) -> dict:
        version = (await self.redis.hget(live_key(self.settings.triton.model_name), "version")) or b""
        tax = await self.classifier.taxonomy(version.decode())
        return {"version": version.decode(), **tax}

    async def stats(self) -> dict:
        s = self.settings
        now_ms = int(time.time() * 1000)
        recent = await self.redis.xrange(s.redis.updates_stream, min=f"{now_ms - 10_000}-0", max="+", count=100_000)
        decisions = {k.decode(): int(v) for k, v in (await self.redis.hgetall(keys.REVIEW_STATS)).items()}
        accepted, corrected = decisions.get("accepted", 0), decisions.get("corrected", 0)
        return {
            "rate_per_s": round(len(recent) / 10, 1),
            "review_backlog": int(await self.redis.zcard(keys.REVIEW_QUEUE)),
            "dlq": await self._dlq_count(),
            "accepted": accepted,
            "corrected": corrected,
            "accepted_share": round(accepted / (accepted + corrected), 3) if accepted + corrected else None,
        }

    async def _dlq_count(self) -> int | None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        try:
            if self._dlq_consumer is None:
                consumer = AIOKafkaConsumer(**connections.kafka(self.settings.kafka))
                await consumer.start()
                self._dlq_consumer = consumer
            topic = self.settings.topics.dlq
            parts = self._dlq_consumer.partitions_for_topic(topic)
            if not parts:
                # a consumer knows the partitions of the topics it has asked about: asking for partition 0's end
                # (every topic has one) loads the topic's metadata, and with it all of its partitions
                await asyncio.wait_for(self._dlq_consumer.end_offsets([TopicPartition(topic, 0)]), 10)
                parts = self._dlq_consumer.partitions_for_topic(topic) or {0}
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            begin = await asyncio.wait_for(self._dlq_consumer.beginning_offsets(tps), 10)
            end = await asyncio.wait_for(self._dlq_consumer.end_offsets(tps), 10)
            return sum(end[tp] - begin[tp] for tp in tps)
        except Exception as exc:  # noqa: BLE001 - the panel shows "-" rather than failing the page
            log.warning("DLQ count unavailable: %s", exc)
            return None

    async def decide(self, body: dict) -> dict:
        from stream.sinks.kafka_out import OutRecord

        missing = [f for f in ("item_id", "listing_version", "decision", "category_id") if body.get(f) in (None, "")]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        if not isinstance(body.get("tags", []), list):
            raise ValueError("tags is a list of tags")
        version = body["listing_version"]
        if isinstance(version, bool) or not (
            isinstance(version, int) or (isinstance(version, str) and version.isdigit())
        ):
            raise ValueError(f"listing_version is an integer, got {version!r}")
        decision = {
            "item_id": str(body["item_id"]),
            "listing_version": int(version),
            "decision": body["decision"],
            "category_id": str(body["category_id"]),
            "tags": [str(t) for t in body.get("tags", [])],
            "reviewer": str(body.get("reviewer") or current_user())[:100],
            "decided_at": now_iso(),
        }
        value = orjson.dumps(decision)
        try:
            parse_feedback(value)  # what the worker will accept: refused here, not dead-lettered there
        except InvalidEvent as exc:
            raise ValueError(str(exc)) from None
        record = OutRecord(self.settings.topics.feedback, decision["item_id"].encode(), value)
        await self.producer.send_all([record])
        # off the page's queue at once; the worker removes it from Redis when it applies the decision
        await self.redis.zrem(keys.REVIEW_QUEUE, decision["item_id"])
        return decision


# -------------------------------------------------------------------------------------------- HTTP


def make_app(settings: Settings) -> web.Application:
    review = Review(settings)
    token = settings.review.token.get_secret_value() if settings.review.token else ""

    def authorised(request: web.Request) -> bool:
        return not token or hmac.compare_digest(request.headers.get("X-Review-Token", ""), token)

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/api/"):
            if not authorised(request):
                return web.json_response({"error": "a valid X-Review-Token is required"}, status=401)
            if request.method != "GET":
                origin = request.headers.get("Origin")
                same_origin = origin is None or origin == f"{request.scheme}://{request.host}"
                asked_by_page = request.headers.get("X-Requested-With") == "listings-review"
                if not same_origin or not asked_by_page or request.content_type != "application/json":
                    return web.json_response({"error": "cross-site or non-JSON request refused"}, status=403)
        response = await handler(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault(
            "Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors 'none'"
        )
        return response

    async def page(_request: web.Request) -> web.StreamResponse:
        return web.Response(body=STATIC.joinpath("index.html").read_bytes(), content_type="text/html")

    async def static(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        types = {".js": "application/javascript", ".css": "text/css"}
        suffix = name[name.rfind(".") :]
        if "/" in name or suffix not in types or not STATIC.joinpath(name).is_file():
            raise web.HTTPNotFound()
        return web.Response(body=STATIC.joinpath(name).read_bytes(), content_type=types[suffix])

    async def api_queue(request: web.Request) -> web.StreamResponse:
        q = request.query
        try:
            lo, hi = float(q.get("min_confidence", 0)), float(q.get("max_confidence", 1))
            limit = min(int(q.get("limit", settings.review.page_size)), settings.review.page_size)
        except ValueError:
            return web.json_response({"error": "bad filter value"}, status=400)
        return web.json_response(await review.queue(q.get("category", ""), lo, hi, limit))

    async def api_taxonomy(_request: web.Request) -> web.StreamResponse:
        return web.json_response(await review.taxonomy())

    async def api_stats(_request: web.Request) -> web.StreamResponse:
        return web.json_response(await review.stats())

    async def api_decision(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("not an object")
            decision = await review.decide(body)
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad decision: {exc}"}, status=400)
        return web.json_response(decision)

    app = web.Application(middlewares=[guard])
    app.router.add_get("/", page)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/api/queue", api_queue)
    app.router.add_get("/api/taxonomy", api_taxonomy)
    app.router.add_get("/api/stats", api_stats)
    app.router.add_post("/api/decision", api_decision)
    app.on_startup.append(review.start)
    app.on_cleanup.append(review.stop)
    return app


HELP = "serve the review page: triage low-confidence results, publish decisions to listings.feedback"


def add_arguments(parser: Any) -> None:
    from stream.cli import port

    parser.add_argument("--host", help="bind address (default LISTINGS_REVIEW_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=port, help="port (default LISTINGS_REVIEW_PORT, 8088)")


def run(args: Any, settings: Settings) -> int:
    import sys

    from stream import logs

    review = settings.review
    host = args.host or review.host
    port = args.port if args.port is not None else review.port
    if not loopback(host) and review.token is None:
        print(
            f"listings review-ui: binding {host} needs LISTINGS_REVIEW_TOKEN (a secret reviewers type in)",
            file=sys.stderr,
        )
        return 2
    logs.setup("INFO", quiet=True)
    from stream import preflight

    preflight.one_shot(settings)
    print(f"review page on http://{host}:{port}/")
    web.run_app(make_app(settings), host=host, port=port, print=None, access_log=None)
    return 0
