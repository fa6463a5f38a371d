"""`listings produce`: send listings from a JSONL or CSV file to `listings.new`.

Input files:
* JSONL (`.jsonl`, `.ndjson`, `.json`): one listing object per line, sent as it is.
* CSV: one listing per row. Columns become fields by name; `--map FIELD=COLUMN` takes a field from another
  column (e.g. `--map item_id=uniq_id --map title=product_name`); after mapping, `item_id` and `title` must
  exist, and every row must give both (a row without them, or with fewer fields than the header — a line break
  left unquoted in a value splits its row in two short ones — is refused, naming its line). `price` becomes a
  number; `listing_version` and `schema_version` must be whole numbers in ASCII digits (else the row is refused),
  and `listed_at` becomes one when it is (else its text, e.g. ISO-8601, is kept); empty cells are left out.

A file that cannot be read (missing, not UTF-8, a damaged gzip, a bad row) is refused before Kafka is contacted.

Each event is keyed by its `item_id`, produced with acks=all and idempotence, batched (linger); the summary
counts only broker-acknowledged sends, and the command exits non-zero when any send failed.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import re
import sys
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import orjson

from stream import connections, logs
from stream.config import Settings
from stream.events.contract import MAX_SAFE_INT
from stream.files import (
    JSONL_SUFFIXES,
    csv_dict_reader,
    data_suffix,
    first_non_utf8_line,
    jsonl_objects,
    not_utf8_message,
    open_text,
)

FLUSH_TIMEOUT_S = 120.0
MAX_ERROR_SAMPLES = 5
VERSION_FIELDS = {"listing_version": 0, "schema_version": 1}  # integer fields of the contract, and their minimum
REQUIRED_FIELDS = ("item_id", "title")
ASCII_INT = re.compile(r"[0-9]+")
PACE_TICK_S = 0.02  # a paced sender wakes at most once per tick (see `pace`)

HELP = "send listings from a JSONL/CSV file to listings.new"


# ---------------------------------------------------------------- reading


def _price(text: str | None) -> float | None:
    try:
        p = float(text) if text else None
    except ValueError:
        return None
    return p if p is not None and math.isfinite(p) and p >= 0 else None


def _whole_number(column: str, text: str, minimum: int) -> int:
    """A CSV cell that must be an integer of the contract: ASCII digits, `minimum`..2^53-1 (`str.isdigit` took "²",
    which int() refuses, and Arabic-Indic digits, which it reads)."""
    value = text.strip()
    if not ASCII_INT.fullmatch(value) or not minimum <= int(value) <= MAX_SAFE_INT:
        raise ValueError(f"column {column!r}: {text!r} is not a whole number from {minimum} to 2^53-1")
    return int(value)


def csv_listing(row: Mapping[str | None, str | None], mapping: Mapping[str, str]) -> dict[str, Any]:
    """One CSV row as a listing object: mapped fields first, then every other non-empty column by name.
    ValueError naming the column for a `listing_version`/`schema_version` that is not a whole number."""
    taken = set(mapping.values())
    out: dict[str, Any] = {k: v for k, v in row.items() if k is not None and k not in taken and v not in (None, "")}
    for field, column in mapping.items():
        value = row.get(column)
        if value not in (None, ""):
            out[field] = value
    if "price" in out:
        out["price"] = _price(out["price"])
    for name, minimum in VERSION_FIELDS.items():
        if name in out:
            out[name] = _whole_number(mapping.get(name, name), out[name], minimum)
    listed_at = out.get("listed_at")
    if isinstance(listed_at, str) and ASCII_INT.fullmatch(listed_at.strip()):
        out["listed_at"] = int(listed_at)  # epoch ms; any other text (ISO-8601) is sent as it is
    return out


def _row_problem(row: Mapping[str | None, str | None], listing: Mapping[str, Any], mapping: Mapping[str, str]) -> str:
    """Why a CSV row cannot be sent ("" when it can): fewer fields than the header (a line break left unquoted in a
    value splits its row in two short ones, each sent garbled), or no item_id or title."""
    cells = [v for k, v in row.items() if k is not None]
    given = sum(v is not None for v in cells)  # the reader fills the cells a short row lacks with None
    if given < len(cells):
        return f"{given} fields, the header {len(cells)}: a value with an unquoted line break in it? Quote such values"
    for field in REQUIRED_FIELDS:
        value = listing.get(field)
        if value is None or not str(value).strip():
            return f"no {field} (column {mapping.get(field, field)!r} is empty)"
    return ""


def read_listings(
    path: str | Path, limit: int | None = None, mapping: Mapping[str, str] | None = None
) -> Iterator[dict[str, Any]]:
    """Listing objects from a JSONL or CSV file, at most `limit` of them. Raises ValueError naming the file (and
    the line, where one is at fault) on a bad file; OSError when it cannot be opened."""
    path = Path(path)
    if limit is not None and limit <= 0:
        return
    try:
        yield from _listings(path, limit, dict(mapping or {}))
    except UnicodeDecodeError as exc:
        raise ValueError(_not_decodable(path, exc)) from None
    except csv.Error as exc:  # a row the header does not fit, a quote left open, a column named twice
        raise ValueError(f"{path}: not a readable CSV ({exc})") from None
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:  # a truncated or corrupt .gz
        raise ValueError(f"{path}: not a readable gzip file ({exc})") from None


def _listings(path: Path, limit: int | None, mapping: dict[str, str]) -> Iterator[dict[str, Any]]:
    if data_suffix(path) not in JSONL_SUFFIXES:
        yield from _csv_listings(path, limit, mapping)
        return
    n = 0
    for _, obj in jsonl_objects(path):
        yield obj
        n += 1
        if limit is not None and n >= limit:
            return


def _not_decodable(path: Path, exc: UnicodeDecodeError) -> str:
    """The file's first byte its encoding does not allow, by line and column (UTF-8; UTF-16 by its reason)."""
    if exc.encoding.lower().startswith("utf-16"):
        return f"{path}: not valid UTF-16 ({exc.reason})"
    try:
        where = first_non_utf8_line(path)
    except (OSError, EOFError, zlib.error):
        where = None
    if where is None:
        return f"{path}: not UTF-8 ({exc.reason})"
    return not_utf8_message(path, *where)


