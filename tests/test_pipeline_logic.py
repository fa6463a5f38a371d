"""Pure logic of one batch through the pipeline, with a fake classifier (no Triton behaviour is claimed)."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from tritonclient.utils import InferenceServerException

from stream.classify.triton_client import BatchResult, Classification
from stream.config import Settings
from stream.pipeline.process import Pipeline
from stream.pipeline.records import InRecord, path_field, stored_path
from stream.timefmt import iso_ms


class RejectsPoison:
    """Refuses any request that contains a title with POISON, like a model raising INVALID_ARG would."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    async def classify(self, titles: list[str], descriptions: list[str], brands: list[str]) -> BatchResult:
        self.calls.append(len(titles))
        if any("POISON" in t for t in titles):
            raise InferenceServerException("refused", status="StatusCode.INVALID_ARGUMENT")
        one = Classification({"id": "c", "name": "c", "path": ["c"]}, 0.9, [], [])
        return BatchResult("listing_classifier", "3", [one] * len(titles))


def _rec(i: int, title: str) -> InRecord:
    value = orjson.dumps({"item_id": f"i{i}", "title": title})
    return InRecord("listings.new", 0, i, f"i{i}".encode(), value, 1_000)


def test_a_rejected_event_is_isolated_and_dead_lettered_alone() -> None:
    fake = RejectsPoison()
    pipeline = Pipeline(Settings(), source="live", classifier=fake, store=None, out=None)  # type: ignore[arg-type]
    records = [_rec(i, "POISON pill" if i == 5 else f"phone case {i}") for i in range(8)] + [_rec(8, " ")]
    prepared = asyncio.run(pipeline.prepare(records))
    assert [c.record.offset for c in prepared.classified] == [0, 1, 2, 3, 4, 6, 7]
    assert {c.model_version for c in prepared.classified} == {"3"}
    by_offset = {rec.offset: exc for rec, exc in prepared.invalid}
    assert set(by_offset) == {5, 8}
    assert by_offset[5].error_type == "model_rejected" and "refused" in by_offset[5].reason
    assert by_offset[8].error_type == "blank_title"
    assert fake.calls[0] == 8 and max(fake.calls[1:]) <= 4  # halved, not retried whole


def test_backfill_summary_json_keeps_counts() -> None:
    from stream.backfill import Summary
    from stream.pipeline.process import BatchStats

    summary = Summary(group="g", topic="t")
    batch = BatchStats(events=3, classified=2, dlq=1)
    batch.statuses.update({"applied": 2})
    summary.add(batch)
    doc = orjson.loads(summary.to_json())
    assert doc["events"] == 3 and doc["classified"] == 2 and doc["dlq"] == 1
    assert doc["statuses"] == {"applied": 2} and doc["group"] == "g"


def test_retry_forever_retries_until_success_and_counts() -> None:
    from stream.retry import retry_forever

    calls: list[int] = []
    retried: list[str] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "ok"

    out = asyncio.run(
        retry_forever(
            "flaky",
            flaky,
            retryable=(ConnectionError,),
            first_backoff=0.001,
            max_backoff=0.01,
            on_retry=lambda what, exc: retried.append(what),
        )
    )
    assert out == "ok" and len(calls) == 3 and retried == ["flaky", "flaky"]


def test_kafka_sink_replaces_a_producer_whose_state_the_broker_lost() -> None:
    """After a broker restart an idempotent aiokafka producer can die for good (its sender stops on
    OutOfOrderSequenceNumber and every later send raises it): the sink opens a new producer and sends the whole set
    again. The producer is replaced by a fake (pure recovery logic; the real restart is tests/test_faults.py)."""
    from aiokafka.errors import OutOfOrderSequenceNumber

    from stream.config import KafkaSettings
    from stream.sinks.kafka_out import KafkaOut, OutRecord

    class Producer:
        def __init__(self, broken: bool) -> None:
            self.broken, self.sent, self.stopped = broken, [], False

        async def start(self) -> None:
            pass

        async def stop(self) -> None:
            self.stopped = True

        async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[None]:
            if self.broken:
                raise OutOfOrderSequenceNumber()
            self.sent.append((topic, key, value))
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done

    made: list[Producer] = []

    class Sink(KafkaOut):
        def _make_producer(self) -> Producer:
            made.append(Producer(broken=not made))  # the first one is the one the restart broke
            return made[-1]

    sink = Sink(KafkaSettings(), max_backoff_s=0.01)
    records = [OutRecord("t.classified", b"a", b"1"), OutRecord("t.tags", b"a", b"2")]

    async def run() -> None:
        await sink.start()
        await sink.send_all(records)
        await sink.send_all(records[:1])

    asyncio.run(asyncio.wait_for(run(), timeout=10))  # without the replacement it would retry the dead one forever
    assert len(made) == 2 and made[0].stopped and not made[1].stopped
    assert made[1].sent == [("t.classified", b"a", b"1"), ("t.tags", b"a", b"2"), ("t.classified", b"a", b"1")]


def test_a_producer_replaced_under_one_sender_does_not_break_the_other() -> None:
    """The worker's live and feedback agents share one sink. When one of them finds the producer's state lost and
    drops it, the other, between two sends of its own set, keeps the producer it started with (it used to find
    None: an AttributeError, exit 70); one replacement is opened, and both sets are delivered."""
    from aiokafka.errors import OutOfOrderSequenceNumber

    from stream.config import KafkaSettings
    from stream.sinks.kafka_out import KafkaOut, OutRecord

    class Producer:
        def __init__(self, fail_topic: str | None) -> None:
            self.fail_topic, self.sent = fail_topic, []

        async def start(self) -> None:
            pass

        async def stop(self) -> None:
            pass

        async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future[None]:
            await asyncio.sleep(0.005)  # the other sender runs meanwhile
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            if topic == self.fail_topic:
                done.set_exception(OutOfOrderSequenceNumber())
            else:
                self.sent.append(topic)
                done.set_result(None)
            return done

    made: list[Producer] = []

    class Sink(KafkaOut):
        def _make_producer(self) -> Producer:
            made.append(Producer("t.feedback" if not made else None))  # the first one the restart broke
            return made[-1]

    sink = Sink(KafkaSettings(), max_backoff_s=0.01)
    live = [OutRecord("t.classified", b"k", b"v")] * 20
    feedback = [OutRecord("t.feedback", b"k", b"v")]

    async def run() -> list[object]:
        await sink.start()
        return await asyncio.gather(sink.send_all(live), sink.send_all(feedback), return_exceptions=True)

    assert asyncio.run(asyncio.wait_for(run(), timeout=10)) == [None, None]
    assert len(made) == 2 and made[1].sent.count("t.feedback") == 1
    assert made[0].sent.count("t.classified") + made[1].sent.count("t.classified") >= 20


