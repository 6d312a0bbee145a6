"""The DynamoDB conversation item: the contract between this processor, its peers and its readers.

- `conversationId` (S, partition key) and `version` (N, count of writes).
- The projection: every attribute whose name does not start with `_`.
- Bookkeeping, compact so a typical item stays under 1 KB (one write unit, I9):
  `_t` map of register stamps (what LWW needs to merge), `_k` the recent event keys
  (8 bytes each, one binary), `_ttl` epoch seconds after which DynamoDB may expire an ended
  conversation.
"""
from __future__ import annotations

import base64
from typing import Any, Mapping

from processor.model import Register
from processor.reduce import KEY_WINDOW, ConversationState, Derive

KEY = "conversationId"
VERSION = "version"
STAMPS, KEYS, TTL = "_t", "_k", "_ttl"


def to_item(conversation_id: str, state: ConversationState, version: int, derive: Derive | None,
            retention_seconds: int | None) -> dict[str, Any]:
    """The item (low-level AttributeValue form) that stores `state` as `version`."""
    attributes: dict[str, Any] = dict(state.projection(derive))
    attributes[KEY] = conversation_id
    attributes[VERSION] = version
    attributes[STAMPS] = {name: reg.stamp for name, reg in state.registers.items()}
    attributes[KEYS] = b"".join(key.to_bytes(8, "big") for key in state.recent_keys[-KEY_WINDOW:])
    end = attributes.get("endTime")
    if retention_seconds is not None and attributes.get("ended") is True and isinstance(end, int):
        attributes[TTL] = end // 1000 + retention_seconds
    return {name: serialize(value) for name, value in attributes.items()}


def from_item(item: Mapping[str, Any]) -> tuple[str, ConversationState]:
    """The conversation id and state a stored item holds (derived attributes are recomputed later)."""
    plain = unwrap(item)
    stamps = plain.get(STAMPS) or {}
    registers = {name: Register(int(stamp), plain.get(name)) for name, stamp in stamps.items()}
    raw_keys = item.get(KEYS, {}).get("B", b"")
    keys = [int.from_bytes(raw_keys[i:i + 8], "big") for i in range(0, len(raw_keys), 8)]
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
    return sum(len(str(v)) for v in value)


def serialize(value: Any) -> dict[str, Any]:
    """A plain value as a DynamoDB AttributeValue."""
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
        return int(value) if value.lstrip("-").isdigit() else float(value)
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
        return sorted(int(v) if v.lstrip("-").isdigit() else float(v) for v in value)
    raise TypeError(f"unknown DynamoDB attribute type {kind}")
