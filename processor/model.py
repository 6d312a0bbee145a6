"""The values that travel along the data path: records in, events in the middle, dead letters out."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Mapping, NamedTuple, Tuple


#: longer sources of a dead letter's id are digested (a DynamoDB key holds 2,048 bytes)
MAX_ID_SOURCE_CHARS = 256


class Record(NamedTuple):
    """One Kinesis record as the shard consumer sees it."""

    data: bytes
    sequence_number: str
    partition_key: str = ""
    #: the decoded envelope, when the caller already had to decode it to route it (replay)
    envelope: dict[str, Any] | None = None
    #: Kinesis' ApproximateArrivalTimestamp in epoch ms (None: not from a stream; now is used)
    arrival_ms: int | None = None


#: A last-writer-wins register, `(stamp, value)`: the value written by the event with the highest
#: stamp. The stamp is the event time in ms for ordinary fields, or its negation for fields that
#: keep the earliest value (so "max stamp wins" means "min time wins"). Ties break on the value
#: itself, which keeps the merge a deterministic join whatever the arrival order. A plain tuple:
#: one is built per field of every event and of every state read from RocksDB, and a NamedTuple's
#: constructor costs several times a tuple's (read it as `stamp, value = register`).
Register = Tuple[int, Any]


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
    """What could not be applied or stored, kept whole with the reason (I7, I15).

    Either a whole record (`data` is its bytes), or one field of a conversation that DynamoDB
    cannot store (`field` names it, `data` is its value as JSON, `stamp` its event time).
    """

    reason: str
    data: bytes
    shard_id: str
    sequence_number: str = ""
    partition_key: str = ""
    conversation_id: str = ""
    field: str = ""
    stamp: int | None = None

    @property
    def id(self) -> str:
        """Unique per record or per dropped value, so writing it again overwrites its twin; short
        enough for a DynamoDB key (a long conversation id is replaced by its digest)."""
        source = self.sequence_number or self.conversation_id
        if len(source) > MAX_ID_SOURCE_CHARS:
            source = "blake2b:" + hashlib.blake2b(source.encode("utf-8"), digest_size=16).hexdigest()
        parts = [self.shard_id, source, self.field]
        if self.stamp is not None:
            parts.append(str(self.stamp))
        return "#".join(part for part in parts if part)


class Refusal(NamedTuple):
    """A field of a conversation left out of its item because DynamoDB cannot store it (I15)."""

    conversation_id: str
    field: str
    dropped: Register
    reason: str
