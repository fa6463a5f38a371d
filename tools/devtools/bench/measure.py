"""The measurements of `listings bench`: raw Triton throughput, pipeline runs (one or more worker
processes on an isolated topic set), and end-to-end latency at a fixed produce rate.

Every pipeline run classifies events whose `item_id`s carry a tag of their own, so Redis state left by an
earlier run can never make a result "unchanged" or "stale"; rates come from the `classified_at` field of the
Redis hashes the worker wrote."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from devtools.stats import CpuMark, busy_share, cpu_by_process, cpu_mark, percentile
from devtools.workers import WorkerProcess, isolated, wait_group_stable
from stream import connections, keys
from stream.classify.triton_client import text_inputs
from stream.config import Settings
from stream.pipeline.timing import BATCH_STAGES, EVENT_STAGES
from stream.produce import produce_listings
from stream.retry import poll
from stream.timefmt import iso_ms

POLL_S = 0.2
JOIN_TIMEOUT_S = 180.0
MIN_WRITES = 3  # distinct write times needed for a first-to-last-write rate


class BenchError(RuntimeError):
    """A measurement could not complete (a worker died, a wait timed out)."""


def tagged(listings: Sequence[dict[str, Any]], n: int, tag: str) -> list[dict[str, Any]]:
    """`n` listings (cycling through `listings`), each with an item_id unique to this run."""
    out = []
    for i in range(n):
        base = listings[i % len(listings)]
        out.append({**base, "item_id": f"bench-{tag}-{i}-{base['item_id']}"})
    return out


# ---------------------------------------------------------------- (a) raw Triton


async def _triton_raw(
    settings: Settings, titles: Sequence[str], batch: int, in_flight: int, progress: bool
) -> dict[str, Any]:
    import tritonclient.grpc.aio as grpcclient
    from tqdm import tqdm

    client = grpcclient.InferenceServerClient(settings.triton.url)

    def inputs(chunk: Sequence[str]) -> list[Any]:
        blank = [""] * len(chunk)
        return text_inputs(grpcclient, TITLE=chunk, DESCRIPTION=blank, BRAND=blank)

    async def infer(chunk: Sequence[str]) -> Any:
        return await client.infer(
            settings.triton.model_name,
            inputs(chunk),
            outputs=[grpcclient.InferRequestedOutput("RESULT")],
            client_timeout=max(60.0, settings.triton.timeout_s),
        )

    chunks = [titles[i : i + batch] for i in range(0, len(titles), batch)]
    try:
        # warm-up (not timed): one request per slot, so every code path and buffer exists
        await asyncio.gather(*(infer(chunks[i % len(chunks)]) for i in range(in_flight)))
        queue: asyncio.Queue[Sequence[str]] = asyncio.Queue()
        for c in chunks:
            queue.put_nowait(c)
        bar = tqdm(total=len(titles), unit="title", desc="(a) triton raw", disable=not progress, file=sys.stderr)
        latencies: list[float] = []

        async def slot() -> None:
            while not queue.empty():
                chunk = queue.get_nowait()
                t = time.perf_counter()
                res = await infer(chunk)
                latencies.append(time.perf_counter() - t)
                if len(res.as_numpy("RESULT").reshape(-1)) != len(chunk):
                    raise BenchError("Triton returned a wrong number of results")
                bar.update(len(chunk))

        t0 = time.perf_counter()
        await asyncio.gather(*(slot() for _ in range(in_flight)))
        elapsed = time.perf_counter() - t0
        bar.close()
    finally:
        await client.close()
    return {
        "titles": len(titles),
        "requests": len(chunks),
        "batch_size": batch,
        "in_flight": in_flight,
        "duration_s": round(elapsed, 3),
        "titles_per_s": round(len(titles) / elapsed, 1),
        "request_latency_ms_p50": round(percentile(latencies, 50) * 1000, 1),
    }


def triton_raw(settings: Settings, titles: Sequence[str], progress: bool = True) -> dict[str, Any]:
    """(a): the model alone, straight from an async gRPC client at the worker's batch size and in-flight count."""
    w = settings.worker
    return asyncio.run(_triton_raw(settings, titles, w.max_batch, w.max_in_flight, progress))


