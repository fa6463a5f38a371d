"""The streaming worker end to end on the real stack: Kafka -> Faust worker -> Triton -> Redis + topics."""

from __future__ import annotations

import csv
import random
import time
import uuid

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtools.workers import WorkerProcess, isolated, produce_raw
from stream.config import Settings
from support import direct_categories, listing, read_topic, redis_items, result_fields, wait_for

pytestmark = pytest.mark.stack


def real_titles(n: int, seed: int = 7) -> list[dict[str, str]]:
    from training.config import TrainingSettings

    path = TrainingSettings().data_dir / "flipkart_20k.csv"
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["product_name"].strip()]
    random.Random(seed).shuffle(rows)
    return rows[:n]


@pytest.fixture
def worker_factory(stack, tmp_path):
    started: list[WorkerProcess] = []

    def make(s: Settings, **env: str) -> WorkerProcess:
        w = WorkerProcess(s, tmp_path, **env).start()
        started.append(w)
        return w

    yield make
    for w in started:
        w.kill()


def _latest_by_key(records: list) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for m in records:
        out[m.key.decode()] = orjson.loads(m.value)
    return out


def test_happy_path_real_titles(stack, worker_factory) -> None:
    s = isolated(stack, "happy")
    rows = real_titles(60)
    ids = [f"fk-{r['uniq_id']}" for r in rows]
    produce_raw(s, [listing(i, r["product_name"], brand=r["brand"] or None) for i, r in zip(ids, rows, strict=True)])
    w = worker_factory(s)
    wait_for(lambda: len(redis_items(s, ids)) == len(ids), 180, "all items in Redis", w.log_tail)

    stored = redis_items(s, ids)
    classified = _latest_by_key(read_topic(s, s.topics.classified))
    assert set(classified) == set(ids)
    expected = dict(zip(ids, direct_categories(s, [r["product_name"] for r in rows]), strict=True))
    for iid in ids:
        rec, h = classified[iid], stored[iid]
        assert rec["category"]["id"] == h["category_id"]
        assert h["category_id"] in expected[iid], (iid, h["category_id"], expected[iid])
        assert rec["category"]["path"] and h["category_path"] == " > ".join(rec["category"]["path"])
        assert rec["model"]["name"] == "listing_classifier" and rec["model"]["version"] == h["model_version"]
        assert rec["model"]["version"].isdigit()
        assert rec["source"] == "live" and rec["listing_version"] == 0
        assert 0.0 <= rec["confidence"] <= 1.0
        assert rec["needs_review"] == (rec["confidence"] < s.worker.review_threshold)
    review = {m.key.decode() for m in read_topic(s, s.topics.review, timeout_s=3)}
    assert review == {i for i in ids if classified[i]["needs_review"]}
    assert w.alive()


malformed = st.one_of(
    st.binary(max_size=64).filter(lambda b: not b.strip().startswith((b"{", b"[", b'"'))),
    st.sampled_from([b"", b"null", b"[]", b"42", b'"title"', b"{", b"\xff\xfe{}"]),
    st.builds(lambda d: orjson.dumps(d), st.fixed_dictionaries({"item_id": st.text(max_size=5)})),  # no title
    st.builds(
        lambda iid, t: orjson.dumps({"item_id": iid, "title": t}),
        st.text(min_size=1, max_size=8),
        st.sampled_from(["", "   ", None, 5, ["x"], {"a": 1}]),
    ),
    st.builds(
        lambda p: orjson.dumps({"item_id": "x", "title": "phone case", "price": p}),
        st.one_of(st.integers(min_value=-(2**63), max_value=-1), st.text(max_size=3), st.booleans()),
    ),
    st.builds(
        lambda v: orjson.dumps({"item_id": "x", "title": "phone case", "listing_version": v}),
        st.one_of(
            st.integers(min_value=-(2**63), max_value=-1),
            st.floats(allow_nan=False, allow_infinity=False),  # orjson writes infinity as null, a valid value
            st.text(max_size=3),
        ),
    ),
)


