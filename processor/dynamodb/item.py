"""The DynamoDB conversation item: the contract between this processor, its peers and its readers.

- `conversationId` (S, partition key) and `version` (N, count of writes).
- The projection: every attribute whose name does not start with `_`.
- Bookkeeping, compact so a typical item stays under 1 KB (one write unit, I9): `_t` map of
  register stamps and `_k` the recent event keys (8 bytes each, one binary): what a new owner
  needs to merge and deduplicate (I6); `_ttl` epoch seconds after which DynamoDB may expire the
  item: an ended conversation's end plus the retention, any other's last event plus the
  inactivity retention (an end event can be lost, and nothing may stay for ever: I8); `_s` the
  session registers by name (their stamp is their first element), what the metrics are computed
  from, so a new owner recomputes the stored contribution exactly (I12).
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Mapping, NamedTuple

import orjson

from processor import codec
from processor.analytics.sessions import PREFIX as SESSION_PREFIX, is_session
from processor.limits import ITEM_BUDGET_BYTES, oversized_fields
from processor.model import Register
from processor.reduce import KEY_WINDOW, ConversationState, Derive, tombstone

KEY = "conversationId"
VERSION = "version"
STAMPS, KEYS, TTL, SESSIONS = "_t", "_k", "_ttl", "_s"


@dataclass(frozen=True)
class Retention:
    """How long a conversation is kept after its end, or after its last event while not ended."""

    ended_seconds: int
    inactive_seconds: int

    def expires_at(self, state: ConversationState) -> int | None:
        """Epoch seconds when the item may expire (None: no event time known)."""
        values = state.registers
        ended, end = values.get("ended"), values.get("endTime")
        if ended is not None and ended[1] is True and end is not None and isinstance(end[1], int):
            return end[1] // 1000 + self.ended_seconds
        last = max((abs(stamp) for stamp, _ in values.values()), default=None)  # a min register's is negated
        return None if last is None else last // 1000 + self.inactive_seconds


def to_item(conversation_id: str, state: ConversationState, version: int, derive: Derive | None,
            retention: Retention | None) -> dict[str, Any]:
    """The item (low-level AttributeValue form) that stores `state` as `version`."""
    attributes: dict[str, Any] = dict(state.projection(derive))
    attributes[KEY] = conversation_id
    attributes[VERSION] = version
    stamps, sessions = {}, {}
    for name, (stamp, value) in state.registers.items():
        if is_session(name):
            sessions[name[len(SESSION_PREFIX):]] = value
        else:
            stamps[name] = stamp
    attributes[STAMPS] = stamps
    if sessions:
        attributes[SESSIONS] = sessions
    attributes[KEYS] = codec.pack_keys(state.recent_keys[-KEY_WINDOW:])
    expires = retention.expires_at(state) if retention is not None else None
    if expires is not None:
        attributes[TTL] = expires
    return {name: serialize(value) for name, value in attributes.items()}


class Fitted(NamedTuple):
    """An item that fits DynamoDB's size limit: its size (an upper bound below the limit, exact
    at it) and the registers dropped to make it fit."""

    item: dict[str, Any]
    size: int
    dropped: list[tuple[str, Register]]


def fitted_item(conversation_id: str, state: ConversationState, version: int, derive: Derive | None,
                retention: Retention | None) -> Fitted:
    """`to_item`, with the largest fields replaced by tombstones (in `state` too) until the item
    fits DynamoDB's size limit (I15)."""
    item = to_item(conversation_id, state, version, derive, retention)
    bound = size_bound(item)
    if bound <= ITEM_BUDGET_BYTES:  # nearly every item: the exact size is not needed
        return Fitted(item, bound, [])
    size = item_size(item)
    if size <= ITEM_BUDGET_BYTES:
        return Fitted(item, size, [])
    sizes = {name: len(name.encode("utf-8")) + _value_size(item[name])
             for name in state.registers if name in item and state.registers[name][1] is not None}
    dropped = [(name, tombstone(state, name)) for name in oversized_fields(sizes, size - sum(sizes.values()))]
    item = to_item(conversation_id, state, version, derive, retention)
    return Fitted(item, item_size(item), dropped)


