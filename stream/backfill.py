"""`listings backfill`: replay a range of a listings topic through the same pipeline as the live worker.

It runs under a consumer group of its own (derived from its arguments, so a restart with the same
arguments resumes from the offsets it committed), resolves start offsets from a timestamp
(`offsets_for_times`), and stops by itself at the end offsets it saw when the run was first planned (the
plan is kept in Redis under `backfill:plan:{group}`, with the topic, range and model version it was made for: a
run whose arguments differ is refused rather than replaying another run's plan). Its Triton requests use the lower
priority level and its outputs carry `source: backfill`; the Redis rule keeps it from overwriting newer results."""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import math
import signal
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

import orjson

from stream import connections, cpu_priority, keys
from stream.config import Settings
from stream.events.contract import MAX_EPOCH_MS
from stream.pipeline.process import BatchStats
from stream.timefmt import iso

HELP = "replay a topic range through the pipeline under its own group"
TIMELINE_S = 2.0  # the summary's timeline has one point this often


def parse_time(text: str) -> int:
    """An ISO-8601 time or epoch milliseconds, as epoch milliseconds, from 1970 to 9999 (Kafka's timestamps; an
    earlier time made kafka-python's offsets_for_times raise)."""
    if text.isascii() and text.isdigit():
        ms = int(text)
        if ms > MAX_EPOCH_MS:
            raise argparse.ArgumentTypeError(f"{text!r} is past the year 9999 as epoch milliseconds (µs or ns?)")
        return ms
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time: give ISO-8601 with a zone (2026-11-01T00:00:00Z) or epoch milliseconds"
        ) from None
    if dt.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give a timezone (e.g. Z) or epoch milliseconds")
    ms = math.floor(dt.timestamp() * 1000)
    if ms < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is before 1970-01-01T00:00:00Z: Kafka holds no earlier time")
    if ms > MAX_EPOCH_MS:
        raise argparse.ArgumentTypeError(f"{text!r} is past the year 9999")
    return ms


@dataclass(frozen=True)
class BackfillOptions:
    """What to replay and how. `since_ms`/`until_ms` are epoch ms; no `since_ms` = from the beginning."""

    since_ms: int | None = None
    until_ms: int | None = None
    topic: str | None = None  # default: the input topic
    model_version: str = ""  # "" = the version Triton serves
    follows_live: bool = False  # model_version was read from the live record (not --model-version): watched
    rate: float = 0.0  # events/s ceiling, 0 = unlimited
    group: str | None = None  # default: derived from the options
    progress: bool = True
    governor: bool | None = None  # None: LISTINGS_BACKFILL_GOVERNOR

    def __post_init__(self) -> None:
        if not math.isfinite(self.rate) or self.rate < 0:
            raise ValueError(f"backfill rate must be a finite number >= 0 (0: unlimited), got {self.rate}")


@dataclass(frozen=True)
class PlanFor:
    """What a plan replays: the topic, the range (epoch ms; None: from the beginning / to the end then) and the
    model version ("" = Triton's newest)."""

    topic: str
    since_ms: int | None
    until_ms: int | None
    model_version: str

    def describe(self) -> str:
        since = "--from-beginning" if self.since_ms is None else f"--since {iso(self.since_ms)}"
        until = "" if self.until_ms is None else f" --until {iso(self.until_ms)}"
        return f"topic {self.topic}, {since}{until}, model version {self.model_version or '(newest)'}"


class PlanMismatch(Exception):
    """The group's stored plan was made for other arguments: resuming it would replay another range."""


@dataclass(frozen=True)
class Plan:
    topic: str
    start: dict[int, int]  # partition -> first offset of the range
    end: dict[int, int]  # partition -> offset the run stops at (exclusive)
    made_for: PlanFor | None = None  # None: a plan stored before this was recorded (only its topic is known)

    def to_json(self) -> bytes:
        doc: dict[str, Any] = {"topic": self.topic, "start": self.start, "end": self.end}
        if self.made_for is not None:
            doc["made_for"] = {f.name: getattr(self.made_for, f.name) for f in fields(self.made_for)}
        return orjson.dumps(doc, option=orjson.OPT_NON_STR_KEYS)

    @classmethod
    def from_json(cls, raw: bytes) -> Plan:
        d = orjson.loads(raw)
        made_for = PlanFor(**d["made_for"]) if "made_for" in d else None
        start = {int(k): v for k, v in d["start"].items()}
        return cls(d["topic"], start, {int(k): v for k, v in d["end"].items()}, made_for)

    def mismatch(self, wanted: PlanFor) -> str:
        """How this plan differs from what a run asks for ("" = it is that run's plan)."""
        if self.made_for is None:  # an older plan: its topic is all there is to check
            if self.topic == wanted.topic:
                return ""
            return f"topic {self.topic}, not topic {wanted.topic}"
        if self.made_for == wanted:
            return ""
        return f"{self.made_for.describe()}; this run asks for {wanted.describe()}"