def test_a_version_triton_unloaded_is_not_served_and_one_loading_is_waited_for() -> None:
    """Triton answers UNAVAILABLE "version N is not at ready state" both for a version still loading and for one it
    unloaded (`latest 2` unloads the oldest when a newer one loads), and NOT_FOUND only for one never loaded. A
    feedback decision's taxonomy check must not wait for an unloaded version (it held every later decision for
    ever): the repository index tells the two apart."""
    from types import SimpleNamespace

    from tritonclient.utils import InferenceServerException

    from stream.classify.triton_client import TritonClassifier, VersionNotServed

    def not_ready(v: str) -> InferenceServerException:
        return InferenceServerException(
            f"Request for unknown model: 'listing_classifier' version {v} is not at ready state",
            status="StatusCode.UNAVAILABLE",
        )

    class Client:
        def __init__(self, state: str) -> None:
            self.state, self.calls = state, 0

        async def infer(self, *args: object, **kwargs: object) -> None:
            self.calls += 1
            raise not_ready("4")

        async def get_model_repository_index(self, **kwargs: object) -> SimpleNamespace:
            model = SimpleNamespace(name="listing_classifier", version="4", state=self.state)
            return SimpleNamespace(models=[model])

    async def ask(state: str) -> tuple[str, int]:
        triton = TritonClassifier("127.0.0.1:1", "listing_classifier", max_backoff_s=0.01)
        client = Client(state)
        triton._client, triton._choosing = client, asyncio.Lock()
        try:
            await asyncio.wait_for(triton.taxonomy("4", wait_for_version=False), 1.0)
        except VersionNotServed:
            return "not served", client.calls
        except TimeoutError:
            return "waited", client.calls
        return "answered", client.calls

    assert asyncio.run(ask("UNAVAILABLE")) == ("not served", 1)
    outcome, calls = asyncio.run(ask("LOADING"))
    assert outcome == "waited" and calls > 1


def test_governor_backs_off_while_live_is_slow_and_speeds_up_after() -> None:
    """AIMD on the backfill's rate from the live latency (the latency source is replaced: pure logic): a cut once
    the latency stayed above the target for a window, one cut per window of results, a pause under the floor,
    additive increase, the ceiling."""
    from stream.governor import WINDOW_S, Governor

    g = Governor(redis=None, stream="s", target_ms=250, min_rate=5, max_rate=200, step=20, start_rate=80)
    reading: list[float | None] = [None]

    async def fake_latency(since_ms: int | None = None) -> float | None:
        return reading[0]

    g.live_latency = fake_latency  # type: ignore[method-assign]

    def step(at: float, latency: float | None) -> float:
        reading[0] = latency
        asyncio.run(g.control(now=at))
        return g.rate

    # above the target, but no reading a window earlier was: held, not cut
    assert step(0.0, 400.0) == 80.0 and not g.yielding
    assert step(WINDOW_S - 0.1, 400.0) == 80.0 and not g.yielding
    assert step(WINDOW_S, 400.0) == 40.0 and g.yielding  # the reading a window earlier was above it too: halved
    # the window still holds results from before the cut: no second cut until it has renewed
    assert step(WINDOW_S + 0.5, 400.0) == 40.0 and step(2 * WINDOW_S - 0.1, 400.0) == 40.0 and g.yielding
    assert [step(k * WINDOW_S, 400.0) for k in (2, 3, 4)] == [20.0, 10.0, 5.0] and g.min_rate == 5
    assert step(5 * WINDOW_S, 400.0) == 0.0  # under the floor: paused while live suffers
    t = 5 * WINDOW_S
    assert [step(t + k, lat) for k, lat in ((1, None), (2, 100.0), (3, 100.0))] == [25.0, 45.0, 65.0]
    assert not g.yielding  # no live traffic, then fast live: additive increase
    g.max_rate = 70
    assert step(t + 4, 100.0) == 70 and not g.yielding  # the ceiling (--rate) holds


def test_governor_cuts_on_a_breach_that_lasts_not_on_one_slow_window() -> None:
    """A spike holds the live p99 of the 3 s window above the target for up to a window's length: the rate is held
    through it and grows again after, uncut. Two readings a window apart both above the target (other results, a
    lasting breach) cut it. Readings are kept only as long as the rule needs them."""
    from stream.governor import INTERVAL_S, WINDOW_S, Governor

    g = Governor(redis=None, stream="s", target_ms=250, min_rate=5, step=20, start_rate=100)
    reading: list[float | None] = [None]

    async def fake_latency(since_ms: int | None = None) -> float | None:
        return reading[0]

    g.live_latency = fake_latency  # type: ignore[method-assign]

    def step(at: float, latency: float) -> float:
        reading[0] = latency
        g.admitted(10_000, now=at)
        asyncio.run(g.control(now=at))
        return g.rate

    ticks = [k * INTERVAL_S for k in range(200)]
    rates = [step(t, 100.0) for t in ticks[:10]]  # fine: additive increase
    assert rates == [120.0 + 20 * k for k in range(10)]
    spike = [step(t, 400.0) for t in ticks[10:15]]  # above the target for 2.5 s, less than a window
    assert spike == [300.0] * 5 and g.overload_rate is None
    assert [step(t, 100.0) for t in ticks[15:21]] == [320.0 + 20 * k for k in range(6)]  # over: it grows, uncut
    assert step(ticks[21], 400.0) == 420.0  # t=10.5 s above again, but the reading a window earlier (7.5 s) was not
    assert [step(t, 100.0) for t in ticks[22:27]] == [440.0 + 20 * k for k in range(5)]
    assert step(ticks[27] - 0.1, 400.0) == 520.0  # t=13.4 s: the reading in force at 10.4 s (10.0 s) was not above
    assert step(ticks[27], 400.0) == 260.0 and g.overload_rate == 520.0  # t=13.5 s: the one at 10.5 s was: halved
    for t in ticks[40:]:
        step(t, 100.0)
    assert len(g._readings) <= WINDOW_S / INTERVAL_S + 2  # the readings older than a window are let go