def from_item(item: Mapping[str, Any]) -> tuple[str, ConversationState]:
    """The conversation id and state a stored item holds (derived attributes are recomputed later)."""
    plain = unwrap(item)
    stamps = plain.get(STAMPS) or {}
    registers = {name: (int(stamp), plain.get(name)) for name, stamp in stamps.items()}
    for name, value in (plain.get(SESSIONS) or {}).items():
        if isinstance(value, list) and value and isinstance(value[0], int):
            registers[SESSION_PREFIX + name] = (value[0], value)
    keys = codec.unpack_keys(item.get(KEYS, {}).get("B", b""))
    return plain[KEY], ConversationState(registers, keys, int(plain.get(VERSION, 0)))


def unwrap(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item in plain JSON-ready values (binary as base64 text)."""
    return {name: deserialize(value) for name, value in item.items()}


def exportable(item: Mapping[str, Any]) -> dict[str, Any]:
    """As `unwrap`, with binary attributes as base64 strings so the result is JSON."""
    plain = unwrap(item)
    return {k: base64.b64encode(v).decode("ascii") if isinstance(v, bytes) else v for k, v in plain.items()}


def item_size(item: Mapping[str, Any]) -> int:
    """The item's size as DynamoDB bills it: names plus values (a write unit per started KB)."""
    return sum(len(name.encode("utf-8")) + _value_size(value) for name, value in item.items())


def size_bound(item: Mapping[str, Any]) -> int:
    """At least `item_size(item)`, for a third of its cost: the length of the item's JSON. Each
    part of the JSON is at least as long as DynamoDB counts it: a name or string is its UTF-8
    plus quotes, a number's digits are text (DynamoDB counts one byte per two, plus one or two),
    binary is base64 (four bytes per three), and a map or list costs braces, type tag, colons and
    commas where DynamoDB counts 3 bytes plus 1 per element."""
    return len(orjson.dumps(item, default=_base64))


def _base64(value: Any) -> str:
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"not an attribute value: {type(value).__name__}")


def _value_size(attribute: Mapping[str, Any]) -> int:
    (kind, value), = attribute.items()
    if kind == "S":
        return len(value.encode("utf-8"))
    if kind == "B":
        return len(value)
    if kind == "N":
        return len(value.lstrip("-").replace(".", "").lstrip("0")) // 2 + 2
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(1 + len(k.encode("utf-8")) + _value_size(v) for k, v in value.items())
    if kind == "L":
        return 3 + sum(1 + _value_size(v) for v in value)
    return sum(len(v) if isinstance(v, (bytes, bytearray)) else len(str(v).encode("utf-8")) for v in value)  # sets


def serialize(value: Any) -> dict[str, Any]:
    """A plain value as a DynamoDB AttributeValue. The exact types JSON gives come first, by type
    (an item serializes some sixty values at every write); anything else goes down the general checks."""
    kind = type(value)
    if kind is str:
        return {"S": value}
    if kind is int:
        return {"N": str(value)}
    if kind is list or kind is tuple:
        return {"L": [serialize(v) for v in value]}
    if kind is dict:
        return {"M": {str(k): serialize(v) for k, v in value.items()}}
    return _serialize_generally(value)


def _serialize_generally(value: Any) -> dict[str, Any]:
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if isinstance(value, (int, float)):
        return {"N": repr(value) if isinstance(value, float) else str(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, (bytes, bytearray)):
        return {"B": bytes(value)}
    if isinstance(value, dict):
        return {"M": {str(k): serialize(v) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        return {"L": [serialize(v) for v in value]}
    raise TypeError(f"cannot store {type(value).__name__} in DynamoDB")


def deserialize(attribute: Mapping[str, Any]) -> Any:
    """A DynamoDB AttributeValue as a plain value (numbers back to int or float)."""
    (kind, value), = attribute.items()
    if kind == "S":
        return value
    if kind == "N":
        return number(value)
    if kind == "BOOL":
        return value
    if kind == "NULL":
        return None
    if kind == "M":
        return {k: deserialize(v) for k, v in value.items()}
    if kind == "L":
        return [deserialize(v) for v in value]
    if kind == "B":
        return bytes(value)
    if kind in ("SS", "BS"):
        return sorted(value)
    if kind == "NS":
        return sorted(number(v) for v in value)
    raise TypeError(f"unknown DynamoDB attribute type {kind}")


def number(text: str) -> int | float:
    """A DynamoDB number as DynamoDB means it: "5", "5.0" and "5E+0" are all the int 5."""
    if text.lstrip("-").isdigit():
        return int(text)
    exact = Decimal(text)
    return int(exact) if exact == exact.to_integral_value() else float(exact)