def _csv_listings(path: Path, limit: int | None, mapping: dict[str, str]) -> Iterator[dict[str, Any]]:
    n = 0
    with open_text(path) as f:
        reader = csv_dict_reader(f, path)
        columns = list(reader.fieldnames or [])
        missing = [c for c in mapping.values() if c not in columns]
        if missing:
            raise ValueError(f"{path}: no column {missing[0]!r} (columns: {', '.join(columns[:12])})")
        have = (set(columns) - set(mapping.values())) | set(mapping)
        if not set(REQUIRED_FIELDS) <= have:
            raise ValueError(
                f"{path}: needs item_id and title columns, or --map item_id=COLUMN --map title=COLUMN "
                f"(columns: {', '.join(columns[:12])})"
            )
        for row in reader:
            try:
                listing = csv_listing(row, mapping)
            except ValueError as exc:
                raise ValueError(f"{path}, line {reader.file_line}: {exc}") from None
            problem = _row_problem(row, listing, mapping)
            if problem:
                raise ValueError(f"{path}, line {reader.file_line}: {problem}")
            yield listing
            n += 1
            if limit is not None and n >= limit:
                return


# ---------------------------------------------------------------- producing


def _compression() -> str | None:
    try:
        import lz4  # noqa: F401
    except ImportError:
        return None  # no codec installed: send uncompressed rather than pay gzip's CPU
    return "lz4"


def make_producer(settings: Settings) -> Any:
    from kafka import KafkaProducer

    logs.quiet_slow_steps()
    return KafkaProducer(
        **connections.kafka(settings.kafka),
        acks="all",
        enable_idempotence=True,
        # kafka-python's sender thread pays per request: at 367 events/s, paced, a 5 ms linger sent ~1 record per
        # request and took 45% of a core; 20 ms takes 25% (and the broker fewer requests) for <= 20 ms of latency
        linger_ms=20,
        batch_size=64 * 1024,
        compression_type=_compression(),
        client_id="listings-produce",
    )


