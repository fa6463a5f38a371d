"""The `listings.new` input contract: decode a raw Kafka value and validate it.

`parse_listing(value, key)` returns a `Listing` or raises `InvalidEvent` (a `ValueError`) whose
`error_type` is one short, stable code — the worker sends those events to `listings.dlq`.
It never raises anything else, whatever the bytes (tested with a hypothesis fuzz).

Hard caps (an event over any of them is rejected as `oversized`, never silently cut):

* the whole value: `MAX_VALUE_BYTES` (1 MiB, Kafka's default `max.message.bytes`);
* `title`: `TITLE_HARD_MAX_CHARS` (100,000); a title longer than `TITLE_MAX_CHARS` (1,000) but under the
  hard cap is *truncated* for the model, as the contract says, not rejected;
* `description`: `DESCRIPTION_MAX_CHARS` (20,000);
* every other optional string (`brand`, `currency`, `seller_id`, `locale`, `image_url`): `OPTIONAL_STRING_MAX_CHARS`
  (2,048).

Key policy: the Kafka key should equal `item_id`. When a key is present and differs, the event is still
accepted — `item_id` from the value wins — and `Listing.key_mismatch` is set so the worker can count it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

MAX_VALUE_BYTES = 1024 * 1024
ITEM_ID_MAX_CHARS = 128
TITLE_MAX_CHARS = 1_000
TITLE_HARD_MAX_CHARS = 100_000
DESCRIPTION_MAX_CHARS = 20_000
OPTIONAL_STRING_MAX_CHARS = 2_048
# integers are compared inside Redis Lua scripts, where numbers are doubles: stay exact
MAX_SAFE_INT = 2**53 - 1
# listed_at must fall in [1970-01-01, 9999-12-31T23:59:59.999Z]
MAX_EPOCH_MS = 253_402_300_799_999
ISO_MAX_CHARS = 64

OPTIONAL_STRINGS: tuple[str, ...] = ("description", "brand", "currency", "seller_id", "locale", "image_url")

# every error_type parse_listing can raise
ERROR_TYPES: frozenset[str] = frozenset(
    {
        "empty_value",  # value is None (a tombstone) or zero bytes
        "oversized",  # a hard cap above is exceeded
        "not_json",  # not UTF-8, or not JSON
        "not_object",  # JSON, but not an object
        "missing_field",  # item_id or title absent (null counts as absent)
        "wrong_type",  # a known field with the wrong JSON type
        "blank_item_id",  # item_id only whitespace
        "blank_title",  # title empty after trimming, or without a letter or digit
        "out_of_range",  # a number or length outside its range
        "bad_timestamp",  # listed_at not ISO-8601 / not a plausible epoch ms
    }
)


class InvalidEvent(ValueError):
    """An event that breaks the contract. `reason` is for humans, `error_type` one of `ERROR_TYPES`."""

    def __init__(self, reason: str, error_type: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.error_type = error_type

    def __repr__(self) -> str:
        return f"InvalidEvent({self.reason!r}, {self.error_type!r})"


@dataclass(frozen=True, slots=True)
class Listing:
    item_id: str
    title: str  # trimmed, truncated to TITLE_MAX_CHARS for the model
    description: str | None  # trimmed; blank -> None
    brand: str | None  # trimmed; blank -> None
    price: float | None
    listing_version: int  # default 0
    listed_at_ms: int | None  # ISO-8601 or epoch ms, normalised to epoch ms (UTC)
    schema_version: int  # default 1
    raw: dict  # the whole decoded object, unknown fields included
    key_mismatch: bool = False  # the Kafka key was present and differed from item_id


def _type_name(v: object) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int | float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def _decode(value: bytes | None) -> dict[str, Any]:
    if value is None or len(value) == 0:
        raise InvalidEvent("empty value (tombstone or zero bytes)", "empty_value")
    if len(value) > MAX_VALUE_BYTES:
        raise InvalidEvent(f"value is {len(value)} bytes, over the {MAX_VALUE_BYTES}-byte cap", "oversized")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not valid UTF-8 JSON: {str(exc)[:200]}", "not_json") from None
    if not isinstance(obj, dict):
        raise InvalidEvent(f"value is a JSON {_type_name(obj)}, not an object", "not_object")
    return obj


def _required_str(obj: dict[str, Any], name: str) -> str:
    v = obj.get(name)
    if v is None:
        raise InvalidEvent(f"required field {name!r} is missing", "missing_field")
    if not isinstance(v, str):
        raise InvalidEvent(f"{name!r} must be a string, got {_type_name(v)}", "wrong_type")
    return v


def _optional_str(obj: dict[str, Any], name: str, cap: int) -> str | None:
    v = obj.get(name)
    if v is None:
        return None
    if not isinstance(v, str):
        raise InvalidEvent(f"{name!r} must be a string or null, got {_type_name(v)}", "wrong_type")
    if len(v) > cap:
        raise InvalidEvent(f"{name!r} is {len(v)} chars, over the {cap}-char cap", "oversized")
    return v.strip() or None


def _optional_int(obj: dict[str, Any], name: str, default: int, minimum: int) -> int:
    v = obj.get(name)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidEvent(f"{name!r} must be an integer, got {_type_name(v)}", "wrong_type")
    if not minimum <= v <= MAX_SAFE_INT:
        raise InvalidEvent(f"{name!r} must be in [{minimum}, 2^53-1], got {v}", "out_of_range")
    return v


def _price(obj: dict[str, Any]) -> float | None:
    v = obj.get("price")
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise InvalidEvent(f"'price' must be a number or null, got {_type_name(v)}", "wrong_type")
    p = float(v)
    if not math.isfinite(p) or p < 0:
        raise InvalidEvent(f"'price' must be a finite number >= 0, got {v}", "out_of_range")
    return p


def _listed_at(obj: dict[str, Any]) -> int | None:
    v = obj.get("listed_at")
    if v is None:
        return None
    if isinstance(v, bool):
        raise InvalidEvent("'listed_at' must be an ISO-8601 string or epoch ms, got boolean", "wrong_type")
    if isinstance(v, int | float):
        # epoch milliseconds; a fractional ms is truncated
        if not (math.isfinite(v) and 0 <= v <= MAX_EPOCH_MS):
            raise InvalidEvent(f"'listed_at' epoch ms out of range: {v}", "bad_timestamp")
        return int(v)
    if not isinstance(v, str):
        raise InvalidEvent(f"'listed_at' must be an ISO-8601 string or epoch ms, got {_type_name(v)}", "wrong_type")
    text = v.strip()
    if not text or len(text) > ISO_MAX_CHARS:
        raise InvalidEvent("'listed_at' is not an ISO-8601 timestamp", "bad_timestamp")
    try:
        dt = datetime.fromisoformat(text)
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)  # a naive timestamp is read as UTC
        ms = math.floor(dt.timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        raise InvalidEvent(
            f"'listed_at' is not an ISO-8601 timestamp: {text[:ISO_MAX_CHARS]!r}", "bad_timestamp"
        ) from None
    if not 0 <= ms <= MAX_EPOCH_MS:
        raise InvalidEvent(f"'listed_at' out of range: {text!r}", "bad_timestamp")
    return ms


def parse_listing(value: bytes | None, key: bytes | None = None) -> Listing:
    """Decode and validate one `listings.new` value. Raises `InvalidEvent`, never anything else."""
    obj = _decode(value)

    item_id = _required_str(obj, "item_id")
    if not 1 <= len(item_id) <= ITEM_ID_MAX_CHARS:
        raise InvalidEvent(f"'item_id' must be 1-{ITEM_ID_MAX_CHARS} chars, got {len(item_id)}", "out_of_range")
    if not item_id.strip():
        raise InvalidEvent("'item_id' is blank", "blank_item_id")

    title = _required_str(obj, "title")
    if len(title) > TITLE_HARD_MAX_CHARS:
        raise InvalidEvent(f"'title' is {len(title)} chars, over the {TITLE_HARD_MAX_CHARS}-char cap", "oversized")
    title = title.strip()
    if not title:
        raise InvalidEvent("'title' is blank", "blank_title")
    cut = len(title) > TITLE_MAX_CHARS
    title = title[:TITLE_MAX_CHARS].rstrip()  # what the model reads: the check below is of the same span as its own
    if not any(ch.isalnum() for ch in title):  # "😀😀", "----", a zero-width space: nothing to classify by
        where = f" in its first {TITLE_MAX_CHARS:,} characters (what the model reads)" if cut else ""
        raise InvalidEvent(f"'title' has no letter or digit{where}", "blank_title")

    strings = {
        name: _optional_str(obj, name, DESCRIPTION_MAX_CHARS if name == "description" else OPTIONAL_STRING_MAX_CHARS)
        for name in OPTIONAL_STRINGS
    }
    return Listing(
        item_id=item_id,
        title=title,
        description=strings["description"],
        brand=strings["brand"],
        price=_price(obj),
        listing_version=_optional_int(obj, "listing_version", 0, 0),
        listed_at_ms=_listed_at(obj),
        schema_version=_optional_int(obj, "schema_version", 1, 1),
        raw=obj,
        key_mismatch=key is not None and key != item_id.encode("utf-8"),
    )
