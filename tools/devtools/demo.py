"""`listings demo`: the main job on the embedded local stack.

Sets up the stack (and the model, trained or taken from the cache when absent), starts a worker, streams
held-out real listings (plus a few malformed events) through Kafka, and shows a live view: rate, batch
sizes, latency percentiles, accuracy so far against the true categories, example classifications. Then
it prints where to look and stops what it started."""

from __future__ import annotations

import argparse
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass
from typing import Any

import orjson

from devtools.config import StackSettings
from devtools.stack import control
from devtools.stats import percentile
from stream import connections, keys
from stream.config import Settings
from stream.timefmt import iso_ms

HELP = "the main job on the local stack (what `make demo` runs)"


@dataclass(frozen=True)
class DemoOptions:
    events: int = 3000  # held-out listings to stream
    rate: float = 0.0  # produce rate, events/s (0 = as fast as possible)
    quick: bool = False  # use the quick-trained model if none exists


def malformed_events(n: int) -> list[bytes]:
    samples = [b"{not json", b"[]", b'{"item_id": "x"}', b'{"item_id": "y", "title": "   "}', b"\xff\xfe"]
    return [samples[i % len(samples)] for i in range(n)]


def _scrape(port: int) -> dict[str, float]:
    """The worker's Prometheus counters we show (unlabelled sums)."""
    out: dict[str, float] = {}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("#") or " " not in line:
                    continue
                name, value = line.rsplit(" ", 1)
                base = name.split("{", 1)[0]
                out[base] = out.get(base, 0.0) + float(value)
    except OSError:
        pass
    return out


