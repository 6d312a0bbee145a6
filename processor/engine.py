"""One shard's engine: decode → normalize → admit → dedup → reduce → collapse → buffer, and the flush.

The flush is the checkpoint sequence of I4, in this order and no other:
  1. DynamoDB conditional writes of the conversations whose projection changed (I5), one each
     however many of its events the flush holds (I9), and of those held too long (below);
  2. dead letters made durable (I7, I15);
  3. one RocksDB WriteBatch: every state touched since the last flush + the last applied sequence
     + the held conversations (the states stay decoded in memory too, the most recent
     `warm_states` of them, as RocksDB holds them: a conversation's next events mostly come a few
     flushes later, and reading it back was a sixth of a replay's CPU);
  4. only then may the caller checkpoint the returned sequence number with KCL.
A crash between any two steps replays from the previous checkpoint: the replayed writes find
themselves already stored (the conditional write fails, the merge changes nothing) and nothing is
lost, because nothing is checkpointed before it is in DynamoDB.

Held conversations (I14). An event that only advances a field's stamp (a newer event re-setting
the value the field already has) changes no projection, so no write is due (I2); yet the stamp
decides which value a late, older event may replace, so a new owner must know it. Such a
conversation is *held*: the checkpoint returned stays before the record that first advanced its
stamp, so a new owner replays that record, until the conversation is written (its next real
change, `max_hold_seconds` later at most, or a graceful hand-off: `flush(final=True)`).
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, fields
from itertools import islice
from typing import Callable, Iterable, Mapping, Sequence

from processor import codec
from processor.adapters import Adapter
from processor.deadletters import DeadLetters
from processor.decode import decode
from processor.analytics.sessions import is_session, participant_of, session_in
from processor.limits import (MAX_SESSION_PARTICIPANTS, Unstorable, check_event_time, check_partition_key,
                              check_session, plainly_storable, storable)
from processor.model import ConversationEvent, DeadLetter, Record, Refusal, Register, Rejected
from processor.reduce import ConversationState, Outcome, apply

from processor.dynamodb.sink import Sink
from processor.store import Held, ShardStore, decode_state


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
    refused_fields: int = 0  # values left out because DynamoDB cannot store them (dead-lettered)
    held_writes: int = 0  # writes only to make locally advanced stamps durable (I14)

    def __add__(self, other: Counters) -> Counters:
        return Counters(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


#: records taken through the stages together: what one stage leaves for the next (envelopes, events)
#: is still in the CPU's caches when a chunk is this small (KCL hands over up to 10,000 at once)
CHUNK_RECORDS = 32

#: conversations kept decoded after their flush, the least recently touched dropped. Each costs
#: ~1.7 KB of memory (a Genesys conversation): at 1,500 a shard's peak RSS is no higher than before
#: states were kept warm (bench curve, 10,000 conversations over 4 shards: 286 MB); 2,500 was 292 MB
WARM_STATES = 1_500

#: a conversation as read: its state in RocksDB (still encoded), and in DynamoDB where RocksDB has none
Found = tuple[bytes | None, ConversationState | None]


@dataclass(frozen=True)
class FlushPolicy:
    """Flush every `max_records` records or `max_seconds` seconds, whichever comes first; write a
    held conversation at the first flush `max_hold_seconds` after it was first held."""

    max_records: int = 10_000
    max_seconds: float = 1.0
    max_hold_seconds: float = 60.0


class ShardEngine:
    def __init__(self, shard_id: str, adapter: Adapter, store: ShardStore, sink: Sink,
                 dead_letters: DeadLetters, policy: FlushPolicy = FlushPolicy(), checkpoint: str | None = None,
                 clock: Callable[[], float] = time.time, warm_states: int = WARM_STATES):
        """`checkpoint`: where KCL resumes this shard (records after it are delivered); the store
        must already be current for it (`ShardStore.is_current_for`)."""
        self.shard_id = shard_id
        self.counters = Counters()
        self._adapter = adapter
        self._store = store
        self._sink = sink
        self._dead_letters = dead_letters
        self._policy = policy
        self._clock = clock
        self._refusals_lock = threading.Lock()
        self._committed = _as_int(store.last_sequence)
        self._previous: str | None = checkpoint if checkpoint is not None and checkpoint.isdigit() else None
        self._held: Held = _still_held(store.held, self._previous)
        self._earliest_hold = _earliest(self._held)
        self._touched: dict[str, ConversationState] = {}
        #: committed states, exactly as in RocksDB, least recently touched first
        self._warm: dict[str, ConversationState] = {}
        #: the current batch's conversations, read before its first chunk: (RocksDB's, still encoded;
        #: DynamoDB's, where RocksDB has none)
        self._ahead: dict[str, Found] = {}
        self._warm_limit = warm_states
        self._changed: set[str] = set()
        self._last_sequence: str | None = None
        self._pending_records = 0
        self._last_flush = time.monotonic()

    @property
    def sink(self) -> Sink:
        return self._sink

    @property
    def committed_sequence(self) -> str | None:
        """The last sequence number whose effects are in RocksDB (and, but for held stamps, DynamoDB)."""
        return None if self._committed is None else str(self._committed)

    @property
    def held(self) -> int:
        """How many conversations hold the checkpoint back."""
        return len(self._held)

    def process(self, records: Sequence[Record]) -> None:
        """Apply a batch of records in order (the flush is separate: see `flush_due`)."""
        self._read_ahead(records)
        try:
            for start in range(0, len(records), CHUNK_RECORDS):
                self._process_chunk(records[start:start + CHUNK_RECORDS])
        finally:
            self._ahead = {}

    def _read_ahead(self, records: Sequence[Record]) -> None:
        """Read the conversations of a batch longer than a chunk in one go: DynamoDB's 100 to a
        BatchGetItem (chunks reading their own would each make one), RocksDB's left encoded, to be
        decoded in the chunk where their events apply. The partition keys name them: the EventBridge
        rule partitions by conversation id. A key that names none is read for nothing (only what
        `_load` asks for is used); one no read may carry is left to the chunk, which refuses it."""
        if len(records) <= CHUNK_RECORDS or not self._sink.keeps_states:
            return
        keys = dict.fromkeys(record.partition_key for record in records if not self._applied(record))
        touched, warm = self._touched, self._warm
        wanted = [cid for cid in keys if cid not in touched and cid not in warm and _readable(cid)]
        if wanted:
            self._ahead = self._read(wanted)

    def _applied(self, record: Record) -> bool:
        """Whether the record's effects are committed here already (KCL redelivers after a crash)."""
        return self._committed is not None and int(record.sequence_number) <= self._committed

    def _process_chunk(self, records: Sequence[Record]) -> None:
        """Admit the records, load their conversations, apply their events: stage by stage."""
        events: list[tuple[ConversationEvent, str | None, Record]] = []
        for record in records:
            before, self._previous = self._previous, record.sequence_number
            if self._applied(record):
                self.counters.skipped += 1
                self._pending_records += 1  # applied before, yet maybe never checkpointed: a flush owes KCL one
                continue
            self.counters.events += 1
            self._pending_records += 1
            self._last_sequence = record.sequence_number
            event = self._admit(record)
            if event is not None:
                events.append((event, before, record))
        self._load(event.conversation_id for event, _, _ in events)
        counters = self.counters
        for event, before, record in events:
            cid = event.conversation_id
            outcome, restamped = apply(self._touched[cid], self._within_session_limit(record, event))
            if outcome is Outcome.CHANGE:
                self._changed.add(cid)
                counters.changes += 1
            elif outcome is Outcome.REPEAT:
                counters.exact_repeats += 1
            elif outcome is Outcome.NOOP:
                counters.noop_collapsed += 1
            else:
                counters.stale += 1
            if restamped and cid not in self._held:
                since = self._clock()
                self._held[cid] = (before, since)
                self._earliest_hold = min(since, self._earliest_hold)

    def _admit(self, record: Record) -> ConversationEvent | None:
        """Decode and normalize a record, and keep what DynamoDB could never store out of it (I15):
        a record that cannot be applied is dead-lettered whole; a value that cannot be stored
        becomes a tombstone (its stamp kept) and is dead-lettered on its own."""
        conversation_id = ""
        try:
            envelope = record.envelope if record.envelope is not None else decode(record.data)
            event = self._adapter.normalize(envelope)
            conversation_id = event.conversation_id
            arrival_ms = record.arrival_ms if record.arrival_ms is not None else int(self._clock() * 1000)
            reason = check_partition_key(conversation_id) or check_event_time(event.time_ms, arrival_ms)
            if reason is not None:
                raise Rejected(reason)
            return self._storable(record, event, arrival_ms)
        except Rejected as rejection:
            reason = rejection.reason
        except Exception as error:  # noqa: BLE001 - a bad record must never crash the shard
            reason = f"adapter error: {type(error).__name__}"  # the type only: messages may carry PII (I10)
        self.counters.rejected += 1
        self._dead_letters.add(DeadLetter(reason, record.data, self.shard_id, record.sequence_number,
                                          record.partition_key, conversation_id))
        return None

    def _storable(self, record: Record, event: ConversationEvent, arrival_ms: int) -> ConversationEvent:
        """`event` with its values as DynamoDB stores them (the event itself, in the common case)."""
        time_ms = event.time_ms
        for stamp, value in event.sets.values():  # the common case first: plain values at the event's time
            if (stamp != time_ms and stamp != -time_ms) or not plainly_storable(value):
                break
        else:
            return event
        kept = {name: self._storable_register(record, event, name, register, arrival_ms)
                for name, register in event.sets.items()}
        if all(kept[name] is register for name, register in event.sets.items()):
            return event
        return event._replace(sets={name: register for name, register in kept.items() if register is not None})

    def _storable_register(self, record: Record, event: ConversationEvent, name: str, register: Register,
                           arrival_ms: int) -> Register | None:
        """The register as stored, a tombstone if its value cannot be, None if its time is broken."""
        stamp, value = register
        if stamp != event.time_ms and stamp != -event.time_ms:  # the event's own time is checked already
            reason = check_event_time(abs(stamp), arrival_ms)
            if reason is not None:  # e.g. a snapshot's start time from a broken clock
                self._refuse_field(record, event.conversation_id, name, reason)
                return None
        try:
            kept = storable(value)
        except Unstorable as refusal:
            self._refuse_field(record, event.conversation_id, name, refusal.reason)
            return stamp, None
        return register if kept is value else (stamp, kept)

    def _within_session_limit(self, record: Record, event: ConversationEvent) -> ConversationEvent:
        """`event` without a session the metrics cannot keep (dead-lettered, I15): ids too long for a
        metrics key, numbers beyond what sums may reach, a participant beyond
        `MAX_SESSION_PARTICIPANTS` (sessions are bookkeeping no size limit trims)."""
        name = session_in(event.sets)
        if name is None:
            return event
        value = event.sets[name][1]
        if value is None:  # DynamoDB could not store it: dead-lettered on admission, and no tombstone kept
            return _without(event, name)
        reason = check_session(value)
        if reason is None and not _admits_participant(self._touched[event.conversation_id].registers, name):
            reason = f"sessions of more than {MAX_SESSION_PARTICIPANTS} participants"
        if reason is None:
            return event
        self._refuse_field(record, event.conversation_id, name, f"{reason}: left out of the metrics")
        return _without(event, name)

    def _refuse_field(self, record: Record, conversation_id: str, name: str, reason: str) -> None:
        self.counters.refused_fields += 1
        self._dead_letters.add(DeadLetter(f"field {name}: {reason}", record.data, self.shard_id,
                                          record.sequence_number, record.partition_key, conversation_id, name))

    def _load(self, conversation_ids: Iterable[str]) -> None:
        """Bring each conversation's state into the buffer: from RocksDB, else from DynamoDB (I6)."""
        missing = [cid for cid in dict.fromkeys(conversation_ids) if cid not in self._touched]
        warm = self._warm
        if warm:
            self._touched.update((cid, warm.pop(cid)) for cid in missing if cid in warm)
            missing = [cid for cid in missing if cid not in self._touched]
        if not missing:
            return
        ahead = self._ahead
        found = {cid: ahead.pop(cid) for cid in missing if cid in ahead}
        unread = [cid for cid in missing if cid not in found]
        if unread:
            found.update(self._read(unread))
        loaded = {}
        for cid in missing:
            local, remote = found[cid]
            if local is not None:
                loaded[cid] = decode_state(local)
                continue
            self.counters.conversations += 1
            self.counters.rehydrated += remote is not None
            loaded[cid] = remote or ConversationState()
        self._sink.baseline(loaded.values())  # what each contributes as stored, before events change it (I12)
        self._touched.update(loaded)

    def _read(self, conversation_ids: list[str]) -> dict[str, Found]:
        """Each conversation's state in RocksDB, and in DynamoDB where RocksDB has none (I6)."""
        local = self._store.get_encoded(conversation_ids)
        unknown = [cid for cid in conversation_ids if cid not in local]
        remote = self._sink.read(unknown) if unknown else {}
        return {cid: (local.get(cid), remote.get(cid)) for cid in conversation_ids}

    def flush_due(self, now: float | None = None) -> bool:
        """A flush is due after `max_records` records or `max_seconds` with records pending, or
        when a held conversation must be written (a quiet shard too: KCL calls on empty polls)."""
        if self._pending_records >= self._policy.max_records:
            return True
        elapsed = (time.monotonic() if now is None else now) - self._last_flush
        if self._pending_records > 0 and elapsed >= self._policy.max_seconds:
            return True
        return bool(self._held) and self._held_until() <= self._clock()

    def _held_until(self) -> float:
        return self._earliest_hold + self._policy.max_hold_seconds

    def flush(self, final: bool = False) -> str | None:
        """Write changed states, commit locally, and return the sequence number safe to checkpoint
        (None: none yet). `final`: the shard is handed over, so every held conversation is written
        and the checkpoint can reach the last record."""
        due = self._due_held(final)
        self._load(due)
        writes = self._changed | due
        if writes:
            self._sink.write({cid: self._touched[cid] for cid in writes}, self._dead_letter_now, self.shard_id)
            self.counters.held_writes += len(due - self._changed)
            for cid in writes:
                self._held.pop(cid, None)
            self._earliest_hold = _earliest(self._held)
        self._dead_letters.flush()
        if self._touched or self._last_sequence is not None:
            self._store.commit(self._touched, self._last_sequence, self._held)
            self._keep_warm(self._touched)
        if self._last_sequence is not None:
            self._committed = int(self._last_sequence)
        self._touched, self._changed = {}, set()
        self._last_sequence = None
        self._pending_records = 0
        self._last_flush = time.monotonic()
        self.counters.flushes += 1
        return self.checkpoint_sequence

    def _keep_warm(self, committed: Mapping[str, ConversationState]) -> None:
        """Keep the states just committed, newest last, dropping the least recently touched."""
        warm = self._warm
        warm.update(committed)  # a loaded state was taken out of `warm`: it comes back last
        excess = len(warm) - self._warm_limit
        if excess > 0:
            for cid in list(islice(warm, excess)):
                del warm[cid]

    @property
    def checkpoint_sequence(self) -> str | None:
        """The last sequence number a new owner may resume after: the committed one, or the record
        before the first one whose stamp is held only here (None: no record may be skipped yet);
        never past the last record KCL delivered (local state can be ahead after a crash between
        the commit and the checkpoint, and KCL refuses a checkpoint it has not delivered)."""
        safe = [before for before, _ in self._held.values()] or [self.committed_sequence]
        if None in safe or self._previous is None:
            return None
        return min(*safe, self._previous, key=int)

    def _due_held(self, final: bool) -> set[str]:
        if final:
            return set(self._held)
        held_before = self._clock() - self._policy.max_hold_seconds
        return {cid for cid, (_, since) in self._held.items() if since <= held_before}

    def _dead_letter_now(self, refusals: list[Refusal]) -> None:
        """Values the sink is about to leave out of an item, made durable first (I15)."""
        letters = [DeadLetter(f"field {r.field}: {r.reason}", codec.dumps(value), self.shard_id,
                              conversation_id=r.conversation_id, field=r.field, stamp=stamp)
                   for r in refusals for stamp, value in (r.dropped,)]
        with self._refusals_lock:
            self.counters.refused_fields += len(letters)
            self._dead_letters.write_now(letters)

    def discard(self) -> None:
        """Drop everything not yet flushed (lease lost: another worker owns the shard now)."""
        self._held = self._store.held
        self._earliest_hold = _earliest(self._held)
        self._touched, self._changed = {}, set()
        self._warm.clear()
        self._last_sequence = None
        self._pending_records = 0

    def close(self) -> None:
        self._store.close()