@dataclass
class Summary(BatchStats):
    """The run's counts (events, classified, dlq, review, stale, unchanged, tag_updates) and where it ran."""

    group: str = ""
    topic: str = ""
    resumed_from_committed: bool = False
    duration_s: float = 0.0
    yielded_s: float = 0.0  # time the governor held the backfill back for live traffic
    stopped_by: str = ""  # the signal that stopped the run before its planned end ("" = it reached the end)
    # every TIMELINE_S: seconds since start, events done, and the governor's rate / live latency / yielding
    timeline: list[dict[str, Any]] = field(default_factory=list)
    already_complete: bool = False  # the group's plan was done already (an earlier run processed all of it)
    # the live version promoted (or rolled back to) during a run that followed the live record: it stopped
    live_changed_to: str = ""

    def to_json(self) -> bytes:
        # not dataclasses.asdict: it rebuilds the `statuses` Counter from (key, value) pairs, counting the pairs
        doc = {f.name: getattr(self, f.name) for f in fields(self)}
        doc["statuses"] = dict(self.statuses)
        return orjson.dumps(doc)


def kafka_retriable(exc: BaseException) -> bool:
    """A kafka-python failure that passes (a timeout, a lost connection, a moving coordinator): retried."""
    from kafka import errors as kerr

    if isinstance(exc, kerr.KafkaError):
        return bool(getattr(exc, "retriable", False)) or isinstance(
            exc, kerr.KafkaTimeoutError | kerr.KafkaConnectionError
        )
    return isinstance(exc, OSError)


LIVE_CHANGED_EXIT = 3  # stopped because the live version changed under a run that followed it
LIVE_CHECK_S = 2.0  # how often a run that follows the live record re-reads it (as workers do)


def exit_code(stopped_by: str, live_changed: bool = False) -> int:
    """0 for a run that reached its end; 128 + the signal's number for one a signal stopped (143 for SIGTERM); 3
    for one stopped because the live version changed."""
    if stopped_by:
        return 128 + signal.Signals[stopped_by].value
    return LIVE_CHANGED_EXIT if live_changed else 0


