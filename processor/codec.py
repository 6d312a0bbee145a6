"""JSON in and out, exactly: a C parser's speed without orjson's two silent approximations.

orjson reads an integer beyond 64 bits as a float (a 25-digit account number loses its last
digits, silently) and refuses to write one. DynamoDB keeps 38 significant digits, so a value the
table stores exactly must also survive decoding and the RocksDB state.

Reading: msgspec first, which reads integers of any size exactly (up to Python's 4,300 digits)
and otherwise accepts what orjson accepts; whatever it refuses goes the general way: orjson,
whose errors name what is wrong for the dead letters, then the standard library where a run of
19 or more digits could have made orjson inexact (it is exact from -2**63, 19 digits, to
2**64 - 1). msgspec nests as deep as the interpreter's recursion limit lets it, orjson to 1,024
levels: only a document that cannot nest deeper than orjson's limit goes to msgspec, so the
limit decides alike whatever the interpreter's (and msgspec's C stack stays under ~300 KB). The
one difference from the general way alone: an integer too large for a double (309 digits or
more, up to 4,300), which orjson refuses as infinite, is read exactly, as one of 20 to 308
digits already was; the limits refuse it in a field an adapter reads (as one of 39 digits),
and one in a field no adapter reads is ignored with the rest of that field.
Writing: orjson, and the standard library for an integer orjson cannot write, to orjson's depth.

The standard library recurses once per level of nesting against the interpreter's recursion
limit, which also counts the caller's frames (a compiled caller has none): each call to it is
given room for the levels orjson allows, so where a document or value stops being read or written
never depends on who calls, or from how deep.
"""
from __future__ import annotations

import json
import struct
import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import msgspec
import orjson

#: digits to 0, everything else to 1: a run of 19 digits becomes a run of 19 zero bytes, which
#: `bytes.find` spots several times faster than a regular expression walks the digits
_DIGIT_RUNS = bytes(0 if byte in b"0123456789" else 1 for byte in range(256))
_NINETEEN_DIGITS = bytes(19)


#: orjson's nesting limit: a deeper document is refused ("depth limit exceeded")
MAX_DEPTH = 1024
#: orjson writes values nesting fewer containers than this ("Recursion limit reached")
MAX_WRITE_DEPTH = 255
_CONTAINERS = (dict, list, tuple)
#: each level of nesting takes an opening and a closing byte: a document this short cannot go
#: deeper than MAX_DEPTH (nearly every record and state; longer ones have their brackets counted)
_SHORT = 2 * MAX_DEPTH + 1
_fast_loads = msgspec.json.Decoder().decode


def loads(data: bytes) -> Any:
    """Parse JSON; integers keep every digit. Raises `orjson.JSONDecodeError` for invalid input."""
    if len(data) <= _SHORT or _nests_within_limit(data):
        try:
            return _fast_loads(data)
        except Exception:  # noqa: BLE001 - invalid, over the recursion limit, ...: the general way decides
            pass
    return exact_loads(data)


def _nests_within_limit(data: bytes) -> bool:
    return data.count(b"[") + data.count(b"{") <= MAX_DEPTH


def exact_loads(data: bytes) -> Any:
    """`loads` the general way: orjson, checked for inexact integers."""
    value = orjson.loads(data)  # first, so whatever orjson refuses stays refused
    if _NINETEEN_DIGITS not in data.translate(_DIGIT_RUNS):
        return value
    with _room_to_nest(MAX_DEPTH):  # orjson read it: it nests no deeper
        return json.loads(data)


def dumps(value: Any, sort_keys: bool = False) -> bytes:
    """Serialize to compact UTF-8 JSON; integers of any size are written exactly."""
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS if sort_keys else 0)
    except orjson.JSONEncodeError as error:
        if "64-bit" not in str(error):
            raise
    if _nests_too_deep_to_write(value):  # as orjson refuses such a document, whichever it met first
        raise orjson.JSONEncodeError("Recursion limit reached")
    with _room_to_nest(MAX_WRITE_DEPTH):
        return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False).encode("utf-8")


def _nests_too_deep_to_write(value: Any) -> bool:
    """Whether `value` nests MAX_WRITE_DEPTH containers or more (walked level by level, not
    recursively). Tuples count too, as the standard library recurses into them; orjson does not
    count them, but no document read has any (a chain of them is code's, not data's)."""
    level = [value] if isinstance(value, _CONTAINERS) else []
    for _ in range(MAX_WRITE_DEPTH - 1):
        if not level:
            return False
        level = [inner for outer in level for inner in (outer.values() if isinstance(outer, dict) else outer)
                 if isinstance(inner, _CONTAINERS)]
    return bool(level)


_room_lock = threading.Lock()


@contextmanager
def _room_to_nest(levels: int) -> Iterator[None]:
    """Raise the recursion limit, for the call within, to leave `levels` of room above the caller's
    frames (restored after; the lock keeps two threads from restoring each other's limit). The limit
    is the interpreter's: other threads have the room too meanwhile, and none of this process's
    recurses near the limit."""
    with _room_lock:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(max(limit, _frames() + levels + 50))
        try:
            yield
        finally:
            sys.setrecursionlimit(limit)


def _frames() -> int:
    frame, count = sys._getframe(), 0
    while frame is not None:
        frame, count = frame.f_back, count + 1
    return count


def pack_keys(keys: Sequence[int]) -> bytes:
    """64-bit event keys as 8 big-endian bytes each: a fixed size, and no digits to parse."""
    return struct.pack(f">{len(keys)}Q", *keys)


def unpack_keys(data: bytes) -> list[int]:
    """The keys `pack_keys` packed (a trailing partial key is ignored, as a truncated value would be)."""
    return list(struct.unpack_from(f">{len(data) // 8}Q", data))
