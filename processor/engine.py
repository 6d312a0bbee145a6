"""One shard's engine: decode → normalize → dedup → reduce → collapse → buffer, and the flush.

The flush is the checkpoint sequence of I4, in this order and no other:
  1. DynamoDB conditional writes of the conversations whose projection changed (I5);
  2. dead letters made durable (I7);
  3. one RocksDB WriteBatch: every state touched since the last flush + the last applied sequence;
  4. only then may the caller checkpoint the returned sequence number with KCL.
A crash between any two steps replays from the previous checkpoint: the replayed writes find
themselves already stored (the conditional write fails, the merge changes nothing) and nothing is
lost, because nothing is checkpointed before it is in DynamoDB.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Iterable, Sequence

from processor.adapters import Adapter
from processor.deadletter import DeadLetters
from processor.decode import decode
from processor.model import ConversationEvent, DeadLetter, Record, Rejected
from processor.reduce import ConversationState, Outcome, apply
from processor.sink import Sink
from processor.store import ShardStore


@dataclass
class Counters:
    """What happened to the records a shard saw. Sums across shards with `+`."""

    events: int = 0  # records taken in (applied or rejected)
    exact_repeats: int = 0
    noop_collapsed: int = 0
    stale: int = 0
    rejected: int = 0
    changes: int = 0  # events that changed their conversation's projection
    conversations: int = 0  # conversations this process had no local state for
    rehydrated: int = 0  # of those, found in DynamoDB (a lease or reshard moved them here)
    skipped: int = 0  # records at or below the committed sequence (already applied)
    flushes: int = 0

    def __add__(self, other: Counters) -> Counters:
        return Counters(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


@dataclass(frozen=True)
class FlushPolicy:
    """Flush every `max_records` records or `max_seconds` seconds, whichever comes first."""

    max_records: int = 10_000
    max_seconds: float = 1.0


class ShardEngine:
    def __init__(self, shard_id: str, adapter: Adapter, store: ShardStore, sink: Sink,
                 dead_letters: DeadLetters, policy: FlushPolicy = FlushPolicy()):
        self.shard_id = shard_id
        self.counters = Counters()
        self._adapter = adapter
        self._store = store
        self._sink = sink
        self._dead_letters = dead_letters
        self._policy = policy
        self._committed = _as_int(store.last_sequence)
        self._touched: dict[str, ConversationState] = {}
        self._changed: set[str] = set()
        self._last_sequence: str | None = None
        self._pending_records = 0
        self._last_flush = time.monotonic()

    @property
    def sink(self) -> Sink:
        return self._sink

    @property
    def committed_sequence(self) -> str | None:
        """The last sequence number whose effects are in DynamoDB and RocksDB."""
        return None if self._committed is None else str(self._committed)

    def process(self, records: Sequence[Record]) -> None:
        """Apply a batch of records in order (the flush is separate: see `flush_due`)."""
        events: list[ConversationEvent] = []
        for record in records:
            if self._committed is not None and int(record.sequence_number) <= self._committed:
                self.counters.skipped += 1
                continue
            self.counters.events += 1
            self._pending_records += 1
            self._last_sequence = record.sequence_number
            event = self._normalize(record)
            if event is not None:
                events.append(event)
        self._load(event.conversation_id for event in events)
        counters = self.counters
        for event in events:
            outcome = apply(self._touched[event.conversation_id], event)
            if outcome is Outcome.CHANGE:
                self._changed.add(event.conversation_id)
                counters.changes += 1
            elif outcome is Outcome.REPEAT:
                counters.exact_repeats += 1
            elif outcome is Outcome.NOOP:
                counters.noop_collapsed += 1
            else:
                counters.stale += 1

    def _normalize(self, record: Record) -> ConversationEvent | None:
        try:
            envelope = record.envelope if record.envelope is not None else decode(record.data)
            return self._adapter.normalize(envelope)
        except Rejected as rejection:
            reason = rejection.reason
        except Exception as error:  # noqa: BLE001 - a bad record must never crash the shard
            reason = f"adapter error: {type(error).__name__}"  # the type only: messages may carry PII
        self.counters.rejected += 1
        self._dead_letters.add(DeadLetter(reason, record.data, self.shard_id, record.sequence_number,
                                          record.partition_key))
        return None

    def _load(self, conversation_ids: Iterable[str]) -> None:
        """Bring each conversation's state into the buffer: from RocksDB, else from DynamoDB (I6)."""
        missing = [cid for cid in dict.fromkeys(conversation_ids) if cid not in self._touched]
        if not missing:
            return
        local = self._store.get_many(missing)
        unknown = [cid for cid in missing if cid not in local]
        remote = self._sink.read(unknown) if unknown else {}
        self.counters.conversations += len(unknown)
        self.counters.rehydrated += len(remote)
        for cid in missing:
            self._touched[cid] = local.get(cid) or remote.get(cid) or ConversationState()

    def flush_due(self, now: float | None = None) -> bool:
        if self._pending_records >= self._policy.max_records:
            return True
        elapsed = (time.monotonic() if now is None else now) - self._last_flush
        return self._pending_records > 0 and elapsed >= self._policy.max_seconds

    def flush(self) -> str | None:
        """Write changed states, commit locally, and return the sequence number safe to checkpoint."""
        changed = {cid: self._touched[cid] for cid in self._changed}
        if changed:
            self._sink.write(changed)
        self._dead_letters.flush()
        if self._touched or self._last_sequence is not None:
            self._store.commit(self._touched, self._last_sequence)
        if self._last_sequence is not None:
            self._committed = int(self._last_sequence)
        self._touched, self._changed = {}, set()
        self._last_sequence = None
        self._pending_records = 0
        self._last_flush = time.monotonic()
        self.counters.flushes += 1
        return self.committed_sequence

    def discard(self) -> None:
        """Drop everything not yet flushed (lease lost: another worker owns the shard now)."""
        self._touched, self._changed = {}, set()
        self._last_sequence = None
        self._pending_records = 0

    def close(self) -> None:
        self._store.close()


def _as_int(sequence: str | None) -> int | None:
    return None if sequence is None else int(sequence)
