"""`listings shadow --candidate N`: score the live input with a candidate model version, beside the live one,
without touching anything users see.

It reads `listings.new` under a consumer group of its own (resuming where the group left off, from the newest
events for a new group; `--from-beginning` rewinds to the oldest retained event),
classifies each batch with version N at Triton's low priority (live traffic keeps the high one), takes the live
result of the same `listing_version` from the item state in Redis (waiting a little for the live worker to write
it), and publishes one comparison per event to `listings.shadow` (key `item_id`):

    {"item_id", "listing_version", "top_level", "agree", "review_flip", "confidence_shift",
     "live": {"category_id", "path", "confidence", "needs_review", "model_version"},
     "candidate": {... the same for version N}, "compared_at"}

An event without a live result to compare is published with `"live": null` and `"uncompared"`: `no_live_result`
(the live worker had not written this `listing_version` in time, or a newer one is stored), `same_version` (the
stored result is the candidate's own, e.g. from before a rollback: not a comparison) or `human` (a reviewer's
decision stands for that `listing_version`: not the live model's answer).

It writes nothing to the item state or the output topics. Prometheus: `listings_shadow_events_total{candidate}`,
`listings_shadow_agreements_total{candidate,top_level}`, `listings_shadow_compared_total{candidate,top_level}`,
`listings_shadow_review_flips_total{candidate}`, `listings_shadow_confidence_shift{candidate}`.

`listings shadow --report` reads the topic back and prints the summary of one candidate (`--candidate`, or the one
compared most recently; the others are counted, not mixed in): agreement overall and per top-level category, the
live versions it was compared with, review flips, confidence shift, the most frequent flips; and writes it as JSON
and a PNG.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any

import orjson

from stream import connections, keys
from stream.config import Settings
from stream.events.contract import InvalidEvent, Listing, parse_listing
from stream.pathfmt import short_path
from stream.pipeline.records import path_field, stored_path
from stream.timefmt import now_iso

HELP = "score live traffic with a candidate model version and compare, writing only listings.shadow"
log = logging.getLogger("listings.shadow")
LIVE_WAIT_S = 10.0  # how long a comparison waits for the live worker's result of the same listing_version


@dataclass(frozen=True)
class ShadowOptions:
    candidate: str
    group: str | None = None
    from_beginning: bool = False
    max_events: int = 0  # stop after this many events (0: run until interrupted)
    idle_timeout_s: float = 0.0  # stop after this long without events (0: never)
    duration_s: float = 0.0  # stop after this long in all (0: never)


@cache  # registered once a process: a second run in the same process (tests, a library user) reuses them
def _metrics() -> dict[str, Any]:
    from prometheus_client import Counter as PCounter
    from prometheus_client import Histogram

    return {
        "events": PCounter("listings_shadow_events_total", "Events scored by the candidate", ["candidate"]),
        "compared": PCounter(
            "listings_shadow_compared_total", "Events compared with a live result", ["candidate", "top_level"]
        ),
        "agree": PCounter(
            "listings_shadow_agreements_total",
            "Comparisons where the top-1 category agrees",
            ["candidate", "top_level"],
        ),
        "flips": PCounter(
            "listings_shadow_review_flips_total", "Comparisons where the review decision would change", ["candidate"]
        ),
        "shift": Histogram(
            "listings_shadow_confidence_shift",
            "Candidate confidence minus live confidence",
            ["candidate"],
            buckets=(-0.5, -0.2, -0.1, -0.05, -0.01, 0.01, 0.05, 0.1, 0.2, 0.5),
        ),
    }


def comparison(listing: Listing, live: dict[str, str] | None, cand: Any, candidate: str, threshold: float) -> dict:
    cand_doc = {
        "category_id": cand.category["id"],
        "path": cand.category.get("path", []),
        "confidence": cand.confidence,
        "needs_review": cand.confidence < threshold,
        "model_version": candidate,
    }
    doc: dict[str, Any] = {
        "item_id": listing.item_id,
        "listing_version": listing.listing_version,
        "candidate": cand_doc,
        "live": None,
        "compared_at": now_iso(),
    }
    if not live:
        doc["uncompared"] = "no_live_result"
    elif live.get("label_source") == "human":
        # a reviewer's decision stands in the item's state for this listing_version: it is not the live model's
        # answer (confidence 1, never for review), and comparing with it would credit or blame the wrong thing
        doc["uncompared"] = "human"
    elif live.get("model_version") == candidate:
        # the stored result is the candidate's own (e.g. written while it was live, before a rollback): comparing it
        # with itself would count as agreement
        doc["uncompared"] = "same_version"
    else:
        live_doc = {
            "category_id": live.get("category_id", ""),
            "path": stored_path(live.get("category_path", "")),
            "confidence": float(live.get("confidence") or 0.0),
            "needs_review": live.get("needs_review") == "1",
            "model_version": live.get("model_version", ""),
        }
        doc.update(
            live=live_doc,
            top_level=(live_doc["path"] or [""])[0],
            agree=live_doc["category_id"] == cand_doc["category_id"],
            review_flip=live_doc["needs_review"] != cand_doc["needs_review"],
            confidence_shift=round(cand_doc["confidence"] - live_doc["confidence"], 4),
        )
    return doc


async def shadow(settings: Settings, options: ShadowOptions) -> dict[str, int]:
    from kafka import KafkaConsumer

    from stream.classify.triton_client import BACKFILL_PRIORITY, TritonClassifier
    from stream.sinks.kafka_out import KafkaOut, OutRecord

    m = _metrics()
    group = options.group or f"listings-shadow-{settings.triton.model_name}-v{options.candidate}"
    pool = ThreadPoolExecutor(1, thread_name_prefix="shadow-consumer")
    loop = asyncio.get_running_loop()
    consumer = KafkaConsumer(
        **connections.kafka(settings.kafka),
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if options.from_beginning else "latest",
        max_poll_records=settings.worker.max_batch,
    )
    # auto_offset_reset applies only to a group without commits: --from-beginning must also rewind a group an
    # earlier run committed (each partition once, when first assigned: a later rebalance keeps the position)
    consumer.subscribe([settings.topics.input], listener=_rewind(consumer) if options.from_beginning else None)
    classifier = TritonClassifier(
        settings.triton.url,
        settings.triton.model_name,
        priority=BACKFILL_PRIORITY,
        timeout_s=settings.triton.timeout_s,
        max_backoff_s=settings.worker.retry_max_backoff_s,
        model_version=options.candidate,
        serve_from=settings.backfill.serve_from(settings.triton.model_name),
    )
    out = KafkaOut(settings.kafka, max_backoff_s=settings.worker.retry_max_backoff_s, client_id="listings-shadow")
    r = connections.redis_async(settings.redis)
    await out.start()
    threshold = settings.worker.review_threshold
    counts = Counter[str]()
    last_event = started = time.monotonic()
    beating = asyncio.create_task(_beat())
    try:
        while not options.max_events or counts["events"] < options.max_events:
            if options.duration_s and time.monotonic() - started > options.duration_s:
                break
            # never more records than --max-events has left (a whole poll batch overshot it by up to 500)
            room = options.max_events - counts["events"] if options.max_events else None
            polled = await loop.run_in_executor(pool, partial(consumer.poll, timeout_ms=500, max_records=room))
            msgs = [msg for batch in polled.values() for msg in batch]
            if not msgs:
                if options.idle_timeout_s and time.monotonic() - last_event > options.idle_timeout_s:
                    break
                continue
            last_event = time.monotonic()
            listings: list[Listing] = []
            for msg in msgs:
                try:
                    listings.append(parse_listing(msg.value, msg.key))
                except InvalidEvent:
                    counts["invalid"] += 1
            if listings:
                scoring = classifier.classify(
                    [x.title for x in listings],
                    [x.description or "" for x in listings],
                    [x.brand or "" for x in listings],
                )
                # the candidate may go away mid-run (unloaded as newer versions came): the retries must not outlast
                # --duration (the batch is not committed; a shadow is a measurement, not a delivery)
                left = options.duration_s - (time.monotonic() - started) if options.duration_s else None
                try:
                    res = await asyncio.wait_for(scoring, max(left, 0.1) if left is not None else None)
                except TimeoutError:
                    log.warning("shadow: --duration reached while the candidate was not answering")
                    break
                live = await _live_results(r, listings)
                records = []
                for listing, cand in zip(listings, res.results, strict=True):
                    doc = comparison(
                        listing,
                        live.get((listing.item_id, listing.listing_version)),
                        cand,
                        options.candidate,
                        threshold,
                    )
                    records.append(OutRecord(settings.topics.shadow, listing.item_id.encode(), orjson.dumps(doc)))
                    m["events"].labels(options.candidate).inc()
                    counts["events"] += 1
                    if doc.get("uncompared") == "same_version":
                        counts["same_version"] += 1
                    if doc["live"] is not None:
                        counts["compared"] += 1
                        counts["agree"] += int(doc["agree"])
                        m["compared"].labels(options.candidate, doc["top_level"]).inc()
                        if doc["agree"]:
                            m["agree"].labels(options.candidate, doc["top_level"]).inc()
                        if doc["review_flip"]:
                            m["flips"].labels(options.candidate).inc()
                        m["shift"].labels(options.candidate).observe(doc["confidence_shift"])
                await out.send_all(records)
            await loop.run_in_executor(pool, consumer.commit)
    finally:
        beating.cancel()
        await out.stop()
        await classifier.close()
        await r.aclose()
        await loop.run_in_executor(pool, consumer.close)
        pool.shutdown()
    return dict(counts)


def _rewind(consumer: Any) -> Any:
    """A rebalance listener that moves each partition to its oldest retained record the first time it is assigned
    (kafka-python takes only subclasses of its own listener class)."""
    from kafka import ConsumerRebalanceListener

    rewound: set[Any] = set()

    class Rewind(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked: Any) -> None:
            pass

        def on_partitions_assigned(self, assigned: Any) -> None:
            new = [tp for tp in assigned if tp not in rewound]
            if new:
                consumer.seek_to_beginning(*new)
                rewound.update(new)

    return Rewind()


async def _beat() -> None:
    """The shadow's health (its /healthz and /readyz beside /metrics): alive while its event loop turns, ready while
    its Triton and Kafka calls succeed (it runs no probes: a failing call, retried, makes it unready)."""
    from stream.health import DEPENDENCIES, HEALTH

    for dependency in DEPENDENCIES:
        HEALTH.probed(dependency, True, "not probed (a shadow): its calls decide")
    HEALTH.assignment = "polling"
    HEALTH.start()
    while True:
        HEALTH.beat()
        await asyncio.sleep(1.0)


async def _live_results(r: Any, listings: list[Listing]) -> dict[tuple[str, int], dict[str, str]]:
    """The live result of each listing's own `listing_version` (by item and version: one batch may hold two edits
    of an item, and only the stored one has a result), waiting up to LIVE_WAIT_S for the live worker."""
    fields = [
        "category_id",
        "category_path",
        "confidence",
        "needs_review",
        "model_version",
        "listing_version",
        "label_source",
    ]
    found: dict[tuple[str, int], dict[str, str]] = {}
    deadline = time.monotonic() + LIVE_WAIT_S
    pending = list(listings)
    while pending:
        pipe = r.pipeline(transaction=False)
        for x in pending:
            pipe.hmget(keys.listing(x.item_id), fields)
        rows = await pipe.execute()
        still = []
        for x, row in zip(pending, rows, strict=True):
            h = {
                f: (v.decode() if isinstance(v, bytes) else v)
                for f, v in zip(fields, row, strict=True)
                if v is not None
            }
            if h.get("listing_version") == str(x.listing_version):
                found[(x.item_id, x.listing_version)] = h
            elif not h or int(h.get("listing_version") or -1) < x.listing_version:
                still.append(x)  # the live worker has not written this edit yet
        pending = still
        if not pending or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    return found


# ------------------------------------------------------------------------------------------------ report


def summarize(records: list[dict], candidate: str | None = None) -> dict:
    """The comparisons of one candidate version (`candidate`, or the one compared most recently): agreement overall
    and per top level, review flips, confidence shift, the most frequent flips, and the live versions it was
    compared with. Other candidates' comparisons in the topic are counted, not mixed in."""
    by_candidate = Counter(d["candidate"]["model_version"] for d in records)
    if candidate is None and records:
        candidate = max(records, key=lambda d: d.get("compared_at", ""))["candidate"]["model_version"]
    # one comparison per listing edit: a shadow run again over the same events (--from-beginning, a restart before
    # its commit) compares them again; the newest comparison counts, the others are counted as `repeated`
    latest: dict[tuple[Any, Any], dict] = {}
    mine = [d for d in records if d["candidate"]["model_version"] == candidate]
    for d in mine:
        latest[(d.get("item_id"), d.get("listing_version"))] = d
    rows = list(latest.values())
    compared = [d for d in rows if d.get("live")]
    by_top: dict[str, list[bool]] = defaultdict(list)
    for d in compared:
        by_top[d["top_level"]].append(d["agree"])
    flips = Counter(
        (path_field(d["live"]["path"]), path_field(d["candidate"]["path"])) for d in compared if not d["agree"]
    )
    shifts = [d["confidence_shift"] for d in compared]
    return {
        "candidate": candidate,
        "events": len(rows),
        "repeated": len(mine) - len(rows),
        "compared": len(compared),
        "uncompared": dict(Counter(d.get("uncompared", "no_live_result") for d in rows if not d.get("live"))),
        "live_versions": dict(Counter(d["live"]["model_version"] for d in compared).most_common()),
        "other_candidates": {v: n for v, n in sorted(by_candidate.items()) if v != candidate},
        "agreement": round(sum(d["agree"] for d in compared) / len(compared), 4) if compared else None,
        "by_top_level": {
            k: {"compared": len(v), "agreement": round(sum(v) / len(v), 4)}
            for k, v in sorted(by_top.items(), key=lambda kv: -len(kv[1]))
        },
        "review_flips": sum(d["review_flip"] for d in compared),
        "review_flip_share": round(sum(d["review_flip"] for d in compared) / len(compared), 4) if compared else None,
        "mean_confidence_shift": round(sum(shifts) / len(shifts), 4) if shifts else None,
        "top_flips": [{"live": a, "candidate": b, "count": n} for (a, b), n in flips.most_common(10)],
    }