def test_governor_climbs_slowly_near_the_rate_live_last_suffered_at() -> None:
    """After a cut the rate climbs back by whole steps to CAUTION x the rate that overloaded live, by SLOW_STEP x a
    step from there, and by whole steps again once it is PAST that rate without live suffering (its load fell)."""
    from stream.governor import CAUTION, PAST, SLOW_STEP, WINDOW_S, Governor

    g = Governor(redis=None, stream="s", target_ms=250, min_rate=5, step=20, start_rate=400)
    reading: list[float | None] = [None]

    async def fake_latency(since_ms: int | None = None) -> float | None:
        return reading[0]

    g.live_latency = fake_latency  # type: ignore[method-assign]
    at = 0.0

    def step(latency: float) -> float:
        nonlocal at
        at += 0.5
        reading[0] = latency
        g.admitted(int(g.rate * 0.5), now=at)  # the backfill lets through what it is allowed
        asyncio.run(g.control(now=at))
        return g.rate

    for _ in range(int(2 * WINDOW_S / 0.5)):  # two windows at 400/s, live fine
        step(100.0)
    rate = g.rate
    held = [step(400.0) for _ in range(int(WINDOW_S / 0.5))]  # live suffers for a window: the rate is held ...
    assert held == [rate] * len(held) and g.overload_rate is None
    assert step(400.0) == rate / 2 and g.overload_rate == rate  # ... then halved, the rate in force remembered
    limit = g.overload_rate
    rates = [step(100.0) for _ in range(120)]
    pairs = list(zip([rate / 2, *rates[:-1]], rates, strict=True))  # (rate before a step, after it)
    fast = [b - a for a, b in pairs if a < CAUTION * limit]
    slow = [b - a for a, b in pairs if CAUTION * limit <= a < PAST * limit]
    past = [b - a for a, b in pairs if a >= PAST * limit]
    assert fast and set(fast) == {20.0}
    assert slow and set(slow) == {20.0 * SLOW_STEP}
    assert past and set(past) == {20.0}


def test_governor_never_runs_far_ahead_of_what_the_backfill_achieves() -> None:
    """Without live traffic the rate grows, but at most to twice what was let through in the last window: a rate
    the backfill cannot reach is not one it would have to be cut down from when live traffic appears."""
    from stream.governor import WINDOW_S, Governor

    g = Governor(redis=None, stream="s", target_ms=250, min_rate=5, step=100, start_rate=50)

    async def no_live(since_ms: int | None = None) -> float | None:
        return None

    g.live_latency = no_live  # type: ignore[method-assign]
    g.admitted(3 * 60, now=0.0)  # 60 events/s achieved over the window
    for k in range(20):
        asyncio.run(g.control(now=1.0 + k * 0.1))
    assert g.rate == 120.0  # 2 x 60/s, not 20 steps of 100
    asyncio.run(g.control(now=1.0 + WINDOW_S))  # nothing let through in the last window: back to the start rate
    assert g.rate == 50.0


def test_governor_measures_live_alone_and_protects_a_multiple_of_it() -> None:
    """Relative target (the default): a pause measures the live baseline, AIMD then holds live at tolerance x it."""
    from stream.governor import PROBE_S, REPROBE_S, SETTLE_S, WINDOW_S, Governor

    g = Governor(redis=None, stream="s", target_ms=0, tolerance=1.2, min_rate=5, step=20, start_rate=80)
    reading: list[float | None] = [None]
    asked: list[int | None] = []

    async def fake_latency(since_ms: int | None = None) -> float | None:
        asked.append(since_ms)
        return reading[0]

    g.live_latency = fake_latency  # type: ignore[method-assign]

    def step(at: float, latency: float | None) -> float:
        reading[0] = latency
        g.admitted(10_000, now=at)  # the backfill keeps up with any rate here: the cap stays out of the way
        asyncio.run(g.control(now=at))
        return g.rate

    assert step(0.0, None) == 100.0 and g.target is None  # no live traffic: nothing to protect, speeds up
    assert step(1.0, 900.0) == 0.0 and g.probing and g.yielding  # live appears: pause to measure it alone
    started_ms = time.time() * 1000
    assert step(1.0 + PROBE_S / 2, 700.0) == 0.0  # still measuring
    # the baseline is every live result of the pause after its first SETTLE_S (not only the last window's)
    assert asked[0] is None and asked[1] is None and asked[2] is not None
    assert abs(asked[2] - (started_ms + SETTLE_S * 1000)) < 1000
    # baseline 500 ms; the rate before the probe (100), then one step under the 600 ms target
    assert step(1.0 + PROBE_S, 500.0) == 120.0 and not g.probing
    assert g.baseline_ms == 500.0 and g.target == 600.0
    assert asked[3] == asked[2]  # the probe's last reading spans the whole of it
    end = 1.0 + PROBE_S
    assert step(end + 1.0, 590.0) == 140.0 and asked[-1] is None  # under 1.2 x baseline: additive increase
    assert step(end + 1.5, 650.0) == 140.0 and not g.yielding  # over it: held ...
    assert step(end + 1.5 + WINDOW_S, 650.0) == 70.0 and g.yielding  # ... and still over it a window later: halved
    assert step(end + 2.0 + REPROBE_S, 650.0) == 0.0 and g.probing  # the baseline is measured again
    assert step(end + 2.0 + REPROBE_S + PROBE_S, 800.0) == 90.0 and g.target == 960.0  # live got slower on its own
    assert "target 960" in g.status()


def test_governor_tail_is_the_nearest_rank_percentile() -> None:
    from stream.governor import tail

    values = [float(v) for v in range(100, 0, -1)]  # 1..100, unsorted
    assert tail(values, 99) == 99.0 and tail(values, 50) == 50.0 and tail(values, 100) == 100.0
    assert tail([5.0, 1.0, 3.0], 99) == 5.0  # a thin window: the largest, the cautious reading
    assert tail([7.0], 50) == 7.0 and tail([], 99) is None


def test_worker_consumer_fetch_wait_is_bounded() -> None:
    """Faust builds its aiokafka consumer with a fixed 1,500 ms fetch wait, which stalled a worker that fell behind
    (stream/events/fetching.py); the worker's consumer gets LISTINGS_FETCH_MAX_WAIT_MS instead. Building the consumer
    connects to nothing."""
    from stream.worker import make_app

    async def build(ms: int) -> int:
        app = make_app(Settings().replace(worker={"fetch_max_wait_ms": ms}))
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()

    assert asyncio.run(build(100)) == 100
    assert asyncio.run(build(40)) == 40  # a second app in the same process takes its own setting


def test_kafka_library_log_repeats_are_thinned_and_counted() -> None:
    """aiokafka logs every failed reconnect (~50 lines a second while a broker is down): one record per logger and
    message template passes every 10 s, and the next one says how many it stood for; our own loggers pass as
    they are."""
    import logging

    from stream.logs import RepeatFilter

    f = RepeatFilter(every_s=10.0)

    def record(name: str, msg: str, at: float, *args: object) -> logging.LogRecord:
        r = logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)
        r.created = at
        return r

    template = "Unable connect to node with id %s: %s"
    passed = [f.filter(record("aiokafka", template, 100 + k * 0.02, 1, "refused")) for k in range(250)]
    assert passed[0] and not any(passed[1:])  # 5 s of retries: one line
    assert f.filter(record("aiokafka.consumer.fetcher", "Failed fetch messages from %s: %s", 101, 1, "x"))
    later = record("aiokafka", template, 110.5, 1, "refused")
    assert f.filter(later) and later.fields == {"suppressed": 249}  # type: ignore[attr-defined]
    assert all(f.filter(record("listings.worker", "batch done", 120 + k * 0.01)) for k in range(5))


