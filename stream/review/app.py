"""`listings review-ui`: the review page and its JSON API (aiohttp, the web server Faust already brings).

* `GET /` the page (static HTML/JS/CSS shipped with the package, no build step); every listing field is put into
  the page as text by the script (`textContent`), never as HTML: titles are seller input.
* `GET /api/queue?category=&min_confidence=&max_confidence=&limit=` the review queue, newest first: the items the
  Redis sorted set `review:queue` holds (the worker adds a result with `needs_review`, a decision or a newer
  confident result removes it), each with title, predicted path, confidence, alternatives and tags.
* `GET /api/taxonomy?version=` the categories and tags of a model version (the live one by default; asked from
  Triton).
* `GET /api/stats` the live panel: classification rate, dead-letter count, review backlog, accepted vs corrected.
* `POST /api/decision` a decision, published to `listings.feedback` (the worker applies it). Refused here with what
  the worker would dead-letter it for: a broken field (400), an item never classified (404), an edit the reviewer
  did not see (409: the seller has edited the item since, or that version was never classified), a category or tag
  the taxonomy of the version that classified the item lacks (400). Accepted, the item leaves the queue unless a
  newer edit has been stored meanwhile.

Security: bound to 127.0.0.1 unless `LISTINGS_REVIEW_HOST` says otherwise, and then `LISTINGS_REVIEW_TOKEN` is
required (the page asks for it; the API takes it as `X-Review-Token`). A POST must be JSON, carry the token
header (when one is set) or `X-Requested-With`, and come from the page's own origin: a cross-site form post is
refused. Without a token (loopback only) every request must name a loopback host (`Host: 127.0.0.1:8088`,
`localhost`, `[::1]`): a site whose name an attacker re-points at 127.0.0.1 (DNS rebinding) is same-origin with
itself, and only its `Host` header gives it away.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import math
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
from stream.pipeline.records import stored_path
from stream.timefmt import now_iso

log = logging.getLogger("listings.review")
STATIC = resources.files("stream.review").joinpath("static")
MAX_SCAN = 10_000  # queue entries a filtered page reads at most (newest first)

# remove an item from the review queue only while the stored edit is the one decided on (a newer edit stored
# meanwhile may itself need review: the worker queued it)
UNQUEUE_IF_VERSION = """
if redis.call('HGET', KEYS[1], 'listing_version') == ARGV[2] then
  return redis.call('ZREM', KEYS[2], ARGV[1])
