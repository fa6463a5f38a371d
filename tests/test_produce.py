"""`listings produce` against the real Kafka of the local stack: what was sent is what a consumer reads back."""

from __future__ import annotations

import csv
import gzip
import json
import re
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.events import parse_listing
from stream.produce import read_listings
from support import read_topic

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"  # ../shared/data of the checkout
FLIPKART = DATA / "flipkart_20k.csv"
MYNTRA = DATA / "myntra_styles_44k.csv"


def sample_csv(src: Path, dst: Path, n: int) -> list[dict[str, str]]:
    with src.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = [row for _, row in zip(range(n), reader, strict=False)]
        fields = list(reader.fieldnames or [])
    with dst.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return rows


# ---------------------------------------------------------------- reading files (no Kafka)


FLIPKART_MAP = ["--map", "item_id=uniq_id", "--map", "title=product_name", "--map", "price=retail_price"]


def test_read_csv_maps_columns(tmp_path: Path) -> None:
    rows = sample_csv(FLIPKART, tmp_path / "f.csv", 20)
    mapping = {"item_id": "uniq_id", "title": "product_name", "price": "retail_price", "true_category": "l3"}
    got = list(read_listings(tmp_path / "f.csv", mapping=mapping))
    assert [g["item_id"] for g in got] == [r["uniq_id"] for r in rows]
    assert [g["title"] for g in got] == [r["product_name"] for r in rows]
    assert [g.get("true_category") for g in got] == [r["l3"] or None for r in rows]
    first = got[0]
    assert first["brand"] == rows[0]["brand"] and first["price"] == float(rows[0]["retail_price"])
    assert "uniq_id" not in first and "product_name" not in first  # mapped columns are not kept twice
    assert first["cat_path"] == rows[0]["cat_path"]  # other columns ride along by name
    assert all(parse_listing(orjson.dumps(g)).item_id == g["item_id"] for g in got)
    assert len(list(read_listings(tmp_path / "f.csv", limit=7, mapping=mapping))) == 7


def test_read_csv_with_item_id_and_title_columns(tmp_path: Path) -> None:
    rows = sample_csv(MYNTRA, tmp_path / "m.csv", 10)
    got = list(read_listings(tmp_path / "m.csv", mapping={"item_id": "id", "title": "productDisplayName"}))
    assert [g["item_id"] for g in got] == [r["id"] for r in rows]
    assert [g["title"] for g in got] == [r["productDisplayName"] for r in rows]
    assert got[0]["gender"] == rows[0]["gender"]
    (tmp_path / "ok.csv").write_text("item_id,title,listing_version,price\na,Phone case,3,9.5\nb,Mug,,\n")
    assert list(read_listings(tmp_path / "ok.csv")) == [
        {"item_id": "a", "title": "Phone case", "listing_version": 3, "price": 9.5},
        {"item_id": "b", "title": "Mug"},
    ]


def test_read_gzipped_and_differently_delimited_files(tmp_path: Path) -> None:
    want = [{"item_id": "a", "title": "Phone case, black", "price": 9.5}, {"item_id": "b", "title": "Mug"}]
    variants = {
        "excel.csv": "\ufeffitem_id;title;price\na;Phone case, black;9.5\nb;Mug;\n",  # BOM, semicolons
        "tabs.tsv": "item_id\ttitle\tprice\na\tPhone case, black\t9.5\nb\tMug\t\n",
        "pipes.csv": "item_id|title|price\na|Phone case, black|9.5\nb|Mug|\n",
        "plain.csv.gz": 'item_id,title,price\na,"Phone case, black",9.5\nb,Mug,\n',
    }
    for name, text in variants.items():
        path = tmp_path / name
        path.write_bytes(gzip.compress(text.encode()) if name.endswith(".gz") else text.encode())
        assert list(read_listings(path)) == want, name
    (tmp_path / "l.jsonl.gz").write_bytes(gzip.compress(b'{"item_id": "a", "title": "A"}\n'))
    assert list(read_listings(tmp_path / "l.jsonl.gz")) == [{"item_id": "a", "title": "A"}]