class Stop:
    """A graceful stop: the first SIGTERM or SIGINT stops fetching, lets the batches in flight go through their
    sinks and commits them (a rerun with the same arguments then redoes nothing); a second one cancels the run
    (the batches in flight are redone by the rerun: at-least-once, as after a kill), and so does the first after
    `timeout_s` (LISTINGS_SHUTDOWN_TIMEOUT_S from the CLI) if those batches have not finished by then."""

    def __init__(self, timeout_s: float = 0.0) -> None:
        self.requested = asyncio.Event()
        self.signal = ""
        self.timeout_s = timeout_s  # > 0: a stop whose batches in flight have not finished by then stops at once
        self.outran = False
        self._task: asyncio.Task[Any] | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        self._task = asyncio.current_task()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)

    def uninstall(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        if self.requested.is_set() and self._task is not None:
            self._task.cancel()  # the second signal: stop now
            return
        self.signal = sig.name
        self.request(f"{sig.name}: finishing the batches in flight (again to stop at once)")

    def request(self, why: str) -> None:
        """Stop fetching and finish what is in flight, as a first signal does (a signal also sets `signal`)."""
        if self.requested.is_set():
            return
        self.requested.set()
        print(f"backfill: {why}", file=sys.stderr)
        if self.timeout_s > 0 and self._task is not None:
            asyncio.get_running_loop().call_later(self.timeout_s, self._outrun)

    def _outrun(self) -> None:
        """The batches in flight did not finish in time (e.g. a dependency is down and they are being retried):
        stop now, as a second signal would."""
        if self._task is not None and not self._task.done():
            self.outran = True
            print(
                f"backfill: the batches in flight did not finish within LISTINGS_SHUTDOWN_TIMEOUT_S "
                f"({self.timeout_s:g} s): stopping now",
                file=sys.stderr,
            )
            self._task.cancel()

    async def unless_requested(self, work: Any) -> bool:
        """Await `work` (a coroutine) unless a stop comes first (then it is cancelled): True if it completed."""
        if self.requested.is_set():
            work.close()
            return False
        task = asyncio.ensure_future(work)
        stopped = asyncio.ensure_future(self.requested.wait())
        try:
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
        if task.done():
            task.result()
            return True
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        return False


def default_group(options: BackfillOptions, topic: str) -> str:
    """Same options, same group: a rerun resumes from the group's commits."""
    since = options.since_ms if options.since_ms is not None else "beginning"
    ident = f"{topic}|{since}|{options.until_ms}|{options.model_version}"
    if options.follows_live:  # apart from a --model-version run of the same version: "promote N, then backfill"
        ident += "|live"  # after trying N with --model-version must re-classify what v(N-1) did since
    return f"listings-backfill-{hashlib.sha256(ident.encode()).hexdigest()[:10]}"


def stored_plan(raw: bytes | None, group: str, wanted: PlanFor) -> Plan | None:
    """The group's plan from Redis (None: there is none yet). PlanMismatch when it was made for other arguments
    (reused, it replayed the old range, at the old topic's offsets)."""
    if raw is None:
        return None
    plan = Plan.from_json(raw)
    why = plan.mismatch(wanted)
    if why:
        raise PlanMismatch(
            f"group {group} holds the plan of another run ({why}): give another --group, or leave --group out "
            "(each topic, range and model version gets a group of its own)"
        )
    return plan


def make_plan(consumer: Any, wanted: PlanFor) -> Plan:
    from kafka import TopicPartition

    topic, since_ms, until_ms = wanted.topic, wanted.since_ms, wanted.until_ms
    parts = sorted(consumer.partitions_for_topic(topic) or [])
    if not parts:
        raise SystemExit(f"backfill: topic {topic!r} does not exist or has no partitions")
    tps = [TopicPartition(topic, p) for p in parts]
    begin = consumer.beginning_offsets(tps)
    end = consumer.end_offsets(tps)

    def at(ms: int | None, default: dict[Any, int]) -> dict[int, int]:
        if ms is None:
            return {tp.partition: default[tp] for tp in tps}
        found = consumer.offsets_for_times({tp: ms for tp in tps})
        return {tp.partition: (found[tp].offset if found.get(tp) else end[tp]) for tp in tps}

    start = at(since_ms, begin)
    stop = at(until_ms, end)
    stop = {p: min(stop[p], end[TopicPartition(topic, p)]) for p in stop}
    return Plan(topic, start, {p: max(stop[p], start[p]) for p in stop}, wanted)


class OffsetProgress:
    """The progress bar in offsets, the unit of its total (the plan's end - start): each committed batch advances
    its partitions to their committed offsets (on a compacted topic a batch spans more offsets than records), and a
    partition whose records are all fetched and done is advanced to its planned end (the offsets compacted away
    after its last record)."""

    def __init__(self, bar: Any, position: dict[Any, int], end: dict[Any, int]) -> None:
        self.bar = bar
        self.end = dict(end)
        self.done = dict(position)  # partition -> offsets up to here are done
        self.fetched = dict(position)  # partition -> offsets up to here were fetched
        self.finished: set[Any] = set()  # every record of the partition's plan was fetched

    def fetch(self, tp: Any, offset: int) -> None:
        """Records up to `offset` (exclusive) of `tp` were fetched."""
        self.fetched[tp] = max(self.fetched[tp], offset)

    def finish(self, tp: Any) -> None:
        """Every record of `tp` before its planned end was fetched."""
        self.finished.add(tp)
        self._advance(tp, self.done[tp])

    def commit(self, offsets: dict[Any, int]) -> None:
        """A batch finished: its partitions are done up to `offsets`."""
        for tp, offset in offsets.items():
            self._advance(tp, offset)

    def _advance(self, tp: Any, offset: int) -> None:
        if tp in self.finished and offset >= self.fetched[tp]:
            offset = max(offset, self.end[tp])
        if offset > self.done[tp]:
            self.bar.update(offset - self.done[tp])
            self.done[tp] = offset


async def backfill(settings: Settings, options: BackfillOptions, stop: Stop | None = None) -> Summary:
    """Run the replay to the plan's end, or until `stop` is requested (then what is in flight is finished and
    committed first, and `Summary.stopped_by` names the signal)."""
    from kafka import KafkaConsumer, OffsetAndMetadata, TopicPartition
    from tqdm import tqdm

    from stream import health
    from stream.classify.triton_client import BACKFILL_PRIORITY
    from stream.pipeline.conveyor import Conveyor
    from stream.pipeline.process import Pipeline
    from stream.pipeline.records import InRecord, kafka_time_ms
    from stream.retry import retry_forever

    topic = options.topic or settings.topics.input
    if not options.model_version:  # re-classify with the live version (the one `listings promote` recorded)
        options = replace(options, model_version=model_version_to_use(settings, ""), follows_live=True)
    group = options.group or default_group(options, topic)
    batch_size = settings.backfill.max_batch
    started = time.monotonic()
    summary = Summary(group=group, topic=topic)
    wanted = PlanFor(topic, options.since_ms, options.until_ms, options.model_version)

    kafka_thread = ThreadPoolExecutor(1, thread_name_prefix="backfill-consumer")  # kafka-python is not thread-safe
    loop = asyncio.get_running_loop()

    def on_consumer(fn: Any, *a: Any, **kw: Any) -> Any:
        return loop.run_in_executor(kafka_thread, lambda: fn(*a, **kw))

    r = connections.redis_sync(settings.redis)
    try:
        plan = stored_plan(r.get(keys.backfill_plan(group)), group, wanted)  # a mismatch: before Kafka is touched
        reused = plan is not None
        consumer = KafkaConsumer(
            **connections.kafka(settings.kafka),
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            key_deserializer=None,
            value_deserializer=None,
            max_poll_records=batch_size,
        )
        if plan is None:
            plan = await on_consumer(make_plan, consumer, wanted)
            r.set(keys.backfill_plan(group), plan.to_json())
    finally:
        r.close()

    tps = [TopicPartition(topic, p) for p in plan.start]
    committed = {tp: await on_consumer(consumer.committed, tp) for tp in tps}
    position = {}
    for tp in tps:
        c = committed[tp]
        summary.resumed_from_committed |= c is not None and c > plan.start[tp.partition]
        position[tp] = max(plan.start[tp.partition], c or 0)
    consumer.assign([tp for tp in tps if position[tp] < plan.end[tp.partition]])
    for tp in consumer.assignment():
        consumer.seek(tp, position[tp])
    summary.already_complete = reused and not consumer.assignment()
    total = sum(plan.end[tp.partition] - plan.start[tp.partition] for tp in tps)
    done_before = sum(min(position[tp], plan.end[tp.partition]) - plan.start[tp.partition] for tp in tps)
    bar = tqdm(
        total=total,
        initial=done_before,
        unit="offset",
        desc=f"backfill {topic}",
        disable=not options.progress,
        smoothing=0.1,
    )
    progress = OffsetProgress(
        bar,
        {tp: min(position[tp], plan.end[tp.partition]) for tp in tps},
        {tp: plan.end[tp.partition] for tp in tps},
    )

    pipeline = Pipeline.from_settings(
        settings,
        source="backfill",
        priority=BACKFILL_PRIORITY,
        model_version=options.model_version,
        serve_from=settings.backfill.serve_from(settings.triton.model_name),
    )
    await pipeline.start()

    completed = 0

    async def done(offsets: dict[Any, int], stats: BatchStats) -> None:
        nonlocal completed
        commits = {tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()}
        # a broker blip (kafka-python gives up after its request timeout) is retried, not the end of the run
        await retry_forever(
            "backfill commit",
            lambda: on_consumer(consumer.commit, commits),
            retryable=kafka_retriable,
            on_retry=health.on_retry("kafka"),
        )
        progress.commit(offsets)
        completed += stats.events

    conveyor = Conveyor(pipeline, settings.backfill.max_in_flight, done)
    conveyor.start()
    remaining = set(consumer.assignment())
    rate = options.rate
    sent = 0
    pace_start = time.monotonic()
    governed = settings.backfill.governor if options.governor is None else options.governor
    governor = None
    if governed:
        from stream.governor import Governor

        governor = Governor(
            pipeline.store.client,
            settings.redis.updates_stream,
            settings.backfill.live_target_ms,
            tolerance=settings.backfill.live_tolerance,
            percentile=settings.backfill.live_percentile,
            min_rate=settings.backfill.min_rate,
            max_rate=rate,
            step=settings.backfill.rate_step,
        )
    next_point = started
    stop = stop or Stop()
    watch = (
        asyncio.ensure_future(_watch_live(pipeline.store.client, settings, options.model_version, stop, summary))
        if options.follows_live and options.model_version
        else None
    )

    def point(now: float) -> None:
        p: dict[str, Any] = {"t": round(now - started, 1), "events": completed}
        if governor is not None:
            p.update(rate=round(governor.rate, 1), yielding=governor.yielding, probing=governor.probing)
            p["live_ms"] = None if governor.live_ms is None else round(governor.live_ms)
            p["target_ms"] = None if governor.target is None else round(governor.target)
            p["overload_rate"] = None if governor.overload_rate is None else round(governor.overload_rate, 1)
        summary.timeline.append(p)

    try:
        stopped = False  # by a signal, with events of the plan left (fetched or not): they stay uncommitted
        while remaining:
            if stop.requested.is_set():
                stopped = True
                break
            now = time.monotonic()
            if now >= next_point:
                point(now)
                next_point = now + TIMELINE_S
            polled = await on_consumer(consumer.poll, timeout_ms=500, max_records=batch_size)
            polled_ms = time.time() * 1000
            batch: list[InRecord] = []
            offsets: dict[Any, int] = {}
            for tp, msgs in polled.items():
                end = plan.end[tp.partition]
                for m in msgs:
                    if m.offset >= end:
                        break
                    batch.append(
                        InRecord(m.topic, m.partition, m.offset, m.key, m.value, kafka_time_ms(m.timestamp), polled_ms)
                    )
                    offsets[tp] = m.offset + 1
                    progress.fetch(tp, m.offset + 1)
            for tp in list(remaining):  # past the planned end: this partition is done
                if await on_consumer(consumer.position, tp) >= plan.end[tp.partition]:
                    remaining.discard(tp)
                    await on_consumer(consumer.pause, tp)
                    progress.finish(tp)
            if not batch:
                continue
            # a batch fetched but not admitted before a stop is not processed: its offsets stay uncommitted
            if governor is not None:
                admitted = await stop.unless_requested(governor.admit(len(batch)))
                bar.set_postfix_str(governor.status(), refresh=False)
                summary.yielded_s = governor.paused_s
                if not admitted:
                    stopped = True
                    break
            elif rate > 0:
                sent += len(batch)
                ahead = sent / rate - (time.monotonic() - pace_start)
                if ahead > 0 and not await stop.unless_requested(asyncio.sleep(ahead)):
                    stopped = True
                    break
            await conveyor.submit(batch, offsets)
        await conveyor.drain()
        summary.stopped_by = stop.signal if stopped else ""  # a signal during the last drain stopped nothing
        if not stopped:
            summary.live_changed_to = ""  # (nor did a promotion: the run reached its end)
        point(time.monotonic())
    finally:
        if watch is not None:
            watch.cancel()
        await conveyor.cancel()
        await pipeline.stop()
        bar.close()
        await on_consumer(consumer.close)
        kafka_thread.shutdown()
    summary.add(conveyor.stats)
    summary.duration_s = round(time.monotonic() - started, 3)
    return summary


async def _watch_live(client: Any, settings: Settings, version: str, stop: Stop, summary: Summary) -> None:
    """A run that re-classifies with the live version stops when another version is made live (a promotion or a
    rollback): going on would write the replaced version's answers, which the newer-model rule then keeps even
    against the live workers' (after a rollback, for good)."""
    from stream.models import live_key
    from stream.sinks.redis_store import redis_outage

    while not stop.requested.is_set():
        await asyncio.sleep(LIVE_CHECK_S)
        try:
            raw = await client.hget(live_key(settings.triton.model_name), "version")
        except Exception as exc:
            if redis_outage(exc):
                continue  # the backfill's own writes wait for Redis too
            raise
        now = raw.decode() if raw else ""
        if now and now != version:
            summary.live_changed_to = now
            stop.request(
                f"the live version changed from {version} to {now}: finishing the batches in flight, then stopping"
            )
            return


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stream.cli import events_per_s

    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--since", type=parse_time, help="start at this time (ISO-8601 with zone, or epoch ms)")
    where.add_argument("--from-beginning", action="store_true", help="start at the earliest retained offset")
    parser.add_argument("--until", type=parse_time, default=None, help="stop at this time (default: the end now)")
    parser.add_argument("--topic", default=None, help="topic of listing events (default: the input topic)")
    parser.add_argument(
        "--model-version",
        default=None,
        help="Triton model version to use (default: the live one, see `listings models`)",
    )
    parser.add_argument("--rate", type=events_per_s("unlimited"), default=0.0, help="max events/s (0 = unlimited)")
    parser.add_argument(
        "--governor",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="yield to live traffic (default LISTINGS_BACKFILL_GOVERNOR, on)",
    )
    parser.add_argument("--group", default=None, help="consumer group (default: derived from the arguments)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON, no progress bar")


def model_version_to_use(settings: Settings, pinned: str) -> str:
    """`--model-version`, else the live record (`listings promote`); "" without either: Triton's newest."""
    if pinned:
        return pinned
    from stream.models import read_live

    r = connections.redis_sync(settings.redis)
    try:
        return read_live(r, settings.triton.model_name).version
    finally:
        r.close()


def options_from(args: argparse.Namespace) -> BackfillOptions:
    return BackfillOptions(
        since_ms=None if args.from_beginning else args.since,
        until_ms=args.until,
        topic=args.topic,
        model_version=args.model_version or "",
        rate=args.rate,
        group=args.group,
        progress=not args.json,
        governor=args.governor,
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from stream import logs, preflight

    if args.until is not None and args.since is not None and not args.from_beginning and args.until <= args.since:
        print("listings backfill: --until is not after --since: the range is empty", file=sys.stderr)
        return 2
    logs.setup("WARNING", quiet=True)
    cpu_priority.lower(settings.backfill.nice)  # the kernel serves a live worker on the same host first
    preflight.one_shot(settings)
    # checked once at the start (a version that goes away later is retried like an outage), and resolved here so
    # that the run does not read the live record again
    from stream.models import unserved

    options = options_from(args)
    version = model_version_to_use(settings, options.model_version)
    why = unserved(settings, version) if version else ""  # no version at all: Triton's newest
    if why:
        which = "--model-version" if options.model_version else "the live record (listings promote)"
        print(f"listings backfill: {why} ({which})", file=sys.stderr)
        return 2
    options = replace(options, model_version=version, follows_live=not options.model_version)
    stop = Stop(settings.worker.shutdown_timeout_s)

    async def main() -> Summary:
        loop = asyncio.get_running_loop()
        stop.install(loop)
        try:
            return await backfill(settings, options, stop)
        finally:
            stop.uninstall(loop)

    try:
        summary = asyncio.run(main())
    except asyncio.CancelledError:  # a second signal: stopped without finishing what was in flight
        print("backfill: stopped at once; a rerun with the same arguments redoes what was in flight", file=sys.stderr)
        return exit_code(stop.signal)
    except PlanMismatch as exc:
        print(f"listings backfill: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(summary.to_json().decode())
    elif summary.already_complete:
        print(
            f"backfill {summary.topic} (group {summary.group}): already complete, an earlier run processed its whole "
            "range; nothing done (to replay it again, give another --group)",
            file=sys.stdout,
        )
    else:
        print(
            f"backfill {summary.topic} (group {summary.group}): {summary.events} events, "
            f"{summary.classified} classified, {summary.dlq} to DLQ, {summary.review} to review, "
            f"{summary.stale} not applied (newer result stored), {summary.unchanged} unchanged, "
            f"{summary.tag_updates} tag updates, "
            f"{summary.duration_s:.1f}s"
            + (f" ({summary.yielded_s:.1f}s of it yielding to live traffic)" if summary.yielded_s else ""),
            file=sys.stdout,
        )
        if summary.stopped_by:
            print(f"stopped by {summary.stopped_by} before the end: run the same command to resume", file=sys.stdout)
    if summary.live_changed_to and not summary.stopped_by:
        print(
            f"stopped before the end: the live version changed from {options.model_version} to "
            f"{summary.live_changed_to}; what v{options.model_version} wrote stays (README, Model lifecycle); "
            f"run the backfill again to re-classify with v{summary.live_changed_to}",
            file=sys.stderr,
        )
    # stopped early: not a success (a Kubernetes Job with restartPolicy OnFailure starts it again, and it resumes)
    return exit_code(summary.stopped_by, bool(summary.live_changed_to))
