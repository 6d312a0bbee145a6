"""What DynamoDB can store, decided before the write (I15): pure checks, no I/O.

A value DynamoDB refuses would fail its conversation's write on every retry and stall the shard
(a crash loop after a restart at the same checkpoint). So every projected value is put into the
form DynamoDB stores, or refused with a reason, as it enters the state:

- numbers: DynamoDB keeps 38 significant digits between 1E-130 and 9.99…E+125 and stores 5.0 as
  5, so an integral float becomes an int (a rehydrated value then compares equal to the local one);
- nesting: documents are at most 32 levels deep (deeper ones also hit botocore's recursion limit);
- map keys are attribute names: not empty, under 64 KB;
- sizes: an item is at most 400 KB and a partition key at most 2,048 bytes;
- event times outside a sane window are refused outright (see `check_event_time`).
"""
from __future__ import annotations

import math
from decimal import Decimal
from typing import Any, Mapping

MAX_ITEM_BYTES = 400 * 1024
#: what this processor lets an item reach: room for DynamoDB's own accounting of names and types
ITEM_BUDGET_BYTES = 380 * 1024
MAX_PARTITION_KEY_BYTES = 2048
MAX_DEPTH = 32
#: an attribute name, a map's keys included, is under this many bytes (and not empty)
MAX_NAME_BYTES = 64 * 1024
#: participants whose sessions a conversation keeps (the sessions are bookkeeping no size limit trims:
#: 64 of them with the longest ids fill a quarter of an item) (I12, I15)
MAX_SESSION_PARTICIPANTS = 64
#: a session's ids (queue, user, media type, outcome) in UTF-8 bytes: two of them, escaped (3 bytes
#: at most for each), make a metrics key with room for its interval, shard and slot in 2,048 bytes
MAX_SESSION_TEXT = 256
#: a session's durations in ms (some 31,000 years): sums stay within DynamoDB's 38 digits
MAX_SESSION_NUMBER = 10 ** 15


def check_session(value: list) -> str | None:
    """Why a session's value cannot be kept (None: it can)."""
    for item in value:
        if isinstance(item, str) and len(item) > MAX_SESSION_TEXT // 4 and len(item.encode("utf-8")) > MAX_SESSION_TEXT:
            return f"an id longer than {MAX_SESSION_TEXT} bytes"
        if isinstance(item, int) and not -MAX_SESSION_NUMBER < item < MAX_SESSION_NUMBER:
            return f"a number beyond {MAX_SESSION_NUMBER:.0e}"
    return None
MAX_DIGITS = 38
#: DynamoDB's number range: magnitudes from 1E-130 up to (but not including) 1E+126
_MAX_MAGNITUDE = 10 ** 126
_MIN_MAGNITUDE_EXPONENT = -130

#: event times before this are not from a contact-center platform (2000-01-01T00:00:00Z)
EARLIEST_EVENT_MS = 946_684_800_000
#: how far past a record's arrival an event time may be (clock skew, not a typo of the century)
FUTURE_TOLERANCE_MS = 86_400_000