def test_read_jsonl_and_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "l.jsonl"
    path.write_text('{"item_id": "a", "title": "A", "x": 1}\n\n{"item_id": "b", "title": "B"}\n')
    assert list(read_listings(path)) == [{"item_id": "a", "title": "A", "x": 1}, {"item_id": "b", "title": "B"}]
    (tmp_path / "bad.jsonl").write_text('{"item_id": "a"}\n[1]\n')
    with pytest.raises(ValueError, match="line 2: not a JSON object"):
        list(read_listings(tmp_path / "bad.jsonl"))
    (tmp_path / "bad.csv").write_text("foo,bar\n1,2\n")
    with pytest.raises(ValueError, match="needs item_id and title columns"):
        list(read_listings(tmp_path / "bad.csv"))
    with pytest.raises(ValueError, match="no column 'nope'"):
        list(read_listings(tmp_path / "bad.csv", mapping={"item_id": "foo", "title": "nope"}))


def _run_produce(path: Path, *options: str) -> int:
    """`listings produce --file PATH` with Kafka unreachable: a file problem must be reported before Kafka's."""
    import argparse

    from stream import produce
    from stream.config import Settings

    parser = argparse.ArgumentParser()
    produce.add_arguments(parser)
    args = parser.parse_args(["--file", str(path), "--no-progress", *options])
    return produce.run(args, Settings().replace(kafka={"bootstrap": "127.0.0.1:1"}))


def test_a_file_that_cannot_be_sent_is_refused_before_kafka_is_contacted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    whole = gzip.compress(b'{"item_id": "a", "title": "A"}\n' * 500)
    corrupt = bytearray(whole)
    corrupt[10] = 0xFF  # the first deflate block's header: a reserved block type
    files: dict[str, tuple[bytes | None, str]] = {
        "missing.csv": (None, "No such file"),
        "truncated.jsonl.gz": (whole[:-30], "not a readable gzip file"),
        "corrupt.jsonl.gz": (bytes(corrupt), "not a readable gzip file"),
        "truncated.csv.gz": (gzip.compress(b"item_id,title\n" + b"a,Mug\n" * 500)[:-30], "not a readable gzip file"),
        "latin1.csv": ("item_id,title\na,Mug\nb,Caf\u00e9 au lait\n".encode("latin-1"), "line 3, column 6: not UTF-8"),
        # a line break left unquoted in a title: two short rows, each sent garbled before
        "split.csv": (b"item_id,title,brand\n1,Red\nshoe,Acme\n", "line 2: 2 fields, the header 3"),
        "no_title.csv": (b"item_id,title\na,Mug\nb,\n", "line 3: no title (column 'title' is empty)"),
        "blank_id.csv": (b"item_id,title\n  ,Mug\n", "line 2: no item_id"),
        "superscript.csv": (
            "item_id,title,listing_version\na,Mug,\u00b2\n".encode(),
            "line 2: column 'listing_version'",
        ),
        "arabic.csv": ("item_id,title,listing_version\na,Mug,\u0661\u0662\n".encode(), "column 'listing_version'"),
    }
    for name, (data, why) in files.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        assert _run_produce(path) == 2, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(path) in err and why in err, (name, err)
        assert "Kafka" not in err, name