class _Tally:
    """Delivery outcomes, updated from the producer's I/O thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.failed = 0
        self.errors: list[str] = []

    def ok(self, _meta: object) -> None:
        with self.lock:
            self.sent += 1

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            self.failed += 1
            if len(self.errors) < MAX_ERROR_SAMPLES:
                self.errors.append(f"{type(exc).__name__}: {exc}")


def _flush(producer: Any, timeout: float) -> list[str]:
    """Flush, retrying briefly: kafka-python's flush can raise while a failed batch is still being split or
    aborted. Returns the errors seen; the caller counts every send not acknowledged as failed."""
    from kafka.errors import KafkaError, KafkaTimeoutError

    from stream.retry import poll

    errors: list[str] = []
    deadline = time.monotonic() + timeout

    def flushed() -> bool:
        try:
            producer.flush(timeout=max(0.1, deadline - time.monotonic()))
        except KafkaTimeoutError as exc:  # out of time: what is unacknowledged now stays so
            errors.append(f"flush: {type(exc).__name__}: {exc}")
        except KafkaError as exc:
            errors.append(f"flush: {type(exc).__name__}: {exc}")
            return False
        return True

    try:
        poll(flushed, timeout, "the producer to flush", interval=0.2)
    except TimeoutError as exc:
        errors.append(str(exc))
    return errors


def pace(due: float, tick: float = PACE_TICK_S) -> None:
    """Wait for an event due at `due` (`time.perf_counter()` time; paced against the start, so sleeps never drift):
    until `due`, but at least `tick` — the events that fall due meanwhile are then sent together, up to `tick` late.
    At 265 events/s on a 2-core VM, alone, one sleep per event (a wake-up every 4 ms, each one waking kafka-python's
    sender thread too) cost 0.88-0.96 core-ms an event, ten times the same events unpaced; with a 20 ms tick, 0.53.
    Each event is stamped when it is sent, so a latency measured from `listed_at` is not flattered by the tick."""
    now = time.perf_counter()
    if due > now:
        time.sleep(max(due, now + tick) - now)


def produce_listings(
    settings: Settings,
    listings: Iterable[dict[str, Any]],
    rate: float = 0,
    topic: str | None = None,
    progress: bool = True,
    *,
    stamp: bool = True,
    listing_version: int | None = None,
    producer: Any = None,
) -> dict[str, Any]:
    """Send `listings` (dicts) keyed by item_id, at most `rate` events/s (0: as fast as possible).

    `stamp` sets `listed_at` to the send time in epoch ms; `listing_version` overrides every event's version.
    Returns the summary: `sent` (acknowledged), `failed`, `attempted`, `duration_s`, `rate`, `topic`, `errors`.
    Raises `kafka.errors.NoBrokersAvailable` when no broker answers at all.
    """
    from kafka.errors import KafkaError
    from tqdm import tqdm

    topic = topic or settings.topics.input
    total = len(listings) if hasattr(listings, "__len__") else None  # type: ignore[arg-type]
    own = producer is None
    producer = producer or make_producer(settings)
    tally = _Tally()
    attempted = 0
    interrupted = False
    bar = tqdm(total=total, disable=not progress, unit="ev", desc=f"produce {topic}", file=sys.stderr)
    t0 = time.perf_counter()
    try:
        for listing in listings:
            if rate > 0:
                pace(t0 + attempted / rate)
            event = dict(listing)
            if stamp:
                event["listed_at"] = time.time_ns() // 1_000_000
            if listing_version is not None:
                event["listing_version"] = listing_version
            item_id = event.get("item_id")
            key = None if item_id is None else str(item_id).encode("utf-8")
            attempted += 1
            try:
                value = orjson.dumps(event)
                fut = producer.send(topic, key=key, value=value)
            except (KafkaError, ValueError, TypeError) as exc:
                tally.fail(exc)
            else:
                fut.add_callback(tally.ok)
                fut.add_errback(tally.fail)
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        flush_errors = _flush(producer, FLUSH_TIMEOUT_S)
        if own:
            try:
                producer.close(timeout=10)
            except KafkaError as exc:  # already counted: every unacknowledged send is a failure below
                flush_errors.append(f"close: {type(exc).__name__}: {exc}")
        bar.close()
    duration = time.perf_counter() - t0
    with tally.lock:
        sent, failed, errors = tally.sent, tally.failed, list(tally.errors)
    # a send neither acknowledged nor failed by the end of flush counts as failed
    unresolved = max(0, attempted - sent - failed)
    if unresolved:
        errors.append(f"{unresolved} sends unresolved after flush")
    errors.extend(flush_errors)
    return {
        "topic": topic,
        "attempted": attempted,
        "sent": sent,
        "failed": failed + unresolved,
        "duration_s": round(duration, 3),
        "rate": round(sent / duration, 1) if duration > 0 else 0.0,
        "interrupted": interrupted,
        "errors": errors,
    }


# ---------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from stream.cli import events_per_s

    parser.add_argument(
        "--file",
        required=True,
        type=Path,
        help="JSONL of listing objects, or a CSV (or TSV, ;- or |-separated) of listings; .gz for gzipped",
    )
    parser.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="FIELD=COLUMN",
        help="CSV: take FIELD from COLUMN (repeatable), e.g. --map item_id=uniq_id --map title=product_name",
    )
    parser.add_argument("--limit", type=int, default=None, help="send at most N listings")
    parser.add_argument(
        "--rate",
        type=events_per_s("as fast as possible"),
        default=0.0,
        help="events per second (0: as fast as possible)",
    )
    parser.add_argument("--topic", default=None, help="target topic (default: LISTINGS_TOPIC_INPUT)")
    parser.add_argument(
        "--listing-version",
        type=listing_version_arg,
        default=None,
        help="set listing_version on every event (0 to 2^53-1)",
    )
    parser.add_argument(
        "--stamp",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="set listed_at to the send time in epoch ms (default on; --no-stamp keeps the file's)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def listing_version_arg(text: str) -> int:
    """`--listing-version`: what the contract accepts, 0..2^53-1 (outside it every event was dead-lettered)."""
    value = text.strip()
    if not re.fullmatch(r"-?[0-9]+", value) or not 0 <= int(value) <= MAX_SAFE_INT:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number from 0 to 2^53-1 ({MAX_SAFE_INT})")
    return int(value)


def parse_map(pairs: Iterable[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        field, sep, column = pair.partition("=")
        if not sep or not field.strip() or not column.strip():
            raise ValueError(f"--map takes FIELD=COLUMN, got {pair!r}")
        out[field.strip()] = column.strip()
    return out


def run(args: argparse.Namespace, s: Settings) -> int:
    from kafka.errors import KafkaError

    from stream import preflight

    if args.limit is not None and args.limit < 0:
        print("listings produce: --limit must be >= 0", file=sys.stderr)
        return 2
    try:
        mapping = parse_map(args.map)
    except ValueError as exc:
        print(f"listings produce: {exc}", file=sys.stderr)
        return 2
    # the file first: a file that cannot be sent is the thing to fix, whatever the state of Kafka
    try:
        listings = list(read_listings(args.file, args.limit, mapping))
    except (OSError, ValueError, csv.Error) as exc:
        if isinstance(exc, OSError) and exc.strerror:
            why = f"{args.file}: {exc.strerror}"
        else:
            why = str(exc) if str(args.file) in str(exc) else f"{args.file}: {exc}"
        print(f"listings produce: cannot read {why}", file=sys.stderr)
        return 2
    preflight.one_shot(s, redis=False)
    try:
        summary = produce_listings(
            s,
            listings,
            rate=args.rate,
            topic=args.topic,
            progress=not args.no_progress,
            stamp=args.stamp,
            listing_version=args.listing_version,
        )
    except KafkaError as exc:
        print(f"listings produce: Kafka at {s.kafka.bootstrap} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"sent {summary['sent']}/{summary['attempted']} to {summary['topic']}, failed {summary['failed']}, "
            f"{summary['duration_s']:.2f}s, {summary['rate']:.0f} ev/s"
        )
        for err in summary["errors"]:
            print(f"  error: {err}", file=sys.stderr)
    if summary["interrupted"]:
        return 130
    return 1 if summary["failed"] else 0
