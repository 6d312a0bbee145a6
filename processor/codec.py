"""JSON in and out, exactly: orjson's speed without its two silent approximations.

orjson reads an integer beyond 64 bits as a float (a 25-digit account number loses its last
digits, silently) and refuses to write one. DynamoDB keeps 38 significant digits, so a value the
table stores exactly must also survive decoding and the RocksDB state. Both functions here take
orjson's fast path and fall back to the standard library, with the same strictness, only where
orjson could be inexact: a run of 19 or more digits in the input (orjson is exact from -2**63, 19
digits, to 2**64 - 1), or an integer orjson cannot write.
"""
from __future__ import annotations

import json
import struct
from typing import Any, Sequence

import orjson

#: digits to 0, everything else to 1: a run of 19 digits becomes a run of 19 zero bytes, which
#: `bytes.find` spots several times faster than a regular expression walks the digits
_DIGIT_RUNS = bytes(0 if byte in b"0123456789" else 1 for byte in range(256))
_NINETEEN_DIGITS = bytes(19)


def loads(data: bytes) -> Any:
    """Parse JSON; integers keep every digit. Raises `orjson.JSONDecodeError` for invalid input."""
    value = orjson.loads(data)  # first, so whatever orjson refuses stays refused
    if _NINETEEN_DIGITS not in data.translate(_DIGIT_RUNS):
        return value
    return json.loads(data)


def dumps(value: Any, sort_keys: bool = False) -> bytes:
    """Serialize to compact UTF-8 JSON; integers of any size are written exactly."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    except orjson.JSONEncodeError as error:
        if "64-bit" not in str(error):
            raise
        return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")


def pack_keys(keys: Sequence[int]) -> bytes:
    """64-bit event keys as 8 big-endian bytes each: a fixed size, and no digits to parse."""
    return struct.pack(f">{len(keys)}Q", *keys)


def unpack_keys(data: bytes) -> list[int]:
    """The keys `pack_keys` packed (a trailing partial key is ignored, as a truncated value would be)."""
    return list(struct.unpack_from(f">{len(data) // 8}Q", data))
