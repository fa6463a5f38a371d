"""Event contracts: the `listings.new` input and the `listings.dlq` record."""

from stream.events.contract import TITLE_MAX_CHARS, InvalidEvent, Listing, parse_listing
from stream.events.dlq import decode_dlq_key, decode_dlq_payload, dlq_record

__all__ = [
    "TITLE_MAX_CHARS",
    "InvalidEvent",
    "Listing",
    "decode_dlq_key",
    "decode_dlq_payload",
    "dlq_record",
    "parse_listing",
]