def test_kafka_python_slow_step_warnings_pass_only_at_debug(caplog) -> None:  # type: ignore[no-untyped-def]
    """kafka-python 3's I/O thread warns when one loop step took over 0.1 s, GIL waits included: on a busy host
    (the demo trains beside its producer) that line landed in the demo's screen with nothing wrong. After
    `quiet_slow_steps` it passes only where its logger is at debug; the same logger's other warnings pass."""
    import logging

    from stream.logs import SLOW_STEP_LOGGER, SlowStepFilter, quiet_slow_steps

    logger = logging.getLogger(SLOW_STEP_LOGGER)
    slow = (
        "Task <kafka.net.selector.Task object at 0x7f56> ran for 0.374s (>0.100s threshold). It is blocking the "
        "event loop -- likely a tight sync loop inside a coroutine. Other pollers will time out."
    )
    level, filters, disabled = logger.level, list(logger.filters), logger.disabled
    try:
        # a producer made earlier in this process (the bench, the workers' tests) installed it already
        logger.filters[:] = [f for f in filters if not isinstance(f, SlowStepFilter)]
        logger.disabled = False
        logger.setLevel(logging.INFO)
        with caplog.at_level(logging.INFO, logger=SLOW_STEP_LOGGER):
            logger.warning(slow)
            assert [r.getMessage() for r in caplog.records] == [slow]  # without the filter it shows
            caplog.clear()
            quiet_slow_steps()
            quiet_slow_steps()  # idempotent: one filter
            assert sum(isinstance(f, SlowStepFilter) for f in logger.filters) == 1
            logger.warning(slow)
            logger.warning("Task %s left RUNNING after step; demoting to UNSCHEDULED", "t")
            assert [r.getMessage() for r in caplog.records] == [
                "Task t left RUNNING after step; demoting to UNSCHEDULED"
            ]
            caplog.clear()
            logger.setLevel(logging.DEBUG)
            logger.warning(slow)
            assert [r.getMessage() for r in caplog.records] == [slow]
    finally:
        logger.setLevel(level)
        logger.filters[:] = filters
        logger.disabled = disabled


def test_backfill_stop_cancels_a_wait_it_interrupts_and_keeps_work_that_finished() -> None:
    import signal

    from stream.backfill import Stop, exit_code

    async def scenario() -> tuple[bool, bool, bool, bool]:
        stop = Stop()
        finished = await stop.unless_requested(asyncio.sleep(0.01))
        cancelled = False

        async def long_wait() -> None:
            nonlocal cancelled
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled = True
                raise

        asyncio.get_running_loop().call_later(0.05, stop._on_signal, signal.SIGTERM)
        interrupted = await asyncio.wait_for(stop.unless_requested(long_wait()), 5)
        after = await stop.unless_requested(asyncio.sleep(0))  # once requested, nothing more starts
        return finished, interrupted, cancelled, after

    finished, interrupted, cancelled, after = asyncio.run(scenario())
    assert finished and not interrupted and cancelled and not after
    assert exit_code("") == 0
    assert exit_code("SIGINT") == 130


def test_demo_without_a_terminal_prints_status_lines_and_each_lifecycle_step_once() -> None:
    """Piped into a log, the demo's live view draws nothing until it stops: instead it prints its figures on one
    line every `every_s` seconds and each lifecycle step once, as it happens."""
    from devtools.demo import PlainLog, Progress

    progress = Progress(
        Settings(),
        [{"item_id": "a", "true_category": "Home > Lamps"}, {"item_id": "b", "true_category": "Home > Rugs"}],
        metrics_port=0,
    )  # no Redis call: the state below stands in for what `poll` reads
    progress.stage = "serving v1"
    assert progress.status_line() == "serving v1 | 0 classified at 0/s"  # before any result: no empty figures
    progress.state = {
        "a": {"category_path": "Home > Lamps", "model_version": "1"},
        "b": {"category_path": "Home > Lamps", "model_version": "1"},
    }
    progress.latencies.extend([40.0, 90.0])
    line = progress.status_line()
    assert line.startswith("serving v1 | 2 classified") and "p99 90 ms" in line
    assert line.endswith("top level 100.0%, leaf 50.0% of 2")

    out: list[str] = []
    log = PlainLog(out.append, every_s=15)
    count = iter(range(1, 10))
    steps: list[str] = []
    log.update(lambda: f"status {next(count)}", steps, now=100.0)  # the first call: a status line at once
    log.update(lambda: f"status {next(count)}", steps, now=110.0)  # within 15 s: nothing
    steps.append("exported v2")
    log.update(lambda: f"status {next(count)}", steps, now=112.0)  # the new step, once
    log.update(lambda: f"status {next(count)}", steps, now=116.0)  # 16 s after the first status: the next
    assert out == ["status 1", "lifecycle: exported v2", "status 2"]


def test_demo_counts_only_results_stored_since_it_started() -> None:
    """The local stack keeps its Redis between runs: a second demo must not take the first one's results (same
    held-out items) for its own and finish before it produced anything."""
    from devtools.demo import Progress

    class FakePipeline:  # what `poll` asks of a Redis pipeline, answered from a dict
        def __init__(self, hashes: dict[str, dict[str, str]]) -> None:
            self.hashes, self.calls = hashes, []

        def hmget(self, key: str, fields: list[str]) -> None:
            self.calls.append([self.hashes.get(key, {}).get(f) for f in fields])

        def execute(self) -> list[list[str | None]]:
            return self.calls

    started = "2026-12-06T03:00:00.000Z"
    hashes = {
        "listing:old": {"classified_at": "2026-12-06T02:59:59.999Z", "event_time": "2026-12-06T02:59:59.900Z"},
        "listing:new": {"classified_at": "2026-12-06T03:00:00.050Z", "event_time": "2026-12-06T03:00:00.010Z"},
    }
    progress = Progress(Settings(), [{"item_id": "old"}, {"item_id": "new"}], 0, since_ms=iso_ms(started))
    progress.r = type("FakeRedis", (), {"pipeline": lambda self, transaction: FakePipeline(hashes)})()
    progress.poll()
    assert list(progress.state) == ["new"] and list(progress.latencies) == [40]