def served_model(settings: Settings) -> dict[str, Any]:
    """Name, served version(s) and batching config of the model, as Triton reports them."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(settings.triton.url)
    try:
        meta = client.get_model_metadata(settings.triton.model_name, as_json=True)
        cfg = client.get_model_config(settings.triton.model_name, as_json=True)["config"]
    finally:
        client.close()
    return {
        "name": meta["name"],
        "versions": meta.get("versions", []),
        "max_batch_size": cfg.get("max_batch_size"),
        "dynamic_batching": cfg.get("dynamic_batching", {}),
        "instance_group": cfg.get("instance_group", []),
    }


# ---------------------------------------------------------------- pipeline runs


def _redis(settings: Settings) -> Any:
    return connections.redis_sync(settings.redis, decode_responses=True)


def _count(r: Any, names: Sequence[str]) -> int:
    n = 0
    for i in range(0, len(names), 5000):
        n += int(r.exists(*names[i : i + 5000]))
    return n


def wait_in_redis(
    settings: Settings,
    item_ids: Sequence[str],
    workers: Sequence[WorkerProcess],
    timeout_s: float,
    desc: str,
    progress: bool,
    on_poll: Callable[[int], None] | None = None,
) -> float:
    """Wait until every item has a Redis hash; returns the monotonic time it was first seen complete. `on_poll` is
    called with the count seen at each poll."""
    from tqdm import tqdm

    names = [keys.listing(i) for i in item_ids]
    r = _redis(settings)
    bar = tqdm(total=len(names), unit="ev", desc=desc, disable=not progress, file=sys.stderr)

    def complete() -> bool:
        n = _count(r, names)
        bar.update(n - bar.n)
        if on_poll is not None:
            on_poll(n)
        dead = [w for w in workers if not w.alive()]
        if dead:
            raise BenchError(f"worker exited during {desc}; log {dead[0].log_path}:\n{dead[0].log_tail()}")
        return n >= len(names)

    try:
        poll(
            complete,
            timeout_s,
            f"{desc}: every event in Redis",
            interval=POLL_S,
            detail=lambda: workers[0].log_tail() if workers else "",
        )
        return time.monotonic()
    except TimeoutError as exc:
        raise BenchError(str(exc)) from None
    finally:
        bar.close()
        r.close()


def stored(settings: Settings, item_ids: Sequence[str]) -> list[dict[str, str]]:
    r = _redis(settings)
    try:
        out: list[dict[str, str]] = []
        for i in range(0, len(item_ids), 2000):
            pipe = r.pipeline(transaction=False)
            for iid in item_ids[i : i + 2000]:
                pipe.hmget(keys.listing(iid), "classified_at", "event_time", "model_version")
            for row in pipe.execute():
                out.append({"classified_at": row[0], "event_time": row[1], "model_version": row[2]})
        return out
    finally:
        r.close()


def written_ms(settings: Settings, source: str = "live") -> dict[str, int]:
    """item_id -> when Redis stored its `source` result (epoch ms): the id of its entry in the update stream, which
    Redis stamps as it writes. `classified_at` is stamped before the write, so latencies from it leave the Redis
    write out. An item written twice keeps its first write."""
    r = _redis(settings)
    try:
        out: dict[str, int] = {}
        start = "-"
        while True:
            entries = r.xrange(settings.redis.updates_stream, min=start, max="+", count=5000)
            for entry_id, fields in entries:  # (decoded: the bench's client decodes responses)
                if fields.get("source") == source:
                    out.setdefault(fields["item_id"], int(entry_id.split("-", 1)[0]))
            if len(entries) < 5000:
                return out
            start = "(" + entries[-1][0]
    finally:
        r.close()


def write_rate(rows: Sequence[dict[str, str]]) -> dict[str, Any]:
    """Events/s between the first and the last Redis write: the events written after the first write's
    millisecond, over the span to the last one (the first batch is the starting line, not counted)."""
    times = sorted(iso_ms(r["classified_at"]) for r in rows)
    first, last = times[0], times[-1]
    after_first = sum(1 for t in times if t > first)
    span_s = (last - first) / 1000
    return {
        "events": len(times),
        "write_span_s": round(span_s, 3),
        "distinct_write_ms": len(set(times)),
        "events_per_s": round(after_first / span_s, 1) if span_s > 0 else 0.0,
        "rate_method": "first-to-last Redis write (classified_at)",
    }


MIN_CPU_SPAN_S = 0.25  # /proc/stat counts in 10 ms ticks: a shorter window reads as (nearly) idle


def processing_cpu(
    first: tuple[int, float, CpuMark], total: int, t_done: float, done: CpuMark, start: tuple[float, CpuMark]
) -> dict[str, Any]:
    """The CPU of a saturation run while it processed (from the first poll that saw a Redis write to the last
    event): each role's share of all cores, and the core-milliseconds the whole machine spent per event then (what
    an event costs at full batches; the worker's start-up is left out). When that span is shorter than
    MIN_CPU_SPAN_S (a quick run's first poll can see nearly every event written) the CPU clock cannot time it: the
    whole run from `start` is measured instead, start-up included, and `window` says so."""
    seen, t_first, mark = first
    window = "processing"
    if t_done - t_first < MIN_CPU_SPAN_S:
        seen, (t_first, mark), window = 0, start, "whole run"
    shares = cpu_by_process(mark, done) or {}
    busy = busy_share(shares)
    events = total - seen
    span = t_done - t_first  # at least MIN_CPU_SPAN_S, or the whole run's
    cores = os.cpu_count() or 1
    return {
        "by_process": shares,
        "busy_share": round(busy, 3),
        "events": events,
        "span_s": round(span, 3),
        "window": window,
        "core_ms_per_event": round(busy * cores * span * 1000 / events, 3) if events > 0 else None,
    }


@dataclasses.dataclass
class Env:
    """What every pipeline run shares."""

    settings: Settings
    listings: list[dict[str, Any]]
    log_dir: Path
    progress: bool
    timeout_s: float
    keep: bool = False  # keep what the runs wrote (topics, groups, Redis items) instead of deleting it after each


def discard(env: Env, s: Settings, item_ids: Sequence[str], groups: Sequence[str]) -> None:
    """Delete what one run wrote once its figures are read (see `devtools.cleanup`), unless `env.keep`."""
    if env.keep:
        return
    from devtools.cleanup import drop_run, forget_items

    forget_items(s, item_ids)
    drop_run(s, groups)


def _start(env: Env, s: Settings, n: int, name: str, worker_env: dict[str, str]) -> list[WorkerProcess]:
    return [WorkerProcess(s, env.log_dir, name=f"{name}-{i}", **worker_env).start() for i in range(n)]


def _stop(workers: Sequence[WorkerProcess]) -> None:
    for w in workers:
        if w.proc is not None and w.alive():
            w.proc.terminate()
    for w in workers:
        w.stop(timeout=20)


def saturation_run(
    env: Env,
    name: str,
    events: int,
    *,
    workers: int = 1,
    preproduce: bool = True,
    worker_env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Throughput of `workers` worker processes in one group on an isolated topic set.

    `preproduce`: the backlog is in the topic before the worker starts (one worker: no rebalance to wait
    for). Otherwise the workers start on the empty topic, the run waits until the group is Stable with all
    of them, then produces the events as fast as it can (so joins and rebalances stay out of the figure)."""
    s = isolated(env.settings, f"bench-{name}")
    batch = tagged(env.listings, events, uuid.uuid4().hex[:6])
    ids = [e["item_id"] for e in batch]
    procs: list[WorkerProcess] = []
    extra = worker_env or {}
    try:
        if preproduce:
            summary = produce_listings(s, batch, progress=env.progress)
            if summary["failed"]:
                raise BenchError(f"produce failed: {summary['errors']}")
            t_start, mark = time.monotonic(), cpu_mark()
            procs = _start(env, s, workers, name, extra)
            joined_s = None
        else:
            procs = _start(env, s, workers, name, extra)
            joined_s = wait_group_stable(s, len(procs), JOIN_TIMEOUT_S, workers=procs)
            t_start, mark = time.monotonic(), cpu_mark()
            summary = produce_listings(s, batch, progress=env.progress)
            if summary["failed"]:
                raise BenchError(f"produce failed: {summary['errors']}")
        first: list[tuple[int, float, CpuMark]] = []  # (count, time, CPU) at the first poll that saw a write

        def on_poll(seen: int) -> None:
            if seen and not first:
                first.append((seen, time.monotonic(), cpu_mark()))

        t_done = wait_in_redis(s, ids, procs, env.timeout_s, f"{name} ({workers}w)", env.progress, on_poll)
        done_mark = cpu_mark()
        cpu = cpu_by_process(mark, done_mark)
        busy = processing_cpu(first[0], len(ids), t_done, done_mark, (t_start, mark)) if first else None
    finally:
        _stop(procs)
    rows = stored(s, ids)
    discard(env, s, ids, [s.worker.group_id])
    out = write_rate(rows)
    if out["distinct_write_ms"] < MIN_WRITES:  # too few batches for a span: time to all in Redis instead
        out["events_per_s"] = round(len(ids) / max(1e-3, t_done - t_start), 1)
        out["rate_method"] = "events / time to all in Redis (too few batches for a write span)"
    out.update(
        {
            "workers": workers,
            "input_topic": s.topics.input,
            "partitions": s.topics.partitions,
            "preproduced": preproduce,
            "time_to_all_in_redis_s": round(t_done - t_start, 2),
            "produce_rate": summary["rate"],
            "model_versions": sorted({r["model_version"] for r in rows if r["model_version"]}),
            "cpu_by_process": cpu,
        }
    )
    if busy is not None:
        out["processing_cpu"] = busy
    if joined_s is not None:
        out["group_join_s"] = round(joined_s, 2)
    if extra:
        out["worker_env"] = extra
    return out


class BackfillProcess:
    """`listings backfill` (priority 2, governed) over a topic of `backlog` listings, as its own process, the way
    it runs in production: its CPU and GIL are not the bench's (the bench produces the live load and stamps its
    event times). It shares the live worker's update stream, as a production backfill does, so its governor sees
    the live latency."""

    def __init__(self, env: Env, backlog: int, live: Settings) -> None:
        settings = isolated(env.settings, "bench-backfill").replace(redis={"updates_stream": live.redis.updates_stream})
        rows = tagged(env.listings, backlog, uuid.uuid4().hex[:6])
        produce_listings(settings, rows, progress=False)
        self.ids = [r["item_id"] for r in rows]
        self.keys = [keys.listing(i) for i in self.ids]
        self.out: dict[str, Any] = {"backlog": backlog, "governor": settings.backfill.governor}
        self.settings, self.group = settings, f"{settings.worker.group_id}-bf"
        self.process = WorkerProcess(
            settings,
            env.log_dir,
            "backfill",
            args=["backfill", "--from-beginning", "--group", self.group, "--json"],
            capture_stdout=True,
        )
        self.started = 0.0

    def done(self) -> int:
        """How many of its listings have a result in Redis now."""
        r = _redis(self.settings)
        try:
            return _count(r, self.keys)
        finally:
            r.close()

    def start(self, timeout_s: float) -> None:
        """Start the process and wait until its first results are in Redis: its start-up (imports, the plan, the
        group join) is a CPU burst no governor can steer, and in production it runs in a pod of its own."""
        self.started = time.monotonic()
        self.process.start()
        r = _redis(self.settings)
        try:

            def first_results() -> bool:
                if not self.process.alive():
                    raise BenchError(f"backfill exited at start; log {self.process.log_path}")
                return _count(r, self.keys) > 0

            poll(first_results, timeout_s, "the backfill's first results", interval=0.2)
        except TimeoutError as exc:
            raise BenchError(str(exc)) from None
        finally:
            r.close()
        self.out["startup_s"] = round(time.monotonic() - self.started, 1)

    def finish(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the run to end; its summary (`--json`) joins the figures."""
        proc, log = self.process.proc, self.process.log_path
        assert proc is not None
        try:
            stdout, _ = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise BenchError(f"backfill did not finish in {timeout_s:.0f}s; log {log}") from None
        if proc.returncode != 0:
            raise BenchError(f"backfill exited with {proc.returncode}; log {log}")
        summary = orjson.loads(stdout.strip().splitlines()[-1])
        self.out.update(
            {
                "backfill_events": summary["events"],
                "backfill_s": round(time.monotonic() - self.started, 1),
                "backfill_yielded_s": round(summary["yielded_s"], 1),
                "backfill_timeline": summary.get("timeline", []),
            }
        )
        return self.out


def stage_breakdown(path: Path, since_ms: float = 0.0) -> dict[str, Any]:
    """Per-stage p50/p99 (ms) of the batches the worker recorded (LISTINGS_TIMINGS_FILE) and dispatched at or after
    `since_ms` (epoch ms); per-event stages use each batch's slowest event."""
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()] if path.exists() else []
    rows = [r for r in rows if r.get("at_ms", since_ms) >= since_ms]
    stages: dict[str, list[float]] = {}
    for r in rows:
        for k, v in {**r.get("stages", {}), **r.get("event_stages_max", {})}.items():
            stages.setdefault(k, []).append(v * 1000)
    order = [*EVENT_STAGES, *BATCH_STAGES]
    return {
        "batches": len(rows),
        "mean_batch_events": round(sum(r["events"] for r in rows) / len(rows), 1) if rows else 0,
        "stages_ms": {
            k: {
                "p50": round(percentile(stages[k], 50), 2),
                "p99": round(percentile(stages[k], 99), 2),
                "mean": round(sum(stages[k]) / len(stages[k]), 2),
            }
            for k in order
            if stages.get(k)
        },
    }


def redis_forks(s: Settings) -> int:
    """How many times Redis has forked (AOF rewrites, snapshots) since it started."""
    r = _redis(s)
    try:
        return int(r.info("stats").get("total_forks", 0))
    finally:
        r.close()


def latency_run(env: Env, rate: float, events: int, backfill_backlog: int = 0, ramp_s: float = 0.0) -> dict[str, Any]:
    """(d): one worker, caught up, fed `events` at `rate` events/s with `listed_at` stamped at send;
    latency per event = when Redis stored the result (its update-stream entry) - `event_time`; the worker records
    every batch's stages. With
    `backfill_backlog`, a governed backfill of that many listings (Triton priority 2) runs during the live phase:
    it is started first, and the live phase begins once its first results are in Redis.

    The live phase opens with a ramp: `ramp_s` seconds of events at the same rate, sent before the measured
    `events` in one stream and measured apart (`ramp_*`): the figures, the stage breakdown, the CPU shares and
    the backfill's rate are those of the steady state after it. Traffic that starts from nothing pays a transient
    (the worker's first batches after an idle spell; with a backfill, also the governor's reaction to live traffic
    it has not seen yet) that a live stream which never stops does not, and in a 40 s phase its ~0.6-0.9 s held
    more than 1% of the events: it alone set the phase's p99."""
    s = isolated(env.settings, "bench-latency")
    tag = uuid.uuid4().hex[:6]
    warm = tagged(env.listings, max(8, env.settings.worker.max_batch), f"{tag}w")
    ramp_n = round(rate * ramp_s)
    batch = tagged(env.listings[len(warm) :] or env.listings, ramp_n + events, tag)
    ids = [e["item_id"] for e in batch]
    timings = env.log_dir / f"timings-{tag}.jsonl"
    procs = _start(env, s, 1, "latency", {"LISTINGS_TIMINGS_FILE": str(timings)})
    backfill_out: dict[str, Any] = {}
    backfill: BackfillProcess | None = None
    try:
        wait_group_stable(s, len(procs), JOIN_TIMEOUT_S, workers=procs)
        produce_listings(s, warm, progress=False)
        wait_in_redis(s, [e["item_id"] for e in warm], procs, env.timeout_s, "(d) warm-up", False)
        timings.write_bytes(b"")  # the warm-up's batches are not part of the breakdown
        backfill = BackfillProcess(env, backfill_backlog, s) if backfill_backlog else None
        if backfill is not None:
            backfill.start(JOIN_TIMEOUT_S)
        steady: dict[str, Any] = {}  # where the measured window begins: time, CPU mark, backfill results so far

        def ramp_done() -> None:
            steady.update(t=time.monotonic(), ms=time.time() * 1000, cpu=cpu_mark())
            steady["done"] = backfill.done() if backfill is not None else 0

        forks = redis_forks(s)
        timer = threading.Timer(ramp_s, ramp_done)  # the producer paces the ramp's events over its first ramp_s
        timer.start()
        try:
            summary = produce_listings(s, batch, rate=rate, progress=env.progress)
        except BaseException:
            timer.cancel()
            raise
        if summary["failed"]:
            raise BenchError(f"produce failed: {summary['errors']}")
        wait_in_redis(s, ids, procs, env.timeout_s, "(d) drain", env.progress)
        # read the update stream now: the backfill, which shares it, would go on adding entries until its backlog is
        # written, and past LISTINGS_UPDATES_MAXLEN the oldest live entries are trimmed (a third of the committed
        # 12-06 16:31Z run's (d') events fell back to classified_at, which leaves the Redis write out)
        written = written_ms(s)
        timer.join()
        live_s = time.monotonic() - steady["t"]
        cpu = cpu_by_process(steady["cpu"], cpu_mark())
        forks = redis_forks(s) - forks
        if backfill is not None:
            done = backfill.done()
            backfill_out = backfill.finish(env.timeout_s)
            backfill_out.update(
                {
                    "backfill_during_live": done - steady["done"],
                    "backfill_rate_during_live": round((done - steady["done"]) / live_s, 1),
                    "live_s": round(live_s, 1),
                }
            )
    finally:
        if backfill is not None:
            backfill.process.stop(20)
        _stop(procs)
    rows = stored(s, ids)
    discard(env, s, [*ids, *(e["item_id"] for e in warm)], [s.worker.group_id])
    if backfill is not None:
        discard(env, backfill.settings, backfill.ids, [backfill.group])
    # produce -> Redis write, in send order: the stream entry's time (an item missing from the stream, trimmed by
    # LISTINGS_UPDATES_MAXLEN, falls back to `classified_at`, stamped just before the write: counted below)
    every = [
        written.get(iid, iso_ms(r["classified_at"])) - iso_ms(r["event_time"]) for iid, r in zip(ids, rows, strict=True)
    ]
    untimed = sum(iid not in written for iid in ids[ramp_n:])  # of the measured events (the ramp is apart)
    ramp, lat = every[:ramp_n], every[ramp_n:]
    return {
        "events": len(lat),
        "ramp_s": ramp_s,
        "ramp_events": len(ramp),
        "ramp_p99_ms": round(percentile(ramp, 99), 1) if ramp else None,
        "ramp_max_ms": round(max(ramp), 1) if ramp else None,
        "target_rate": round(rate, 1),
        "achieved_produce_rate": summary["rate"],
        "p50_ms": round(percentile(lat, 50), 1),
        "p95_ms": round(percentile(lat, 95), 1),
        "p99_ms": round(percentile(lat, 99), 1),
        "max_ms": round(max(lat), 1),
        "mean_ms": round(sum(lat) / len(lat), 1),
        "latencies_ms": [round(x, 1) for x in lat],
        "latency_to": "Redis write (update-stream entry)",
        "timed_by_classified_at": untimed,
        "breakdown": stage_breakdown(timings, since_ms=steady["ms"]),
        "cpu_by_process": cpu,
        # Redis forks (append-only-file rewrites) while the events were in flight: each is a burst of CPU on a
        # machine Redis shares
        "redis_forks": forks,
        **backfill_out,
    }
