"""The `listings.dlq` record: why an event was rejected, where it came from, and its original bytes.

Fields: `error` (human-readable reason), `error_type` (a stable code, see `contract.ERROR_TYPES`; the worker
may add its own, e.g. for a poison event that fails classification), `topic`, `partition`, `offset`,
`key` + `key_encoding`, `payload` (the original value, base64), `payload_size` (its length in bytes),
`payload_truncated`, `failed_at` (ISO-8601 UTC, ms), `source` (`live`, `backfill` or `feedback`).

* `key` is the key as a UTF-8 string when it decodes as UTF-8 (`key_encoding: "utf-8"`), else base64
  (`key_encoding: "base64"`); `null` with `key_encoding: null` when the message had no key. A key over
  `MAX_DLQ_KEY_BYTES` is cut to that (`key_truncated: true`), in the field and as the record's own Kafka key.
* `payload` is standard base64 with padding, `null` for a null value (tombstone). A value larger than
  `MAX_DLQ_PAYLOAD_BYTES` is cut to that many bytes (`payload_truncated: true`) so the DLQ record itself
  stays under Kafka's default 1 MiB message cap; the full original is still at `topic/partition/offset`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from stream.timefmt import now_iso

MAX_DLQ_PAYLOAD_BYTES = 512 * 1024
# the key is kept twice (the record's Kafka key and its `key` field, where JSON may escape a byte as 6 characters):
# bounded, so that no key makes the DLQ record larger than Kafka accepts (which would hold the partition for ever)
MAX_DLQ_KEY_BYTES = 4 * 1024
MAX_ERROR_CHARS = 1_000


def dlq_key(key: bytes | None) -> bytes | None:
    """The Kafka key of the DLQ record: the original key, cut to MAX_DLQ_KEY_BYTES."""
    return None if key is None else key[:MAX_DLQ_KEY_BYTES]


def _encode_key(key: bytes | None) -> tuple[str | None, str | None]:
    if key is None:
        return None, None
    kept = key[:MAX_DLQ_KEY_BYTES]
    for cut in range(4 if len(key) > MAX_DLQ_KEY_BYTES else 1):  # a cut may split a UTF-8 character's bytes
        try:
            return kept[: len(kept) - cut].decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            continue
    return base64.b64encode(kept).decode("ascii"), "base64"


def dlq_record(
    *,
    error: str,
    error_type: str,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    payload: bytes | None,
    source: str = "live",
) -> bytes:
    """The JSON bytes of one `listings.dlq` record (produce it with the same key as the original)."""
    key_text, key_encoding = _encode_key(key)
    size = None if payload is None else len(payload)
    kept = None if payload is None else payload[:MAX_DLQ_PAYLOAD_BYTES]
    record: dict[str, Any] = {
        # lone surrogates (from str(exc) of odd input) cannot be JSON: replace them
        "error": error[:MAX_ERROR_CHARS].encode("utf-8", "replace").decode("utf-8"),
        "error_type": error_type,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "key": key_text,
        "key_encoding": key_encoding,
        "key_truncated": key is not None and len(key) > MAX_DLQ_KEY_BYTES,
        "payload": None if kept is None else base64.b64encode(kept).decode("ascii"),
        "payload_size": size,
        "payload_truncated": size is not None and size > MAX_DLQ_PAYLOAD_BYTES,
        "failed_at": now_iso(),
        "source": source,
    }
    return orjson.dumps(record)


def decode_dlq_payload(record: dict[str, Any]) -> bytes:
    """The original value bytes of a DLQ record (b"" for a null value; a prefix when `payload_truncated`)."""
    payload = record.get("payload")
    if payload is None:
        return b""
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"DLQ payload is not valid base64: {exc}") from None


def decode_dlq_key(record: dict[str, Any]) -> bytes | None:
    """The original key bytes of a DLQ record, or None when the message had no key."""
    key = record.get("key")
    if key is None:
        return None
    if record.get("key_encoding") == "base64":
        return base64.b64decode(key, validate=True)
    return str(key).encode("utf-8")