@pytest.fixture(scope="module")
def dlq_worker(stack, tmp_path_factory):
    s = isolated(stack, "dlq")
    w = WorkerProcess(s, tmp_path_factory.mktemp("dlq")).start()
    yield s, w
    w.kill()


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(bad=st.lists(malformed, min_size=20, max_size=60))
def test_malformed_events_all_land_in_dlq(dlq_worker, bad: list[bytes]) -> None:
    s, w = dlq_worker
    from stream.events.contract import InvalidEvent, parse_listing
    from stream.events.dlq import decode_dlq_payload

    for value in bad:  # the generator only makes invalid events
        with pytest.raises(InvalidEvent):
            parse_listing(value)
    marker = uuid.uuid4().hex[:8]
    good_id = f"good-{marker}"
    keys = [f"bad-{marker}-{i}".encode() for i in range(len(bad))]
    produce_raw(s, [*zip(keys, bad, strict=True), listing(good_id, "Silicone back cover for mobile phone")])
    wait_for(lambda: bool(redis_items(s, [good_id])), 120, "the valid event after the bad ones", w.log_tail)
    dlq = [orjson.loads(m.value) for m in read_topic(s, s.topics.dlq, timeout_s=3)]
    mine = {d["key"]: d for d in dlq if d["key"] and d["key"].startswith(f"bad-{marker}")}
    assert len(mine) == len(bad)
    for key, value in zip(keys, bad, strict=True):
        d = mine[key.decode()]
        assert d["error"] and d["error_type"] and d["topic"] == s.topics.input
        assert isinstance(d["partition"], int) and isinstance(d["offset"], int) and d["failed_at"]
        assert decode_dlq_payload(d) == value
    assert w.alive()


def test_hostile_record_metadata_neither_crashes_nor_wedges_the_worker(dlq_worker) -> None:
    """Two records the contract cannot see, both found by reading the code: a Kafka timestamp in microseconds on
    an event without `listed_at` (the broker accepts any; the worker crashed formatting year 55,000, and crashed
    again on every redelivery), and a malformed event whose 300 KB key made a DLQ record over Kafka's 1 MiB
    (a send Kafka refuses for ever held the partition). Both flow; the events after them too."""
    from kafka import KafkaProducer

    from stream import connections

    s, w = dlq_worker
    marker = uuid.uuid4().hex[:8]
    odd_time, after = f"us-{marker}", f"after-{marker}"
    producer = KafkaProducer(**connections.kafka(s.kafka), acks="all", max_request_size=2_000_000)
    value = orjson.dumps({"item_id": odd_time, "title": "Silicone back cover for mobile phone"})
    producer.send(s.topics.input, key=odd_time.encode(), value=value, timestamp_ms=int(time.time() * 1e6))
    huge_key = f"bad-{marker}-".encode() + b"\x01" * 300_000
    producer.send(s.topics.input, key=huge_key, value=b"{" * 740_000)
    producer.send(s.topics.input, key=after.encode(), value=listing(after, "Peter England jeans")[1])
    producer.flush()
    producer.close()
    wait_for(lambda: len(redis_items(s, [odd_time, after])) == 2, 120, "the events around the hostile ones", w.log_tail)
    assert redis_items(s, [odd_time])[odd_time]["event_time"] == ""  # no usable time, not a crash
    dlq = [orjson.loads(m.value) for m in read_topic(s, s.topics.dlq, timeout_s=3)]
    (mine,) = [d for d in dlq if d["key"] and d["key"].startswith(f"bad-{marker}")]
    assert mine["key_truncated"] is True and mine["payload_truncated"] is True and mine["error_type"] == "not_json"
    assert w.alive()