def test_csv_rows_must_give_item_id_title_and_whole_versions(tmp_path: Path) -> None:
    (tmp_path / "ok.csv").write_text(
        "id,name,listing_version,schema_version,listed_at\na,Mug, 3 ,1,1704067200000\nb,Cup,0,,2024-01-01T00:00:00Z\n"
    )
    assert list(read_listings(tmp_path / "ok.csv", mapping={"item_id": "id", "title": "name"})) == [
        {"item_id": "a", "title": "Mug", "listing_version": 3, "schema_version": 1, "listed_at": 1_704_067_200_000},
        {"item_id": "b", "title": "Cup", "listing_version": 0, "listed_at": "2024-01-01T00:00:00Z"},  # ISO kept
    ]
    bad = {
        "a,Mug,-1,1": "column 'v': '-1' is not a whole number from 0 to 2^53-1",  # the mapped column is named
        "a,Mug,9007199254740992,1": "column 'v'",
        "a,Mug,1,0": "column 'schema_version': '0' is not a whole number from 1",
        "a,Mug,1.0,1": "column 'v'",
        ",Mug,1,1": "line 2: no item_id (column 'id' is empty)",
    }
    for row, why in bad.items():
        (tmp_path / "bad.csv").write_text(f"id,title,v,schema_version\n{row}\n")
        with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'bad.csv'}, line 2: ")) as caught:
            list(read_listings(tmp_path / "bad.csv", mapping={"item_id": "id", "listing_version": "v"}))
        assert why in str(caught.value), row