class Progress:
    """What the live view shows, read from Redis (results) and the worker's metrics."""

    def __init__(self, settings: Settings, rows: list[dict[str, Any]], version: int, metrics_port: int) -> None:
        self.r = connections.redis_sync(settings.redis, decode_responses=True)
        self.rows = {row["item_id"]: row for row in rows}
        self.version = str(version)
        self.metrics_port = metrics_port
        self.done: dict[str, dict[str, str]] = {}
        self.latencies: list[float] = []
        self.history: deque[tuple[float, int]] = deque(maxlen=20)
        self.examples: deque[tuple[str, dict[str, str]]] = deque(maxlen=5)

    def poll(self) -> None:
        pending = [i for i in self.rows if i not in self.done]
        fields = ["listing_version", "classified_at", "event_time", "category_path", "confidence", "tags", "title"]
        pipe = self.r.pipeline(transaction=False)
        for iid in pending:
            pipe.hmget(keys.listing(iid), fields)
        for iid, vals in zip(pending, pipe.execute(), strict=True):
            h = dict(zip(fields, vals, strict=True))
            if h["listing_version"] != self.version:
                continue
            self.done[iid] = h
            if h["event_time"] and h["classified_at"]:
                self.latencies.append(iso_ms(h["classified_at"]) - iso_ms(h["event_time"]))
            self.examples.append((iid, h))
        self.history.append((time.monotonic(), len(self.done)))

    def rate(self) -> float:
        if len(self.history) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.history[0], self.history[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def accuracy(self) -> tuple[float, float, int]:
        from training.taxonomy import parse_path

        top = leaf = scored = 0
        for iid, h in self.done.items():
            truth = self.rows[iid].get("true_category")
            if not truth or not h["category_path"]:
                continue
            want = parse_path(truth)
            got = tuple(p.strip() for p in h["category_path"].split(" > "))
            scored += 1
            top += got[:1] == want[:1]
            leaf += got == want
        return (top / scored if scored else float("nan"), leaf / scored if scored else float("nan"), scored)

    def render(self, produced: int, total: int) -> Any:
        from rich.console import Group
        from rich.table import Table

        m = _scrape(self.metrics_port)
        batches = m.get("listings_batch_size_count", 0.0)
        mean_batch = m.get("listings_batch_size_sum", 0.0) / batches if batches else 0.0
        top, leaf, scored = self.accuracy()
        lat = self.latencies
        stats = Table(title="listing-classifier demo", show_header=False, expand=False)
        stats.add_row("produced", f"{produced} / {total}")
        stats.add_row("classified (in Redis)", f"{len(self.done)}  at {self.rate():.0f}/s")
        stats.add_row("dead-lettered", f"{m.get('listings_dlq_total', 0):.0f}")
        stats.add_row("sent to review", f"{m.get('listings_review_total', 0):.0f}")
        stats.add_row("Triton batches", f"{batches:.0f}  mean size {mean_batch:.1f}")
        pct = "  ".join(f"p{q} {percentile(lat, q):.0f} ms" for q in (50, 95, 99))
        stats.add_row("latency produce→Redis", pct)
        stats.add_row("accuracy so far", f"top level {top:.1%}  leaf (3 levels) {leaf:.1%}  of {scored}")
        ex = Table(title="latest classifications", expand=False)
        for col in ("title", "category", "conf", "tags"):
            ex.add_column(col, overflow="fold")
        for _, h in list(self.examples):
            tags = ", ".join(orjson.loads(h["tags"] or "[]")) or "-"
            ex.add_row((h["title"] or "")[:60], h["category_path"] or "", f"{float(h['confidence'] or 0):.2f}", tags)
        return Group(stats, ex)


def demo(stack: StackSettings, base: Settings, options: DemoOptions) -> int:
    from rich.console import Console
    from rich.live import Live

    from devtools.heldout import held_out_listings
    from devtools.stack import triton
    from devtools.workers import WorkerProcess, produce_raw, wait_group_stable
    from stream.produce import produce_listings
    from training.release import ensure_model

    settings = stack.runtime(base)
    events, rate = options.events, options.rate
    console = Console()
    started = control.status(stack)
    version = ensure_model(stack, quick=options.quick)
    control.up(stack, echo=console.print)
    if started["triton"]["running"]:
        triton.load_model(stack, settings.triton.model_name)  # a Triton that was already up picks the model up
    listing_version = int(time.time())  # each demo run is a newer edit of the same listings
    rows = held_out_listings(stack.data_dir, events)
    console.print(f"streaming {len(rows)} held-out Flipkart listings (listing_version {listing_version}) + malformed")
    metrics_port = settings.worker.metrics_port
    worker = WorkerProcess(settings, stack.log_dir, name="demo-worker", metrics_port=metrics_port)
    worker.start()
    wait_group_stable(settings, workers=[worker])
    progress = Progress(settings, rows, listing_version, metrics_port)
    produced = {"n": 0}

    def feed() -> None:
        bad = malformed_events(max(1, len(rows) // 200))
        produce_raw(settings, [(None, b) for b in bad])
        summary = produce_listings(settings, rows, rate=rate, progress=False, listing_version=listing_version)
        produced["n"] = summary["sent"]

    feeder = threading.Thread(target=feed, daemon=True)
    t0 = time.monotonic()
    feeder.start()
    try:
        with Live(progress.render(0, len(rows)), console=console, refresh_per_second=2) as live:
            while len(progress.done) < len(rows):
                time.sleep(1)
                progress.poll()
                live.update(progress.render(produced["n"] or len(progress.done), len(rows)))
                if not worker.alive():
                    console.print(f"[red]the worker exited[/red]; its log:\n{worker.log_tail()}")
                    return 1
                if time.monotonic() - t0 > 1800:
                    console.print("[red]gave up after 30 minutes[/red]")
                    return 1
        elapsed = time.monotonic() - t0
        top, leaf, scored = progress.accuracy()
        console.print(
            f"\n{len(progress.done)} listings classified in {elapsed:.1f}s "
            f"({len(progress.done) / elapsed:.0f}/s overall); accuracy top level {top:.1%}, leaf {leaf:.1%} "
            f"on {scored}; model {settings.triton.model_name} v{version}"
        )
        some = next(iter(progress.done))
        console.print(
            "\nWhere to look:\n"
            f"  Redis ({settings.redis.url}):  HGETALL {keys.listing(some)}   SMEMBERS {keys.category('<id>')}"
            f"   SMEMBERS {keys.tag('<tag>')}   XREVRANGE {settings.redis.updates_stream} + - COUNT 5\n"
            f"  Kafka ({settings.kafka.bootstrap}): {settings.topics.classified}, {settings.topics.tag_updates}, "
            f"{settings.topics.review}, {settings.topics.dlq}\n"
            f"  Worker metrics: http://127.0.0.1:{metrics_port}/metrics  (while a worker runs)\n"
            f"  Triton metrics: http://127.0.0.1:{stack.triton_metrics_port}/metrics\n"
            f"  Logs: {stack.log_dir}"
        )
        return 0
    finally:
        worker.stop()
        mine = [name for name, st in started.items() if not st["running"]]
        if mine:
            control.down(stack, mine, echo=console.print)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", type=int, default=3000, help="held-out listings to stream (default 3000)")
    parser.add_argument("--rate", type=float, default=0.0, help="produce rate in events/s (0 = as fast as possible)")
    parser.add_argument("--quick", action="store_true", help="use the quick-trained model if none exists")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from devtools import config
    from devtools.stack.process import StackError

    try:
        return demo(config.load(), settings, DemoOptions(args.events, args.rate, args.quick))
    except StackError as exc:
        print(f"demo failed: {exc}")
        return 1
