"""JSON in and out, exactly: a C parser's speed without orjson's two silent approximations.

orjson reads an integer beyond 64 bits as a float (a 25-digit account number loses its last
digits, silently) and refuses to write one. DynamoDB keeps 38 significant digits, so a value the
table stores exactly must also survive decoding and the RocksDB state.

Reading: msgspec first, which reads integers of any size exactly (up to Python's 4,300 digits)
and otherwise accepts exactly what orjson accepts; whatever it refuses goes the general way:
orjson, whose errors name what is wrong for the dead letters, then the standard library where a
run of 19 or more digits could have made orjson inexact (it is exact from -2**63, 19 digits, to
2**64 - 1). The one difference from the general way alone: an integer of 310 to 4,300 digits,
which orjson refuses as an infinite double, is read exactly (the limits refuse it later as a
field, as they refuse one of 39 digits). Writing: orjson, and the standard library for an
integer orjson cannot write.
"""
from __future__ import annotations

import json
import struct
from typing import Any, Sequence

import msgspec
import orjson

#: digits to 0, everything else to 1: a run of 19 digits becomes a run of 19 zero bytes, which
#: `bytes.find` spots several times faster than a regular expression walks the digits
_DIGIT_RUNS = bytes(0 if byte in b"0123456789" else 1 for byte in range(256))
_NINETEEN_DIGITS = bytes(19)


_fast_loads = msgspec.json.Decoder().decode


def loads(data: bytes) -> Any:
    """Parse JSON; integers keep every digit. Raises `orjson.JSONDecodeError` for invalid input."""
    try:
        return _fast_loads(data)
    except Exception:  # noqa: BLE001 - invalid, too deep for its stack, ...: the general way decides
        return exact_loads(data)


def exact_loads(data: bytes) -> Any:
    """`loads` the general way: orjson, checked for inexact integers."""
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