def test_produce_options_out_of_range_are_refused_at_parsing(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from stream import produce

    parser = argparse.ArgumentParser()
    produce.add_arguments(parser)
    for option, value in [("--listing-version", "-7"), ("--listing-version", str(2**53)), ("--listing-version", "x")]:
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(["--file", "f.csv", option, value])
        assert exited.value.code == 2 and "--listing-version" in capsys.readouterr().err
    for value in ("nan", "inf", "-1", "fast"):
        with pytest.raises(SystemExit) as exited:
            parser.parse_args(["--file", "f.csv", "--rate", value])
        assert exited.value.code == 2 and "--rate" in capsys.readouterr().err
    args = parser.parse_args(["--file", "f.csv", "--listing-version", str(2**53 - 1), "--rate", "0"])
    assert (args.listing_version, args.rate) == (2**53 - 1, 0.0)


# ---------------------------------------------------------------- producing to the real Kafka


def new_topic(settings: Any, partitions: int = 3, config: dict[str, str] | None = None) -> str:
    from kafka.admin import KafkaAdminClient, NewTopic

    name = f"test-produce-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    try:
        admin.create_topics([NewTopic(name, partitions, 1, topic_configs=config or {})])
    finally:
        admin.close()
    return name


@pytest.mark.stack
def test_produce_flipkart_csv_via_cli(stack: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stream.cli import main

    rows = sample_csv(FLIPKART, tmp_path / "flipkart.csv", 80)
    topic = new_topic(stack)
    args = ["--limit", "50", "--topic", topic, "--rate", "500", "--listing-version", "2", "--json", "--no-progress"]
    args += [*FLIPKART_MAP, "--map", "true_category=l3"]
    rc = main(["produce", "--file", str(tmp_path / "flipkart.csv"), *args])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rc == 0, summary
    assert (summary["sent"], summary["failed"], summary["attempted"], summary["topic"]) == (50, 0, 50, topic)

    msgs = read_topic(stack, topic, expected=50)
    assert len(msgs) == 50
    expected = {r["uniq_id"]: r for r in rows[:50]}
    assert {m.key.decode() for m in msgs} == set(expected)
    assert len({m.partition for m in msgs}) > 1  # keyed: spread over the partitions
    for m in msgs:
        listing = parse_listing(m.value, m.key)
        row = expected[listing.item_id]
        assert not listing.key_mismatch
        assert listing.title == row["product_name"].strip()
        assert listing.listing_version == 2
        assert listing.listed_at_ms is not None and abs(listing.listed_at_ms - m.timestamp) < 60_000
        assert listing.raw.get("true_category") == (row["l3"] or None)


@pytest.mark.stack
def test_produce_jsonl_keeps_fields_and_no_stamp(stack: Any, tmp_path: Path) -> None:
    from stream.produce import produce_listings

    events = [
        {"item_id": f"j-{i}", "title": f"Item {i}", "listed_at": "2024-01-01T00:00:00Z", "custom": {"i": i}}
        for i in range(12)
    ]
    path = tmp_path / "events.jsonl"
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    topic = new_topic(stack)
    summary = produce_listings(stack, list(read_listings(path)), topic=topic, progress=False, stamp=False)
    assert (summary["sent"], summary["failed"]) == (12, 0), summary

    msgs = read_topic(stack, topic, expected=12)
    got = {m.key.decode(): orjson.loads(m.value) for m in msgs}
    assert got == {e["item_id"]: e for e in events}  # sent exactly as in the file
    assert {parse_listing(m.value, m.key).listed_at_ms for m in msgs} == {1_704_067_200_000}


@pytest.mark.stack
def test_delivery_errors_are_counted_and_fail_the_command(
    stack: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from stream.cli import main

    # the broker itself refuses records over this topic's max.message.bytes
    topic = new_topic(stack, partitions=1, config={"max.message.bytes": "2048"})
    path = tmp_path / "big.jsonl"
    path.write_text("\n".join(json.dumps({"item_id": f"b-{i}", "title": "x" * 8000}) for i in range(3)) + "\n")
    rc = main(["produce", "--file", str(path), "--topic", topic, "--json", "--no-progress"])
    out = capsys.readouterr()
    assert out.out.strip(), out.err
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert rc == 1
    assert (summary["sent"], summary["failed"], summary["attempted"]) == (0, 3, 3), summary
    assert summary["errors"] and "TooLarge" in summary["errors"][0]


# ---------------------------------------------------------------- pacing (a fake clock and sender: pure logic)


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def perf_counter(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class _Sent:
    def add_callback(self, fn: Any) -> None:
        fn(None)

    def add_errback(self, fn: Any) -> None:
        pass


class _Sender:
    def __init__(self, clock: _Clock) -> None:
        self.clock, self.at = clock, []

    def send(self, topic: str, key: bytes, value: bytes) -> _Sent:
        self.at.append(self.clock.now)
        return _Sent()

    def flush(self, timeout: float) -> None:
        pass


@pytest.mark.parametrize(("rate", "most_sleeps"), [(1000.0, 26), (265.0, 26), (20.0, 20)])
def test_a_paced_sender_wakes_at_most_once_a_tick_and_keeps_the_rate(
    monkeypatch: pytest.MonkeyPatch, rate: float, most_sleeps: int
) -> None:
    from stream import produce
    from stream.config import Settings

    clock = _Clock()
    monkeypatch.setattr(produce.time, "perf_counter", clock.perf_counter)
    monkeypatch.setattr(produce.time, "sleep", clock.sleep)
    sender = _Sender(clock)
    n = round(rate * 0.5) if rate > 50 else 20  # half a second of events, or 20 slow ones
    rows = [{"item_id": f"p-{i}", "title": "t"} for i in range(n)]
    summary = produce.produce_listings(Settings(), rows, rate=rate, progress=False, producer=sender, stamp=False)
    assert summary["sent"] == n and summary["failed"] == 0
    # one wake-up per tick (20 ms), not one per event; a slow stream still sleeps once per event; no sleep is shorter
    # than a tick
    assert len(clock.sleeps) <= most_sleeps, clock.sleeps
    assert all(s >= produce.PACE_TICK_S - 1e-9 for s in clock.sleeps), clock.sleeps
    # no event leaves before its time, none more than a tick after it, and the whole stream keeps the rate
    t0 = sender.at[0]
    for k, at in enumerate(sender.at):
        due = t0 + k / rate
        assert due - 1e-9 <= at <= due + produce.PACE_TICK_S + 1e-9, (k, at - t0)
    assert (sender.at[-1] - t0) == pytest.approx((n - 1) / rate, abs=produce.PACE_TICK_S)
