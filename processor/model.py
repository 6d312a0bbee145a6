"""The values that travel along the data path: records in, events in the middle, dead letters out."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple


class Record(NamedTuple):
    """One Kinesis record as the shard consumer sees it."""

    data: bytes
    sequence_number: str
    partition_key: str = ""
    #: the decoded envelope, when the caller already had to decode it to route it (replay)
    envelope: dict[str, Any] | None = None


class Register(NamedTuple):
    """A last-writer-wins register: the value written by the event with the highest stamp.

    `stamp` is the event time in ms for ordinary fields, or its negation for fields that keep the
    earliest value (so "max stamp wins" means "min time wins"). Ties break on the value itself,
    which keeps the merge a deterministic join whatever the arrival order. (A NamedTuple: one is
    built per field per event, and that is half the cost of a frozen dataclass.)
    """

    stamp: int
    value: Any


class ConversationEvent(NamedTuple):
    """What an adapter makes of one envelope: which conversation, which event, what it sets."""

    conversation_id: str
    key: int  # 64-bit event key: identical for exact repeats and source re-emits
    kind: str  # e.g. "acd.start", "snapshot", "generic"; for counters and logs, never PII
    time_ms: int
    sets: Mapping[str, Register]


class Rejected(Exception):
    """Raised by decode/normalize for input that cannot be applied; becomes a dead letter."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be applied, kept whole (base64 in the destination) with the reason."""

    reason: str
    data: bytes
    shard_id: str
    sequence_number: str
    partition_key: str = ""