def _without(event: ConversationEvent, name: str) -> ConversationEvent:
    """`event` without the register `name` (a session left out of the metrics)."""
    return event._replace(sets={other: register for other, register in event.sets.items() if other != name})


def _admits_participant(registers: Mapping[str, Register], name: str) -> bool:
    """Whether a conversation holding `registers` may keep the session register `name`: one of a
    known participant, or of a new one while fewer than `MAX_SESSION_PARTICIPANTS` are known (a
    participant has at least one register, so fewer registers than that settle it at once)."""
    if len(registers) < MAX_SESSION_PARTICIPANTS or name in registers:
        return True
    participant = participant_of(name)
    known = {participant_of(other) for other in registers if is_session(other)}
    return participant in known or len(known) < MAX_SESSION_PARTICIPANTS


def _readable(key: str) -> bool:
    """Whether a partition key may be read as a conversation id: DynamoDB refuses a read of a key
    it could never store (too long), and a lone surrogate cannot be encoded at all."""
    if not key or check_partition_key(key) is not None:
        return False
    if key.isascii():
        return True
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _earliest(held: Held) -> float:
    """When the longest-held conversation was first held (infinity: none is)."""
    return min((since for _, since in held.values()), default=float("inf"))


def _as_int(sequence: str | None) -> int | None:
    return None if sequence is None else int(sequence)


def _still_held(held: Held, checkpoint: str | None) -> Held:
    """The held conversations a shard resumed after `checkpoint` must still write. A worker moved
    the checkpoint past the first record of the others, which it does only once their stamps are
    written (a lease that came back to this disk): checkpointing before them would go backwards."""
    if checkpoint is None:
        return dict(held)
    return {cid: (before, since) for cid, (before, since) in held.items()
            if before is not None and int(before) >= int(checkpoint)}
