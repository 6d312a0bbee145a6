"""Decode: Kinesis record bytes to an EventBridge envelope (a JSON object), or a clear rejection
that becomes a dead letter (I7); reasons name what is wrong, never the content (I10)."""
from __future__ import annotations

from typing import Any

import orjson

from processor import codec
from processor.model import Rejected

#: Kinesis caps a record at 1 MiB; anything larger did not come from the EventBridge target.
MAX_RECORD_BYTES = 1024 * 1024


def decode(data: bytes) -> dict[str, Any]:
    """Parse one record. Raises `Rejected` with a reason that names no payload content (I10)."""
    if len(data) > MAX_RECORD_BYTES:
        raise Rejected(f"oversized: {len(data)} bytes > {MAX_RECORD_BYTES}")
    try:
        envelope = codec.loads(data)
    except orjson.JSONDecodeError as error:
        raise Rejected(_why_not_json(data, error)) from None
    if not isinstance(envelope, dict):
        raise Rejected(f"not a JSON object: {type(envelope).__name__}")
    return envelope


def _why_not_json(data: bytes, error: orjson.JSONDecodeError) -> str:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"not UTF-8: invalid byte at offset {bad.start}"
    return f"not JSON: {error.msg} at offset {error.pos}"
