"""Normalize: source envelopes to `ConversationEvent`s. One adapter per source shape.

An adapter is pure: it reads the decoded envelope and returns the event, or raises `Rejected`
(the record is dead-lettered with the reason, I7).
"""
from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from typing import Any, Mapping, Protocol


from processor import codec
from processor.model import ConversationEvent, Rejected


class Adapter(Protocol):
    #: projection fields known to carry no PII: `processor inspect` shows only these in clear
    #: (plus `[inspect] show`); every other value is masked, so an unknown field is safe by default
    public_fields: frozenset[str]
    #: whether events carry ACD/agent sessions (`processor.analytics.sessions`): metrics are kept
    keeps_sessions: bool

    def normalize(self, envelope: dict[str, Any]) -> ConversationEvent:
        """The event this envelope carries; raises `Rejected` when it carries none."""

    def partition_key(self, envelope: dict[str, Any]) -> str:
        """The conversation id as the EventBridge rule's PartitionKeyPath reads it ("" if none)."""

    def derive(self, values: Mapping[str, Any]) -> Mapping[str, Any]:
        """Projection attributes computed from the register values (durations and the like)."""


def event_key(*parts: Any) -> int:
    """A 64-bit key over canonical JSON of `parts`: equal for equal content, whatever the key order."""
    canonical = codec.dumps(parts, sort_keys=True)
    return int.from_bytes(hashlib.blake2b(canonical, digest_size=8).digest(), "big")


def parse_time_ms(value: Any) -> int | None:
    """Epoch milliseconds from a number (already ms) or an ISO-8601 string; None if neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str) and value:
        text = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return int(moment.timestamp() * 1000)
    return None


def require_conversation_id(value: Any, where: str) -> str:
    if isinstance(value, str) and value:
        return value
    raise Rejected(f"missing conversation id at {where}")


def require_time(value: Any, where: str) -> int:
    millis = parse_time_ms(value)
    if millis is None:
        raise Rejected(f"unparseable event time at {where}")
    return millis


def build_adapter(settings: Mapping[str, Any] | None) -> Adapter:
    """The adapter the `[adapter]` settings table asks for (Genesys when there is none)."""
    settings = settings or {}
    kind = settings.get("kind", "genesys")
    if kind == "genesys":
        from processor.adapters.genesys import GenesysAdapter

        return GenesysAdapter()
    if kind == "generic":
        from processor.adapters.generic import GenericAdapter

        return GenericAdapter.from_settings(settings)
    raise ValueError(f"unknown adapter kind {kind!r}: expected 'genesys' or 'generic'")