def test_demo_plays_the_lifecycle_whenever_the_served_model_is_not_the_current_full_one(tmp_path) -> None:
    from devtools.demo import DemoOptions, Plan, exported_artifact, plan

    default, quick, rehearse = DemoOptions(), DemoOptions(quick=True), DemoOptions(rehearse=True)
    # a fresh repository: the cached full model straight away, else a quick model and the lifecycle
    assert plan("full", None, default) == Plan("cached", False)
    assert plan(None, None, default) == Plan("quick", True)
    assert plan(None, None, quick) == Plan("quick", False)
    assert plan("full", None, rehearse) == Plan("quick", True)
    # versions exist: serve them; the lifecycle when the newest is not the current full model
    assert plan("full", "full", default) == Plan(None, False)
    assert plan("full", "quick-one", default) == Plan(None, True)  # a first run stopped before its promotion
    assert plan(None, "old-full", default) == Plan(None, True)  # the training code changed
    assert plan("full", "unknown", default) == Plan(None, True)
    assert plan("full", "full", rehearse) == Plan(None, True)
    assert plan(None, "old-full", quick) == Plan(None, False)
    # the live record wins over the newest version: a run stopped after exporting the full model but before
    # promoting it left the quick one live
    assert plan("full", "full", default, live="quick-one") == Plan(None, True)
    assert plan("full", "full", default, live="full") == Plan(None, False)
    assert plan("full", "quick-one", default, live="full") == Plan(None, False)
    assert plan("full", "full", quick, live="quick-one") == Plan(None, False)

    version = tmp_path / "listing_classifier" / "3"
    version.mkdir(parents=True)
    assert exported_artifact(tmp_path, 3) is None
    (version / "export.json").write_text('{"artifact": "a34e87dd00ce74a8", "version": 3}')
    assert exported_artifact(tmp_path, 3) == "a34e87dd00ce74a8"


def test_demo_promotes_a_full_model_exported_before_an_interrupted_promotion(tmp_path) -> None:
    """Stopped between exporting the full model (v2) and promoting it, the demo took v2 for the served model and
    never promoted it: the live record (v1, the quick model) now decides, and the lifecycle promotes v2 as it is."""
    from devtools.demo import DemoOptions, Plan, artifact_name, pending_candidate, plan, served_version

    for version, artifact in ((1, "quick-a"), (2, "full-b")):
        folder = tmp_path / "listing_classifier" / str(version)
        folder.mkdir(parents=True)
        (folder / "export.json").write_text(f'{{"artifact": "{artifact}", "version": {version}}}')
    assert served_version([1, 2], "1") == 1
    assert served_version([1, 2], "") == 2 and served_version([1, 2], "7") == 2 and served_version([], "") is None
    live = artifact_name(tmp_path, served_version([1, 2], "1"))
    assert plan("full-b", artifact_name(tmp_path, 2), DemoOptions(), live=live) == Plan(None, True)
    assert pending_candidate(tmp_path, "1", "full-b") == 2  # promoted as it is, not exported a second time
    assert pending_candidate(tmp_path, "2", "full-b") is None
    assert pending_candidate(tmp_path, "1", "other") is None


@pytest.fixture
def demo_fakes(tmp_path, monkeypatch):
    """The demo on a fresh repository with a fake stack control (Redis and Kafka not running, Triton running):
    returns the control's record of calls. No model is trained: `train_or_reuse` is for the test to replace."""
    import time

    from devtools import config, demo
    from training import export, train

    monkeypatch.setenv("LISTINGS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LISTINGS_MODEL_REPOSITORY", str(tmp_path / "models"))

    class FakeControl:
        def __init__(self) -> None:
            self.calls: list[tuple[str, list[str] | None]] = []
            self.fail: dict[str, BaseException] = {}

        def status(self, stack):
            return {name: {"running": name == "triton"} for name in ("redis", "kafka", "triton")}

        def up(self, stack, only=None, echo=print):
            time.sleep(0.2)  # Kafka takes a while: the demo goes on meanwhile
            self.calls.append(("up", only))
            for name in only or ():
                if name in self.fail:
                    raise self.fail[name]

        def down(self, stack, only=None, echo=print):
            self.calls.append(("down", only))

    fake = FakeControl()
    monkeypatch.setattr(demo, "control", fake)
    monkeypatch.setattr(demo, "full_model_cached", lambda stack: None)
    monkeypatch.setattr(demo, "read_live_version", lambda settings: "", raising=False)
    monkeypatch.setattr(export, "versions", lambda repo, name="": [])
    monkeypatch.setattr(train, "default_data", lambda folder: None)
    monkeypatch.setattr(train, "options", lambda *args, **kwargs: None)
    return fake, lambda: demo.demo(config.load(), Settings(), demo.DemoOptions(events=10))


def test_the_demo_stops_what_it_started_when_interrupted_before_it_streams(demo_fakes, monkeypatch) -> None:
    """Ctrl-C during the quick model's training left Redis and Kafka running: the clean-up covered only the
    streaming phase."""
    from training import train

    fake, run = demo_fakes

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train_or_reuse", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run()
    assert ("down", ["redis", "kafka"]) in fake.calls  # Triton was running before: left alone
    assert fake.calls[-1][0] == "down"  # after the bring-up had finished