def test_sigkill_mid_stream_loses_nothing(stack, worker_factory) -> None:
    s = isolated(stack, "crash")
    rows = real_titles(2000, seed=11)
    ids = [f"ck-{i}-{r['uniq_id'][:10]}" for i, r in enumerate(rows)]
    produce_raw(s, [listing(i, r["product_name"]) for i, r in zip(ids, rows, strict=True)])
    # 2,000 events, one request in flight: seconds of work, so the kill lands part-way through them (CI once saw
    # all of 400 done between two polls of a batching worker); batches of 16 are committed only as they finish,
    # so the kill leaves events consumed but not committed, which the next worker must redeliver
    w = worker_factory(s, LISTINGS_MAX_BATCH="16", LISTINGS_MAX_IN_FLIGHT="1")
    wait_for(lambda: len(redis_items(s, ids[:200])) >= 40, 180, "first results", w.log_tail, interval=0.1)
    w.kill()
    done_before = redis_items(s, ids)
    assert 0 < len(done_before) < len(ids), "the kill must land mid-stream"
    w2 = worker_factory(s, LISTINGS_MAX_BATCH="16")
    wait_for(lambda: len(redis_items(s, ids)) == len(ids), 240, "every item after restart", w2.log_tail)
    after = redis_items(s, ids)
    # redelivered events left what they had written identical, unless its outputs were never confirmed and the
    # model answered differently in its new batch (int8: any field of the record, a confidence too): then the new
    # answer replaced it, in Redis and on Kafka
    for iid, h in done_before.items():
        if after[iid]["result_digest"] == h["result_digest"]:
            assert result_fields(after[iid]) == result_fields(h)
        else:
            assert h["outputs_pending"] == "1", (iid, h, after[iid])
    classified = _latest_by_key(read_topic(s, s.topics.classified))
    assert set(classified) == set(ids)
    for iid in ids:  # the record last sent is what Redis holds
        assert classified[iid]["category"]["id"] == after[iid]["category_id"]
        assert abs(classified[iid]["confidence"] - float(after[iid]["confidence"])) < 1e-6, iid


def test_triton_down_then_back_loses_nothing(local, stack, worker_factory) -> None:
    from devtools.stack import control

    s = isolated(stack, "tdown")
    w = worker_factory(s)
    first = [f"td-a-{i}" for i in range(20)]
    produce_raw(s, [listing(i, "Cotton printed women's kurta") for i in first])
    wait_for(lambda: len(redis_items(s, first)) == len(first), 180, "results before the outage", w.log_tail)
    control.down(local, ["triton"])
    try:
        second = [f"td-b-{i}" for i in range(30)]
        produce_raw(s, [listing(i, "Stainless steel pressure cooker 5 L") for i in second])
        time.sleep(8)  # the worker keeps retrying; it must neither crash nor skip these events
        assert w.alive(), w.log_tail()
        assert redis_items(s, second) == {}, "nothing can be classified while Triton is down"
    finally:
        control.up(local, ["triton"])
    wait_for(lambda: len(redis_items(s, second)) == len(second), 180, "results after Triton came back", w.log_tail)
    assert w.alive()


def test_lower_listing_version_never_overwrites_and_tag_updates_only_on_change(stack, worker_factory) -> None:
    s = isolated(stack, "versions")
    iid = f"v-{uuid.uuid4().hex[:6]}"
    other = f"v2-{uuid.uuid4().hex[:6]}"
    produce_raw(
        s,
        [
            listing(iid, "Peter England Men Party Blue Jeans", listing_version=3),
            listing(iid, "Nike Women Pink Running Shoes", listing_version=1),  # older edit, arrives later
            listing(other, "Turtle Check Men Navy Blue Shirt", listing_version=1),
            listing(other, "Turtle Check Men Navy Blue Shirt", listing_version=2),  # same title: same tags
        ],
    )
    w = worker_factory(s)
    wait_for(
        lambda: redis_items(s, [other]).get(other, {}).get("listing_version") == "2", 180, "both items", w.log_tail
    )
    h = redis_items(s, [iid])[iid]
    assert h["listing_version"] == "3" and h["title"] == "Peter England Men Party Blue Jeans"
    classified = [orjson.loads(m.value) for m in read_topic(s, s.topics.classified) if m.key.decode() == iid]
    assert [c["listing_version"] for c in classified] == [3], "a stale result must not reach the output topic"
    updates = [orjson.loads(m.value) for m in read_topic(s, s.topics.tag_updates, timeout_s=3)]
    mine = [u for u in updates if u["item_id"] == other]
    stored_tags = orjson.loads(redis_items(s, [other])[other]["tags"])
    # the second edit did not change the tag set: at most the first one produced an update
    assert len(mine) == (1 if stored_tags else 0)
    if mine:
        assert mine[0]["added"] == stored_tags and mine[0]["removed"] == [] and mine[0]["tags"] == stored_tags