class Unstorable(ValueError):
    """A value DynamoDB would refuse; `reason` names the rule, never the content (I10)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


_INT64 = 2 ** 63


def storable(value: Any, depth: int = 1) -> Any:
    """`value` as DynamoDB stores it (integral floats as ints), or `Unstorable`. Returns `value`
    itself when it is already in that form (the common case costs no copy). Values are decoded
    JSON, so exact types are checked (bool is not an int here)."""
    kind = value.__class__
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        return value if -_INT64 <= value < _INT64 else _check_int(value)
    if kind is float:
        return _storable_float(value)
    if kind is dict or kind is list:
        if depth > MAX_DEPTH:
            raise Unstorable(f"nested deeper than DynamoDB's {MAX_DEPTH} levels")
        return _storable_dict(value, depth) if kind is dict else _storable_list(value, depth)
    raise Unstorable(f"a {kind.__name__} is not a DynamoDB value")


def plainly_storable(value: Any) -> bool:
    """True when `storable(value)` is `value` itself, decided cheaply for the shapes most events
    carry (a string, a flag, a 64-bit integer, or a list or flat map of those: sessions,
    attributes); False means "ask `storable`", not "unstorable"."""
    if _plain_scalar(value):
        return True
    kind = value.__class__
    if kind is list:
        return all(map(_plain_scalar, value))
    if kind is dict:
        return _plain_keys(value) and all(map(_plain_scalar, value.values()))
    return False


def _plain_keys(value: dict) -> bool:
    """Whether a map's keys are plainly names DynamoDB takes: none empty, none near 64 KB (a key of
    fewer than a quarter of that in characters is under it in UTF-8, whatever the characters)."""
    return "" not in value and (not value or max(map(len, value)) < MAX_NAME_BYTES // 4)


def _check_map_key(key: str) -> None:
    """A map key is an attribute name to DynamoDB: at least one character, under 64 KB."""
    if not key:
        raise Unstorable("an empty map key (DynamoDB refuses empty attribute names)")
    if len(key.encode("utf-8")) >= MAX_NAME_BYTES:
        raise Unstorable(f"a map key of {MAX_NAME_BYTES // 1024} KB or more")


def _plain_scalar(value: Any) -> bool:
    kind = value.__class__
    return kind is str or kind is bool or value is None or (kind is int and -_INT64 <= value < _INT64)


def _storable_dict(value: dict, depth: int) -> dict:
    if not _plain_keys(value):
        for key in value:
            _check_map_key(key)
    copy: dict | None = None
    for key, item in value.items():
        stored = storable(item, depth + 1)
        if stored is not item:
            copy = dict(value) if copy is None else copy
            copy[key] = stored
    return value if copy is None else copy


def _storable_list(value: list, depth: int) -> list:
    stored = [storable(item, depth + 1) for item in value]
    return value if all(a is b for a, b in zip(stored, value)) else stored


def _check_int(number: int) -> int:
    if abs(number) >= _MAX_MAGNITUDE:
        raise Unstorable("number beyond DynamoDB's range (1E+126)")
    if len(str(abs(number)).rstrip("0")) > MAX_DIGITS:
        raise Unstorable(f"number with more than {MAX_DIGITS} significant digits")
    return number


def _storable_float(number: float) -> int | float:
    if not math.isfinite(number):
        raise Unstorable("number is not finite")
    if number.is_integer():  # as the decimal it is written as (1e23 is 10**23, not the double's digits)
        return _check_int(int(Decimal(repr(number))))
    if abs(number) < 10.0 ** _MIN_MAGNITUDE_EXPONENT:
        raise Unstorable("number below DynamoDB's range (1E-130)")
    return number


def check_partition_key(key: str) -> str | None:
    """Why DynamoDB would refuse `key` as a partition key value, or None."""
    if len(key) * 4 > MAX_PARTITION_KEY_BYTES and len(key.encode("utf-8")) > MAX_PARTITION_KEY_BYTES:
        return f"conversation id longer than {MAX_PARTITION_KEY_BYTES} bytes"
    return None


def check_event_time(time_ms: int, arrival_ms: int) -> str | None:
    """Why an event time cannot be trusted to order events, or None.

    A time before 2000 or more than a day past the record's arrival is a broken clock or a unit
    error (seconds, microseconds); ordered by it, the event would win or lose every comparison
    for ever, so it is refused instead of silently deciding the conversation's state.
    """
    if time_ms < EARLIEST_EVENT_MS:
        return "event time before 2000-01-01"
    if time_ms > arrival_ms + FUTURE_TOLERANCE_MS:
        return "event time more than a day after the record arrived"
    return None


def oversized_fields(sizes: Mapping[str, int], fixed_bytes: int, budget: int = ITEM_BUDGET_BYTES) -> list[str]:
    """The fields to drop, largest first (ties by name), so that the item fits `budget`.

    `sizes` maps each droppable field to its stored size; `fixed_bytes` is the rest of the item.
    """
    total = fixed_bytes + sum(sizes.values())
    dropped: list[str] = []
    for name in sorted(sizes, key=lambda n: (-sizes[n], n)):
        if total <= budget:
            break
        dropped.append(name)
        total -= sizes[name]
    return dropped