def read_shadow(settings: Settings, timeout_s: float = 5.0) -> list[dict]:
    """The comparisons on the shadow topic; a record that is not one (a tombstone, another producer's bytes) is
    left out rather than failing the report."""
    from stream.topics import read_all

    out = []
    for m in read_all(settings, settings.topics.shadow, timeout_s):
        try:
            doc = orjson.loads(m.value) if m.value is not None else None
        except orjson.JSONDecodeError:
            continue
        if isinstance(doc, dict) and isinstance(doc.get("candidate"), dict) and "model_version" in doc["candidate"]:
            out.append(doc)
    return out


def plot(summary: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(15, 6), gridspec_kw={"width_ratios": [1, 1.3]})
    tops = list(summary["by_top_level"])[:15]
    a1.barh(tops[::-1], [summary["by_top_level"][t]["agreement"] for t in tops][::-1], color="#4c72b0")
    a1.set_xlim(0, 1)
    a1.set_title(f"top-1 agreement by top level (overall {summary['agreement']})")
    a2.axis("off")
    lines = [
        f"{f['count']:>4}  {short_path(f['live'])}\n   →  {short_path(f['candidate'])}" for f in summary["top_flips"]
    ]
    a2.text(
        0, 1, "most frequent flips (live → candidate)\n\n" + "\n".join(lines), va="top", family="monospace", fontsize=8
    )
    against = ", ".join(f"v{v}" for v in summary["live_versions"]) or "-"
    fig.suptitle(
        f"shadow: candidate v{summary['candidate']} against live {against}: {summary['compared']} compared, "
        f"review flips {summary['review_flips']}, mean confidence shift {summary['mean_confidence_shift']}"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stream.cli import count, port_or_off, seconds

    parser.add_argument("--candidate", help="the model version to shadow (Triton must serve it)")
    parser.add_argument("--report", action="store_true", help="summarize listings.shadow instead of scoring")
    parser.add_argument(
        "--from-beginning",
        action="store_true",
        help="start at the input's oldest retained event, even where the group has committed (default: resume the "
        "group, or the newest events for a new group)",
    )
    parser.add_argument("--group", help="consumer group (default listings-shadow-<model>-v<candidate>)")
    parser.add_argument(
        "--max-events", type=count, default=0, help="stop after N events (default 0: run until stopped)"
    )
    parser.add_argument(
        "--idle-timeout", type=seconds, default=0.0, help="stop after S seconds without events (0: never)"
    )
    parser.add_argument("--duration", type=seconds, default=0.0, help="stop after S seconds in all (0: never)")
    parser.add_argument(
        "--metrics-port",
        type=port_or_off,
        default=None,
        help="Prometheus port (default LISTINGS_METRICS_PORT; 0: none)",
    )
    parser.add_argument("--out", type=Path, default=Path("shadow-report"), help="--report: folder for JSON and PNG")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from stream import health, logs, models, preflight

    logs.setup("WARNING", quiet=True)
    preflight.one_shot(settings, redis=not args.report)
    if args.report:
        summary = summarize(read_shadow(settings), args.candidate)
        try:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "shadow.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
        except OSError as exc:
            print(f"listings shadow: cannot write {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return 2
        (args.out / "shadow.png").unlink(missing_ok=True)  # never a plot of an earlier report beside this one
        print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
        if summary["compared"]:
            try:
                plot(summary, args.out / "shadow.png")
                print(f"wrote {args.out / 'shadow.json'} and {args.out / 'shadow.png'}")
            except ImportError:
                print(f"wrote {args.out / 'shadow.json'} (install matplotlib for the PNG)")
        return 0
    if not args.candidate:
        print("listings shadow: give --candidate N (or --report)", file=sys.stderr)
        return 2
    why = models.unserved(settings, args.candidate)
    if why:
        print(f"listings shadow: {why}", file=sys.stderr)
        return 2
    r = connections.redis_sync(settings.redis)
    try:
        live = models.read_live(r, settings.triton.model_name).version
    finally:
        r.close()
    if live in ("", args.candidate):
        why = "no live version is recorded, so workers serve the newest" if not live else "it is the live version"
        print(
            f"listings shadow: v{args.candidate} would be compared with itself ({why}); "
            "record the version live traffic should keep first: listings promote N",
            file=sys.stderr,
        )
        return 2
    port = args.metrics_port if args.metrics_port is not None else settings.worker.metrics_port
    health.serve(settings.worker.metrics_host, port)
    options = ShadowOptions(
        args.candidate, args.group, args.from_beginning, args.max_events, args.idle_timeout, args.duration
    )
    counts = asyncio.run(shadow(settings, options))
    print(orjson.dumps(counts).decode())
    return 0