def test_the_demo_ends_on_a_failed_bring_up_and_on_sigterm(demo_fakes, monkeypatch, capsys) -> None:
    """A failure in the bring-up thread was only printed (the demo went on without Kafka); SIGTERM (a `kill`, a CI
    timeout) killed the demo without stopping what it had started."""
    import os
    import signal
    import threading
    import time

    from devtools.stack.process import StackError
    from training import export, train

    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")
    fake, run = demo_fakes
    monkeypatch.setattr(train, "train_or_reuse", lambda *args, **kwargs: None)
    monkeypatch.setattr(export, "export", lambda artifact, repo: 1)
    fake.fail["kafka"] = StackError("kafka not ready after 120s; see its log")
    assert run() == 1
    assert "kafka not ready after 120s" in capsys.readouterr().out
    assert ("down", ["redis", "kafka"]) in fake.calls

    fake.calls.clear()
    del fake.fail["kafka"]
    previous = signal.getsignal(signal.SIGTERM)

    def terminated(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises here

    monkeypatch.setattr(train, "train_or_reuse", terminated)
    with pytest.raises(SystemExit) as ended:
        run()
    assert ended.value.code == 128 + signal.SIGTERM
    assert ("down", ["redis", "kafka"]) in fake.calls
    assert signal.getsignal(signal.SIGTERM) is previous


def test_the_demo_worker_metrics_port_is_a_free_one() -> None:
    """The demo scraped the fixed LISTINGS_METRICS_PORT: another process there showed its own counters."""
    import socket

    from devtools.demo import free_port

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_backfill_stop_is_bounded_when_the_batches_in_flight_cannot_finish() -> None:
    """A stop waits for the batches in flight; one that is being retried against a dependency that stays down
    must not hold it past LISTINGS_SHUTDOWN_TIMEOUT_S."""
    import signal
    import time

    import pytest

    from stream.backfill import Stop

    stop = Stop(timeout_s=0.2)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        stop.install(loop)
        try:
            loop.call_later(0.05, stop._on_signal, signal.SIGTERM)
            await asyncio.sleep(30)  # a batch in flight, retried for as long as its dependency is down
        finally:
            stop.uninstall(loop)

    t0 = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        asyncio.run(scenario())
    assert stop.outran and stop.signal == "SIGTERM" and time.monotonic() - t0 < 5

    unbounded = Stop()  # the default (a library caller's): no bound, the second signal is the way out
    assert unbounded.timeout_s == 0 and not unbounded.outran


def test_health_while_waiting_for_dependencies_and_after() -> None:
    """Waiting for Kafka/Redis at start is alive (retrying); when the wait ends, the event loop's clock starts
    then, so a long wait does not read as a stalled loop."""
    import time

    from stream.health import Health

    h = Health(loop_timeout_s=30.0)
    h.loop_beat = time.monotonic() - 600  # ten minutes of waiting
    h.waiting("Kafka at k:9092 is not reachable")
    h.loop_beat = time.monotonic() - 600
    ok, why = h.live()
    assert ok and why["waiting_for"].startswith("Kafka")
    assert h.ready()[0] is False
    h.waiting(None)
    ok, why = h.live()
    assert ok and "waiting_for" not in why and why["event_loop_seconds_since_beat"] < 5
    h.loop_beat = time.monotonic() - 31
    assert h.live()[0] is False  # once started, a loop that stops beating is dead again


def test_backfill_time_arguments_are_checked_before_anything_runs(capsys) -> None:
    import argparse

    from stream import backfill
    from stream.config import Settings

    assert backfill.parse_time("1764547200000") == 1764547200000
    assert backfill.parse_time("2025-12-01T00:00:00Z") == 1764547200000
    for bad in ("yesterday", "2025-12-01"):  # not a time; no zone
        with pytest.raises(argparse.ArgumentTypeError):
            backfill.parse_time(bad)
    parser = argparse.ArgumentParser()
    backfill.add_arguments(parser)
    args = parser.parse_args(["--since", "2025-12-02T00:00:00Z", "--until", "2025-12-01T00:00:00Z"])
    # an empty range is a mistake, not a finished run (it printed "0 events" and exited 0); nothing is contacted
    assert backfill.run(args, Settings().replace(kafka={"bootstrap": "127.0.0.1:1"})) == 2
    assert "--until is not after --since" in capsys.readouterr().err
    # Kafka holds no time before 1970 (kafka-python's offsets_for_times raised ValueError: a traceback)
    assert backfill.parse_time("0") == 0 and backfill.parse_time("1970-01-01T00:00:00Z") == 0
    for bad, why in [
        ("1969-12-31T23:59:59Z", "before 1970"),
        ("1970-01-01T00:00:00+01:00", "before 1970"),
        ("99999999999999999999", "past the year 9999"),  # nanoseconds, not ms
        ("9999-12-31T23:59:59-05:00", "past the year 9999"),
        ("\u00b2", "not a time"),
    ]:
        with pytest.raises(argparse.ArgumentTypeError, match=why):
            backfill.parse_time(bad)
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--since", "1969-12-31T23:59:59Z"])
    assert exited.value.code == 2


def test_backfill_rate_must_be_finite_and_not_negative(capsys) -> None:
    """A negative --rate never admitted anything under the governor (the run hung for ever) and meant unlimited
    without it; nan passed a `< 0` check. 0 stays "unlimited"."""
    import argparse

    from stream import backfill
    from stream.governor import Governor

    parser = argparse.ArgumentParser()
    backfill.add_arguments(parser)
    for value in ("-5", "nan", "inf", "-inf", "fast"):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(["--from-beginning", "--rate", value])
        assert exited.value.code == 2 and "--rate" in capsys.readouterr().err
    assert parser.parse_args(["--from-beginning", "--rate", "0"]).rate == 0.0
    assert parser.parse_args(["--from-beginning", "--rate", "12.5"]).rate == 12.5
    for rate in (-5.0, float("nan")):
        with pytest.raises(ValueError):
            backfill.BackfillOptions(rate=rate)
        with pytest.raises(ValueError):
            Governor(redis=None, stream="s", target_ms=0, max_rate=rate)
    assert Governor(redis=None, stream="s", target_ms=0, max_rate=0).rate == 50.0  # no ceiling


def test_backfill_refuses_a_stored_plan_made_for_other_arguments() -> None:
    """`--group g` reused with another range or topic replayed the old plan (with another topic: at the old
    topic's offsets); the group's plan now records what it was made for, and a mismatch is refused."""
    from stream.backfill import Plan, PlanFor, PlanMismatch, stored_plan

    made_for = PlanFor("listings.new", 1_764_547_200_000, None, "2")
    plan = Plan("listings.new", {0: 5, 1: 7}, {0: 9, 1: 7}, made_for)
    raw = plan.to_json()
    assert Plan.from_json(raw) == plan and stored_plan(raw, "g", made_for) == plan
    assert stored_plan(None, "g", made_for) is None
    others = {
        "topic": PlanFor("catalogue.snapshot", 1_764_547_200_000, None, "2"),
        "since": PlanFor("listings.new", 1_764_547_200_001, None, "2"),
        "from the beginning": PlanFor("listings.new", None, None, "2"),
        "until": PlanFor("listings.new", 1_764_547_200_000, 1_764_633_600_000, "2"),
        "model version": PlanFor("listings.new", 1_764_547_200_000, None, "3"),
    }
    for what, other in others.items():
        with pytest.raises(PlanMismatch, match="give another --group") as caught:
            stored_plan(raw, "g", other)
        message = str(caught.value)
        assert "group g" in message and "2025-12-01T00:00:00.000Z" in message and "\n" not in message, what
    # a plan stored before the arguments were recorded: its topic is all that can be checked
    legacy = orjson.dumps({"topic": "listings.new", "start": {"0": 5}, "end": {"0": 9}})
    assert stored_plan(legacy, "g", others["since"]) == Plan("listings.new", {0: 5}, {0: 9})
    with pytest.raises(PlanMismatch, match=r"topic listings\.new, not topic catalogue\.snapshot"):
        stored_plan(legacy, "g", others["topic"])


def test_backfill_progress_counts_offsets_like_its_total() -> None:
    """The bar's total is the plan's offsets; it was advanced by records, so on a compacted topic (offsets with no
    record left) a finished run ended below 100%."""
    from stream.backfill import OffsetProgress

    class Bar:
        n = 0

        def update(self, k: int) -> None:
            self.n += k

    bar = Bar()
    # partition a: offsets 10..30 planned, records left at 12, 15, 20 (compacted); b: resumed at its end already
    progress = OffsetProgress(bar, {"a": 10, "b": 40}, {"a": 30, "b": 40})
    for offset in (12, 15):
        progress.fetch("a", offset + 1)
    progress.commit({"a": 16})
    assert bar.n == 6  # 10..15: the offsets the batch covered, compacted ones included
    progress.fetch("a", 21)
    progress.finish("a")  # every record before the end fetched; 16..20 still in flight
    assert bar.n == 6
    progress.commit({"a": 21})
    assert bar.n == 20  # done: the offsets after the last record count too
    progress.commit({"a": 21})
    assert bar.n == 20
    # a partition whose remaining offsets hold no record at all: finished as soon as it is seen past its end
    other = OffsetProgress(bar := Bar(), {"c": 3}, {"c": 8})
    other.finish("c")
    assert bar.n == 5


def test_redis_replies_that_mean_an_outage_are_retried_inside_a_pipeline_too() -> None:
    """redis-py turns only some reply prefixes into classes; BUSY (a long script) and NOREPLICAS stay ResponseError,
    and a pipeline rewrites the message to "Command # 1 (EVALSHA …) of pipeline caused error: BUSY …": the worker
    took that for a bug and exited (status 70). Built with redis-py's own reply parser and pipeline annotation."""
    import redis.exceptions as rexc
    from redis._parsers.base import BaseParser
    from redis.asyncio.client import Pipeline

    from stream.sinks.redis_store import redis_outage

    class Parser(BaseParser):
        def on_connect(self, *_: object) -> None: ...

        def on_disconnect(self, *_: object) -> None: ...

    def reply(text: str, in_pipeline: bool) -> Exception:
        exc = Parser().parse_error(text)
        if in_pipeline:
            Pipeline.annotate_exception(None, exc, 1, ("EVALSHA", "abc", "2", "listing:x"))  # type: ignore[arg-type]
        return exc

    for in_pipeline in (False, True):
        for text in (
            "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT.",
            "NOREPLICAS Not enough good replicas to write.",
            "OOM command not allowed when used memory > 'maxmemory'.",
            "READONLY You can't write against a read only replica.",
            "LOADING Redis is loading the dataset in memory",
        ):
            assert redis_outage(reply(text, in_pipeline)), (text, in_pipeline)
        assert not redis_outage(reply("ERR Error running script: attempt to compare nil with number", in_pipeline))
        assert not redis_outage(reply("NOPERM this user has no permissions to run the 'evalsha' command", in_pipeline))
    assert redis_outage(rexc.ConnectionError("lost")) and not redis_outage(rexc.AuthenticationError("bad"))


class _Response:
    """What tritonclient's InferResult gives the client: RESULT rows (JSON), TIMING, the serving version."""

    def __init__(self, n: int) -> None:
        import numpy as np

        one = {"category": {"id": "c", "name": "c", "path": ["c"]}, "confidence": 0.9, "alternatives": [], "tags": []}
        self._out = {"RESULT": np.array([orjson.dumps(one)] * n, dtype=object), "TIMING": np.array([[1.0, n]])}

    def as_numpy(self, name: str) -> object:
        return self._out[name]

    def get_response(self) -> object:
        return type("R", (), {"model_version": "3"})()


def test_a_model_that_fails_every_request_is_an_outage_and_one_failing_on_an_event_isolates_it() -> None:
    """INTERNAL from the model (its own code failed, for every request merged into that execution) was taken for
    the events' fault: halved down to single events, every one dead-lettered. Now a known-good title decides: it
    fails too — the model is down, retried like an outage (nothing dead-lettered); it passes — the batch holds the
    cause, isolated as before. The Triton answers are fakes: this is the client's and the pipeline's logic."""
    from stream.classify.triton_client import CANARY_TITLE, TritonClassifier

    internal = InferenceServerException("classifier failed: RuntimeError()", status="StatusCode.INTERNAL")

    class Fake(TritonClassifier):
        def __init__(self, broken_calls: int) -> None:
            super().__init__("127.0.0.1:1", "listing_classifier", max_backoff_s=0.05)
            self.broken_calls, self.calls = broken_calls, []

        async def _infer_once(self, titles, descriptions, brands):  # type: ignore[no-untyped-def]
            self.calls.append(list(titles))
            if len(self.calls) <= self.broken_calls or any("POISON" in t for t in titles):
                raise internal
            return _Response(len(titles))

    records = [_rec(i, "POISON pill" if i == 2 else f"phone case {i}") for i in range(4)]
    healthy = [_rec(i, f"phone case {i}") for i in range(4)]
    down_then_up = Fake(broken_calls=5)  # the model fails everything for five requests (canaries included)
    pipeline = Pipeline(Settings(), source="live", classifier=down_then_up, store=None, out=None)  # type: ignore[arg-type]
    prepared = asyncio.run(pipeline.prepare(healthy))
    assert not prepared.invalid and len(prepared.classified) == 4  # retried, nothing dead-lettered
    assert [CANARY_TITLE] in down_then_up.calls
    poisoned = Fake(broken_calls=0)
    pipeline = Pipeline(Settings(), source="live", classifier=poisoned, store=None, out=None)  # type: ignore[arg-type]
    prepared = asyncio.run(pipeline.prepare(records))
    assert [rec.offset for rec, _ in prepared.invalid] == [2] and len(prepared.classified) == 3
    assert prepared.invalid[0][1].error_type == "model_rejected"
    # a failed pass fails every request merged into it, other workers' too: a lone event whose request failed once
    # is sent again (the model passes the known-good title) before it is blamed
    once = Fake(broken_calls=1)
    pipeline = Pipeline(Settings(), source="live", classifier=once, store=None, out=None)  # type: ignore[arg-type]
    prepared = asyncio.run(pipeline.prepare(healthy[:1]))
    assert not prepared.invalid and len(prepared.classified) == 1
    assert once.calls == [["phone case 0"], [CANARY_TITLE], ["phone case 0"]]


def test_backfill_rides_over_redis_and_kafka_blips() -> None:
    """The governor's read of the live side (Redis) and the backfill's commit (kafka-python gives up after its
    request timeout) are retried or skipped over, not the end of the run: a Redis restart killed the backfill with
    a traceback. An error that is not an outage still stops it."""
    import redis.exceptions as rexc
    from kafka import errors as kerr

    from stream.backfill import kafka_retriable
    from stream.governor import Governor

    class DownRedis:
        async def xrange(self, *_: object, **__: object) -> list:
            raise rexc.ConnectionError("Error 111 connecting to redis")

    g = Governor(redis=DownRedis(), stream="s", target_ms=250, min_rate=5, step=20, start_rate=80)
    asyncio.run(g.control(now=0.0))
    assert g.rate == 80 and g.live_ms is None  # no reading: the rate is kept

    class BrokenRedis:
        async def xrange(self, *_: object, **__: object) -> list:
            raise rexc.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")

    with pytest.raises(rexc.ResponseError):
        asyncio.run(Governor(redis=BrokenRedis(), stream="s", target_ms=250).control(now=0.0))
    assert kafka_retriable(kerr.KafkaTimeoutError()) and kafka_retriable(kerr.KafkaConnectionError())
    assert kafka_retriable(kerr.NotCoordinatorError()) and kafka_retriable(OSError("reset"))
    assert not kafka_retriable(kerr.TopicAuthorizationFailedError()) and not kafka_retriable(ValueError())


def test_kafka_sends_waiting_out_an_outage_count_as_retries_and_a_stop_does_not_wait_for_ever(monkeypatch) -> None:
    """An idempotent aiokafka producer never expires a batch while the broker is away: the wait for the
    acknowledgement had no end and counted nothing, so /healthz's stall clock took the worker for hung (a restart in
    the middle of an outage) and a backfill's stop waited for the broker. The producer here is a fake (its
    acknowledgements come late, its stop never ends): this is the sink's logic."""
    import time

    from stream import health, metrics
    from stream.config import KafkaSettings
    from stream.sinks import kafka_out
    from stream.sinks.kafka_out import KafkaOut, OutRecord

    monkeypatch.setattr(kafka_out, "REQUEST_TIMEOUT_MS", 50)

    class SlowBroker:
        async def send(self, topic: str, value: bytes, key: bytes | None = None) -> asyncio.Future:
            fut = asyncio.get_running_loop().create_future()
            asyncio.get_running_loop().call_later(0.3, fut.set_result, None)  # acknowledged after six timeouts
            return fut

        async def stop(self) -> None:
            await asyncio.sleep(3600)  # flushing to a broker that never comes back

    out = KafkaOut(KafkaSettings())
    out._producer = SlowBroker()
    before = metrics.RETRIES.labels("kafka")._value.get()
    asyncio.run(out.send_all([OutRecord("t", b"k", b"v")]))
    assert metrics.RETRIES.labels("kafka")._value.get() - before >= 3
    assert time.monotonic() - health.HEALTH.last_retry < 5  # the stall clock knows it is waiting, not hung
    started = time.monotonic()
    asyncio.run(out.stop(timeout_s=0.2))
    assert time.monotonic() - started < 2 and out._producer is None


def test_a_cancelled_conveyor_stops_the_batches_it_is_still_classifying() -> None:
    """At a forced stop the batches waiting for Triton were left running (retrying after the client closed)."""
    from stream.pipeline.conveyor import Conveyor

    started: list[int] = []
    cancelled: list[int] = []

    class Stuck:
        async def prepare(self, records: list, timing: object = None) -> None:
            started.append(len(records))
            try:
                await asyncio.sleep(3600)  # Triton away: retried for ever
            except asyncio.CancelledError:
                cancelled.append(len(records))
                raise

    async def scenario() -> None:
        async def done(*_: object) -> None: ...

        conveyor = Conveyor(Stuck(), max_in_flight=3, on_done=done)  # type: ignore[arg-type]
        conveyor.start()
        for n in (1, 2, 3):
            await conveyor.submit([_rec(i, "t") for i in range(n)], token=n)
        await asyncio.sleep(0.05)
        await asyncio.wait_for(conveyor.cancel(), 5)
        assert sorted(cancelled) == [1, 2, 3]  # by the time cancel() returns (asyncio.run would do it later)

    asyncio.run(scenario())
    assert sorted(started) == [1, 2, 3]


def test_a_batch_starts_its_stages_when_it_gets_an_in_flight_slot_not_before() -> None:
    """With every slot busy the next submit waits; that wait was in no stage (a batch's stages summed to 0.09 s
    while it finished 21 s after its dispatch time) and its span started 21 s early."""
    from stream.pipeline.conveyor import Conveyor
    from stream.pipeline.timing import BatchTiming

    release = asyncio.Event()

    class Slow:
        async def prepare(self, records: list, timing: object = None) -> None:
            await release.wait()
            raise asyncio.CancelledError  # never reaches the sinks here

    async def scenario() -> float:
        async def done(*_: object) -> None: ...

        conveyor = Conveyor(Slow(), max_in_flight=1, on_done=done)  # type: ignore[arg-type]
        conveyor.start()
        await conveyor.submit([_rec(0, "t")], token=0, timing=BatchTiming("live", 1))
        second = BatchTiming("live", 1)
        formed = second.dispatched_ms
        waiting = asyncio.ensure_future(conveyor.submit([_rec(1, "t")], token=1, timing=second))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # the one slot is taken
        conveyor._slots.release()  # as the first batch's end would
        await asyncio.wait_for(waiting, 5)
        release.set()
        await conveyor.cancel()
        return (second.dispatched_ms - formed) / 1000

    assert asyncio.run(scenario()) >= 0.25


def test_the_triton_channel_reconnects_within_the_retry_backoff() -> None:
    """gRPC's reconnect backoff grows to 120 s by default: after a 65 s Triton outage the worker resumed 12-16 s
    after Triton was back, whatever the retry backoff said."""
    from stream.classify.triton_client import channel_args

    args = dict(channel_args(5.0))
    assert args["grpc.max_reconnect_backoff_ms"] == 5000 and args["grpc.initial_reconnect_backoff_ms"] <= 1000
    assert args["grpc.max_receive_message_length"] > 2**30  # tritonclient's own options are kept
    assert dict(channel_args(0.1))["grpc.max_reconnect_backoff_ms"] == 1000


def test_a_stop_that_outlasts_its_timeout_names_the_failing_dependency() -> None:
    """It always blamed Kafka's final commit, also while Redis was refusing writes and Kafka was fine."""
    from stream.health import Health

    h = Health()
    for d in ("kafka", "redis", "triton"):
        h.probed(d, True)
    assert h.failing() == []
    h.retried("redis", OSError("OOM command not allowed"))
    assert h.failing() == ["redis"]


def test_a_stored_category_path_reads_back_as_the_path_it_was_written_from() -> None:
    # the worker writes `category_path`, the review page, the feedback applier, shadow and the demo read it back
    path = ["Watches", "Wrist Watches", "Zorbo Wrist Watches"]
    assert path_field(path) == "Watches > Wrist Watches > Zorbo Wrist Watches"
    assert stored_path(path_field(path)) == path
    assert stored_path("") == []