end
return 0
"""


class Refused(ValueError):
    """A decision the worker would dead-letter; `status` is the HTTP answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def host_name(header: str) -> str:
    """The host part of a `Host` header (`127.0.0.1:8088` → `127.0.0.1`, `[::1]:8088` → `::1`)."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


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
        """Up to `limit` queued items that pass the filters, newest first, read in chunks (at most MAX_SCAN
        entries: a filter that matches only old items still finds them)."""
        out: list[dict] = []
        chunk = self.settings.review.page_size * 5 + 1
        for start in range(0, MAX_SCAN, chunk):
            raw_ids = await self.redis.zrevrange(keys.REVIEW_QUEUE, start, min(start + chunk, MAX_SCAN) - 1)
            await self._matching([i.decode() for i in raw_ids], category, lo, hi, limit, out)
            if len(out) >= limit or len(raw_ids) < chunk:
                break
        return out

    async def _matching(self, ids: list[str], category: str, lo: float, hi: float, limit: int, out: list) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for iid in ids:
            pipe.hgetall(keys.listing(iid))
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
                    "path": stored_path(h.get("category_path", "")),
                    "confidence": conf,
                    "alternatives": json.loads(h.get("alternatives") or "[]"),
                    "tags": [t["tag"] for t in json.loads(h.get("tag_scores") or "[]")],
                    "model_version": h.get("model_version", ""),
                    "classified_at": h.get("classified_at", ""),
                }
            )
            if len(out) >= limit:
                break

    async def taxonomy(self, version: str = "") -> dict:
        """The categories and tags of `version` (the one that classified an item: what its decision is checked
        against, or the served one once Triton no longer serves it), or of the live version."""
        from stream.feedback import taxonomy_of

        if version:
            tax = await taxonomy_of(self.classifier, version)
            categories = list(tax.categories.values())
            return {"version": version, "checked": tax.note, "categories": categories, "tags": sorted(tax.tags)}
        live = ((await self.redis.hget(live_key(self.settings.triton.model_name), "version")) or b"").decode()
        return {"version": live, **(await self.classifier.taxonomy(live))}

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
            raise Refused(f"missing {', '.join(missing)}")
        for name in ("item_id", "decision", "category_id", "reviewer"):
            if name in body and body[name] is not None and not isinstance(body[name], str):
                raise Refused(f"{name} is a string, got {type(body[name]).__name__}")
        tags = body.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise Refused("tags is a list of tag names (strings)")
        version = body["listing_version"]
        if isinstance(version, bool) or not (
            isinstance(version, int) or (isinstance(version, str) and version.isdigit())
        ):
            raise Refused(f"listing_version is an integer, got {version!r}")
        decision = {
            "item_id": body["item_id"],
            "listing_version": int(version),
            "decision": body["decision"],
            "category_id": body["category_id"],
            "tags": tags,
            "reviewer": (body.get("reviewer") or current_user())[:100],
            "decided_at": now_iso(),
        }
        value = orjson.dumps(decision)
        try:
            fb = parse_feedback(value)  # what the worker will accept: refused here, not dead-lettered there
        except InvalidEvent as exc:
            raise Refused(str(exc)) from None
        await self._check_against_stored(fb)
        record = OutRecord(self.settings.topics.feedback, fb.item_id.encode(), value)
        await self.producer.send_all([record])
        # off the page's queue at once (the worker removes it from Redis when it applies the decision), unless a
        # newer edit has been stored since the check: that one stays queued
        await self.redis.eval(
            UNQUEUE_IF_VERSION, 2, keys.listing(fb.item_id), keys.REVIEW_QUEUE, fb.item_id, str(fb.listing_version)
        )
        return decision

    async def _check_against_stored(self, fb: Any) -> None:
        """Refuse what the worker would dead-letter: an unknown item, an edit other than the stored one, a category
        or tag the taxonomy of the version that classified the item lacks (the worker's own rule)."""
        from stream.feedback import REFUSED, taxonomy_of

        stored = {k.decode(): v.decode() for k, v in (await self.redis.hgetall(keys.listing(fb.item_id))).items()}
        if not stored:
            raise Refused(REFUSED["unknown_item"], 404)
        current = int(stored.get("listing_version") or 0)
        if fb.listing_version != current:
            why = REFUSED["older_version"] if fb.listing_version < current else REFUSED["unknown_version"]
            raise Refused(f"{why} (stored: {current}, decided: {fb.listing_version}); reload the queue", 409)
        tax = await taxonomy_of(self.classifier, stored.get("model_version", ""))
        refused = tax.refusal(fb, stored.get("category_id", ""))
        if refused is not None:
            raise Refused(refused[0])


# -------------------------------------------------------------------------------------------- HTTP


def make_app(settings: Settings) -> web.Application:
    review = Review(settings)
    token = settings.review.token.get_secret_value() if settings.review.token else ""

    def authorised(request: web.Request) -> bool:
        # bytes: compare_digest refuses str with non-ASCII characters (a TypeError, answered 500)
        given = request.headers.get("X-Review-Token", "").encode("utf-8", "surrogateescape")
        return not token or hmac.compare_digest(given, token.encode("utf-8"))

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        if not token and not loopback(host_name(request.host)):  # DNS rebinding: see the module's Security
            return web.json_response({"error": "open the page by a loopback address (127.0.0.1)"}, status=403)
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
            if not (math.isfinite(lo) and math.isfinite(hi)) or limit < 1:
                raise ValueError
        except ValueError:
            return web.json_response({"error": "bad filter value (confidences are numbers, limit >= 1)"}, status=400)
        return web.json_response(await review.queue(q.get("category", ""), lo, hi, limit))

    async def api_taxonomy(request: web.Request) -> web.StreamResponse:
        version = request.query.get("version", "")
        if version and not version.isdigit():
            return web.json_response({"error": "version is a model version number"}, status=400)
        return web.json_response(await review.taxonomy(version))

    async def api_stats(_request: web.Request) -> web.StreamResponse:
        return web.json_response(await review.stats())

    async def api_decision(request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("not an object")
            decision = await review.decide(body)
        except Refused as exc:
            return web.json_response({"error": f"decision refused: {exc}"}, status=exc.status)
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
