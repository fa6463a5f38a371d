"""The Redis sink's atomic "newer wins" script, against the real Redis of the test stack."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from stream import keys
from stream.sinks.redis_store import RedisStore, StoreItem

pytestmark = pytest.mark.stack


def _item(item_id: str, lv: int, mv: int, cat: str, tags: list[str]) -> StoreItem:
    return StoreItem(item_id, lv, mv, cat, tags, {"item_id": item_id, "source": "live", "category_id": cat})


STREAM = f"test:updates:{uuid.uuid4().hex[:6]}"


def _store(stack) -> RedisStore:
    return RedisStore(stack.redis.model_copy(update={"updates_stream": STREAM, "updates_maxlen": 1000}))


def _apply(stack, items: list[StoreItem], confirm: bool = False) -> list:
    async def go() -> list:
        store = _store(stack)
        try:
            out = await store.apply(items)
            if confirm:
                await store.confirm_outputs(items)
            return out
        finally:
            await store.close()

    return asyncio.run(go())


@pytest.fixture
def r(stack):
    import redis

    client = redis.Redis.from_url(stack.redis.url, decode_responses=True)
    yield client
    client.close()


def test_first_write_sets_hash_indexes_and_stream(stack, r) -> None:
    iid = f"it-{uuid.uuid4().hex[:8]}"
    [out] = _apply(stack, [_item(iid, 1, 1, "c1", ["gender:men", "colour:blue"])])
    assert out.status == "applied" and out.added == ["colour:blue", "gender:men"] and out.removed == []
    h = r.hgetall(keys.listing(iid))
    assert h["category_id"] == "c1" and h["listing_version"] == "1" and h["model_version"] == "1"
    assert iid in r.smembers("category:c1")
    assert iid in r.smembers("tag:gender:men") and iid in r.smembers("tag:colour:blue")


def test_newer_listing_version_wins_and_moves_indexes(stack, r) -> None:
    iid = f"it-{uuid.uuid4().hex[:8]}"
    _apply(stack, [_item(iid, 1, 1, "c1", ["a", "b"])])
    [out] = _apply(stack, [_item(iid, 2, 1, "c2", ["b", "c"])])
    assert out.status == "applied" and out.added == ["c"] and out.removed == ["a"]
    assert iid not in r.smembers("category:c1") and iid in r.smembers("category:c2")
    assert iid not in r.smembers("tag:a") and iid in r.smembers("tag:b") and iid in r.smembers("tag:c")


def test_lower_listing_version_never_overwrites(stack, r) -> None:
    iid = f"it-{uuid.uuid4().hex[:8]}"
    _apply(stack, [_item(iid, 5, 1, "new", ["x"])])
    [out] = _apply(stack, [_item(iid, 4, 9, "old", ["y"])])  # even with a newer model
    assert out.status == "stale"
    assert r.hget(keys.listing(iid), "category_id") == "new"
    assert iid not in r.smembers("category:old") and iid not in r.smembers("tag:y")


def test_same_listing_version_newer_model_wins_older_loses(stack, r) -> None:
    iid = f"it-{uuid.uuid4().hex[:8]}"
    _apply(stack, [_item(iid, 1, 2, "m2", ["x"])])
    [older] = _apply(stack, [_item(iid, 1, 1, "m1", ["y"])])
    assert older.status == "stale" and r.hget(keys.listing(iid), "category_id") == "m2"
    [newer] = _apply(stack, [_item(iid, 1, 3, "m3", ["y"])])
    assert newer.status == "applied" and newer.added == ["y"] and newer.removed == ["x"]
    assert r.hget(keys.listing(iid), "model_version") == "3"


def test_confirmed_outputs_make_a_replay_a_no_op(stack, r) -> None:
    iid = f"it-{uuid.uuid4().hex[:8]}"
    [first] = _apply(stack, [_item(iid, 1, 1, "c", ["a"])], confirm=True)
    assert first.needs_outputs and r.hget(keys.listing(iid), "outputs_pending") == "0"
    [again] = _apply(stack, [_item(iid, 1, 1, "c", ["a"])])
    assert again.status == "same" and not again.pending and not again.needs_outputs


def test_confirm_does_not_touch_a_newer_result(stack, r) -> None:
    iid = f"it-{uuid.uuid4().hex[:8]}"
    old = _item(iid, 1, 1, "c", ["a"])
    _apply(stack, [old])
    _apply(stack, [_item(iid, 2, 1, "d", ["b"])])

    async def confirm_old() -> None:
        store = _store(stack)
        await store.confirm_outputs([old])
        await store.close()

    asyncio.run(confirm_old())
    assert r.hget(keys.listing(iid), "outputs_pending") == "1"


def test_redelivery_is_same_and_reports_the_last_tag_change(stack, r) -> None:
    iid = f"it-{uuid.uuid4().hex[:8]}"
    first = _apply(stack, [_item(iid, 1, 1, "c", ["a"])])[0]
    before = r.hgetall(keys.listing(iid))
    entries = r.xlen(STREAM)
    again = _apply(stack, [_item(iid, 1, 1, "c", ["a"])])[0]
    assert first.status == "applied" and again.status == "same" and again.pending and again.needs_outputs
    # outputs never confirmed (a crash between Redis and Kafka): the tag change is reported again
    assert again.added == ["a"] and again.removed == []
    assert r.hgetall(keys.listing(iid)) == before
    assert r.xlen(STREAM) == entries  # no update-stream entry for a non-change
    last = r.xrevrange(STREAM, count=1)[0][1]
    assert last["item_id"] == iid and last["category_id"] == "c"


def test_a_different_redelivered_answer_replaces_an_unconfirmed_one(stack, r) -> None:
    """The same listing and model version answered differently (int8 answers move with their batch-mates): over
    an unconfirmed result it is applied, so the outputs re-sent are what Redis holds; over a confirmed one it is
    the same (nothing written: the confirmed answer was published)."""
    iid = f"it-{uuid.uuid4().hex[:8]}"
    _apply(stack, [_item(iid, 1, 1, "c", ["a"])])
    _apply(stack, [_item(iid, 2, 1, "c", ["a"])])  # listing_version 2, never confirmed
    again = _apply(stack, [_item(iid, 2, 1, "d", ["b"])], confirm=True)[0]  # its outputs confirmed once sent
    assert again.status == "applied" and again.needs_outputs
    assert r.hget(keys.listing(iid), "category_id") == "d"
    assert again.prev_tags == ["a"] and again.added == ["b"] and again.removed == ["a"]
    assert r.sismember("category:d", iid) and not r.sismember("category:c", iid)
    assert r.hget(keys.listing(iid), "outputs_pending") == "0"
    later = _apply(stack, [_item(iid, 2, 1, "e", ["c"])])[0]
    assert later.status == "same" and not later.needs_outputs
    assert r.hget(keys.listing(iid), "category_id") == "d"


def _record(iid: str, lv: int, cat: str, tags: list[str], origin: str, confidence: float = 0.9) -> StoreItem:
    """A result of the input record `origin` (topic:partition:offset), as the pipeline stores it."""
    import dataclasses

    digest = f"{cat}|{','.join(tags)}|{confidence}"
    return dataclasses.replace(_item(iid, lv, 1, cat, tags), origin=origin, digest=digest)


def test_another_record_of_the_same_edit_never_replaces_the_first_even_in_one_batch(stack, r) -> None:
    """Two input records with the same listing_version (a duplicate, or a second edit its producer did not
    number): the first stored wins whether or not its outputs are confirmed yet (one micro-batch), and the other
    sends nothing — no second classified record, no contradicting tag update."""
    iid = f"it-{uuid.uuid4().hex[:8]}"
    first, second, dup = _apply(
        stack,
        [
            _record(iid, 0, "phone-case", ["t-phone"], "in:0:10"),
            _record(iid, 0, "shoe", ["t-shoe"], "in:0:11"),
            _record(iid, 0, "phone-case", ["t-phone"], "in:0:12"),
        ],
    )
    assert first.status == "applied" and first.needs_outputs
    assert second.status == "same" and not second.needs_outputs
    assert dup.status == "same" and not dup.needs_outputs
    assert r.hget(keys.listing(iid), "category_id") == "phone-case"
    assert r.smembers("tag:t-shoe") & {iid} == set()


def test_a_redelivery_answered_otherwise_in_any_field_replaces_the_unconfirmed_write(stack, r) -> None:
    """The same input record again over an unconfirmed write: answered the same, its outputs are re-sent as
    stored; answered with another confidence (same category and tags), it replaces the write, so the record
    re-sent is what Redis holds."""
    iid = f"it-{uuid.uuid4().hex[:8]}"
    _apply(stack, [_record(iid, 1, "c", ["a"], "in:3:7", confidence=0.9)])
    same = _apply(stack, [_record(iid, 1, "c", ["a"], "in:3:7", confidence=0.9)])[0]
    assert same.status == "same" and same.needs_outputs
    moved = _apply(stack, [_record(iid, 1, "c", ["a"], "in:3:7", confidence=0.3)])[0]
    assert moved.status == "applied" and moved.needs_outputs and moved.added == ["a"]
    assert r.hget(keys.listing(iid), "result_digest") == "c|a|0.3"


def test_batch_in_one_round_trip_keeps_order_per_item(stack, r) -> None:
    iid = f"it-{uuid.uuid4().hex[:8]}"
    outs = _apply(stack, [_item(iid, 1, 1, "v1", ["a"]), _item(iid, 2, 1, "v2", ["b"]), _item(iid, 1, 1, "v1", [])])
    assert [o.status for o in outs] == ["applied", "applied", "stale"]
    assert r.hget(keys.listing(iid), "category_id") == "v2"
    assert r.smembers("tag:a") & {iid} == set()


def test_update_stream_times_live_results_for_the_backfill_governor(stack, r) -> None:
    """Each stream entry carries the listing's event time, so the governor reads live latency from the stream
    alone: entry id (when Redis stored it) minus event_time, at its percentile, backfill entries left out."""
    import time

    from stream.governor import Governor
    from stream.timefmt import iso

    stream = f"test:gov:{uuid.uuid4().hex[:6]}"
    now = int(time.time() * 1000)
    ages = [40, 80, 120, 160, 900]  # ms between each listing's event and its store
    items = []
    for age in ages:
        iid = f"gov-{uuid.uuid4().hex[:8]}"
        fields = {"item_id": iid, "source": "live", "category_id": "c1", "event_time": iso(now - age)}
        items.append(StoreItem(iid, 1, 1, "c1", [], fields))
    old = f"gov-bf-{uuid.uuid4().hex[:8]}"  # a backfill result of a year-old listing: not live, not counted
    items.append(StoreItem(old, 1, 1, "c1", [], {"item_id": old, "source": "backfill", "event_time": iso(now - 3e10)}))

    async def go() -> tuple[float | None, float | None, float | None]:
        store = RedisStore(stack.redis.model_copy(update={"updates_stream": stream, "updates_maxlen": 1000}))
        try:
            await store.apply(items)
            stored = int((await store.client.xrevrange(stream, count=1))[0][0].split(b"-")[0])
            g99 = Governor(store.client, stream, target_ms=0, percentile=99)
            g50 = Governor(store.client, stream, target_ms=0, percentile=50)
            return stored, await g99.live_latency(), await g50.live_latency()
        finally:
            await store.close()

    stored, p99, p50 = asyncio.run(go())
    entries = r.xrange(stream)
    assert [e[1]["event_time"] for e in entries] == [it.fields["event_time"] for it in items]
    lag = stored - now  # how long after `now` the script ran
    assert p99 == pytest.approx(900 + lag, abs=5)  # 5 values: the p99 is the largest
    assert p50 == pytest.approx(120 + lag, abs=5)
    r.delete(stream)


def _timed_entries(r, stream: str, stored: list[int], latency: list[float], sources: list[str] | None = None) -> None:
    """Update-stream entries stored at the given ms (their ids) for listings `latency` ms older."""
    from stream.timefmt import iso

    pipe = r.pipeline(transaction=False)
    for i, (ms, lat) in enumerate(zip(stored, latency, strict=True)):
        source = sources[i] if sources else "live"
        pipe.xadd(stream, {"item_id": f"g{i}", "source": source, "event_time": iso(ms - lat)}, id=f"{ms}-{i}")
    pipe.execute()


def _governor_reads(stack, stream: str, writes: list) -> list:
    """For each of `writes` (a function that adds entries): run it, then one Governor.live_latency reading; returns
    (p99, live results the governor holds) per reading."""
    from stream import connections
    from stream.governor import Governor

    async def go() -> list:
        client = connections.redis_async(stack.redis)
        try:
            g = Governor(client, stream, target_ms=0, percentile=99)
            out = []
            for write in writes:
                write()
                out.append((await g.live_latency(), len(g._samples)))
            return out
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_governor_reads_every_live_result_of_its_window_once(stack, r) -> None:
    """The governor's p99 is over every live result of the last 3 s, not the newest few hundred entries: a slow
    spell at the start of the window still counts (the reader before 12-06 looked at the newest 300 entries, here
    all fast), and each later look reads only the entries written since the one before."""
    import time

    stream = f"test:gov-window:{uuid.uuid4().hex[:6]}"
    now = int(time.time() * 1000)
    # 50 results older than the window (not counted), then 1,000 over the last 2 s, the oldest 30 slow; one in
    # five is a backfill result (not live)
    stored = [now - 5000 + i for i in range(50)] + [now - 2000 + 2 * i for i in range(1000)]
    lat = [5000.0] * 50 + [900.0 if i < 30 else 100.0 for i in range(1000)]
    sources = ["live"] * 50 + ["backfill" if i % 5 == 4 else "live" for i in range(1000)]
    later = int(time.time() * 1000) + 1
    try:
        (p99, held), (p99_after, held_after) = _governor_reads(
            stack,
            stream,
            [
                lambda: _timed_entries(r, stream, stored, lat, sources),
                lambda: _timed_entries(r, stream, [later + i for i in range(10)], [50.0] * 10),
            ],
        )
        # 800 live results, 24 of them slow: the p99 (the 8th largest) is a slow one
        assert held == 800 and p99 == pytest.approx(900, abs=1)
        assert held_after == 810 and p99_after == pytest.approx(900, abs=1)
    finally:
        r.delete(stream)


def test_governor_probe_reads_every_live_result_since_it_settled(stack, r) -> None:
    """A probe's baseline is every live result since its first second (7 s of them), not the last 3 s window's: a
    slow spell early in the pause counts in the probe's reading and not in a window's."""
    import time

    from stream import connections
    from stream.governor import Governor

    stream = f"test:gov-probe:{uuid.uuid4().hex[:6]}"
    now = int(time.time() * 1000)
    # 100 slow live results 6 s ago, then 900 fast ones over the last 2 s
    _timed_entries(
        r,
        stream,
        [now - 6000 + i for i in range(100)] + [now - 2000 + 2 * i for i in range(900)],
        [800.0] * 100 + [100.0] * 900,
    )

    async def go() -> tuple[float | None, float | None]:
        client = connections.redis_async(stack.redis)
        try:
            probe = await Governor(client, stream, target_ms=0).live_latency(since_ms=now - 7000)
            return probe, await Governor(client, stream, target_ms=0).live_latency()
        finally:
            await client.aclose()

    try:
        probe, window = asyncio.run(go())
        assert probe == pytest.approx(800, abs=1) and window == pytest.approx(100, abs=1)
    finally:
        r.delete(stream)


def test_governor_reads_the_newest_page_when_too_much_is_unread(stack, r, monkeypatch) -> None:
    """More unread entries than it reads in one look (a stream written faster than it pages): the governor takes the
    newest page of the window and reads on from there, instead of falling ever further behind."""
    import time

    from stream import governor

    monkeypatch.setattr(governor, "PAGE", 10)
    monkeypatch.setattr(governor, "MAX_PAGES", 2)
    stream = f"test:gov-page:{uuid.uuid4().hex[:6]}"
    now = int(time.time() * 1000)
    try:
        # 50 results: the 40 oldest slow, the newest 10 fast
        (p99, held), (p99_after, held_after) = _governor_reads(
            stack,
            stream,
            [
                lambda: _timed_entries(r, stream, [now - 1000 + i for i in range(50)], [700.0] * 40 + [60.0] * 10),
                lambda: _timed_entries(r, stream, [now + 100 + i for i in range(5)], [80.0] * 5),
            ],
        )
        assert held == 10 and p99 == pytest.approx(60, abs=1)
        assert held_after == 15 and p99_after == pytest.approx(80, abs=1)
    finally:
        r.delete(stream)


def test_governor_times_entries_of_older_workers_from_the_hash(stack, r) -> None:
    """An update-stream entry without `event_time` (written by a worker older than that field) is timed from its
    listing's hash (`classified_at` - `event_time`), so a mixed fleet stays protected."""
    import time

    from stream import connections
    from stream.governor import Governor
    from stream.timefmt import iso

    stream = f"test:gov-old:{uuid.uuid4().hex[:6]}"
    now = int(time.time() * 1000)
    iid = f"gov-old-{uuid.uuid4().hex[:8]}"
    r.hset(keys.listing(iid), mapping={"event_time": iso(now - 500), "classified_at": iso(now - 200)})
    r.xadd(stream, {"item_id": iid, "listing_version": "1", "model_version": "1", "source": "live"})

    async def go() -> float | None:
        client = connections.redis_async(stack.redis)
        try:
            return await Governor(client, stream, target_ms=0).live_latency()
        finally:
            await client.aclose()

    try:
        assert asyncio.run(go()) == pytest.approx(300, abs=1)
    finally:
        r.delete(stream, keys.listing(iid))
