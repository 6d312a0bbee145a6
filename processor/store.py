"""The state store: one RocksDB per shard, holding each conversation's state and the shard's
last applied sequence number, committed together in one WriteBatch (I4), with the conversations
whose stamps only this store knows (`held`, see `processor.engine`).

KCL runs one child process per shard lease and RocksDB allows one writer, so one database per
shard is both the natural and the only safe layout (I8). Entries expire after the retention
window since their last write (RocksDB TTL); an expired conversation is simply read back from
DynamoDB if it ever shows up again (I6), so expiry is always safe.
"""
from __future__ import annotations

import base64
import os
import re
import time
from typing import Callable, Iterable, Mapping

from rocksdict import AccessType, BlockBasedOptions, Cache, Options, Rdict, WriteBatch

from processor import codec
from processor.reduce import ConversationState

WRITE_BUFFER_BYTES = 8 * 1024 * 1024
BLOCK_CACHE_BYTES = 16 * 1024 * 1024
TTL_SUFFIX_BYTES = 4

_STATE = b"c:"
_SEQUENCE = b"m:sequence"
_HELD = b"m:held"
_FORMAT = b"m:format"

#: the layout of the values: [version, recent keys, {field: [stamp, value]}] as exact JSON, where
#: format 2 writes the recent keys as base64 of 8 bytes each (`codec.pack_keys`) and format 1 wrote
#: them as numbers. Twenty-digit keys made every format-1 value take the slow exact JSON path; a
#: format-2 store still reads format-1 values (the type of the keys tells them apart), so an
#: upgrade rewrites each state when it next changes, with no migration pass. A store of another
#: format is refused with `StoreFormatError`; the state is a cache of DynamoDB, so the KCL child
#: rebuilds it (I6). Stores written before formats were recorded are format 1.
FORMAT = 2
READABLE_FORMATS = frozenset({1, 2})


class StoreFormatError(RuntimeError):
    """The store was written in a format this processor does not read."""

#: conversation id -> (the sequence number safe to checkpoint before its first unwritten stamp
#: (None: before the shard's first record), epoch seconds since when it is held)
Held = dict[str, tuple[str | None, float]]

def encode_state(state: ConversationState) -> bytes:
    keys = base64.b64encode(codec.pack_keys(state.recent_keys)).decode("ascii")
    return codec.dumps((state.version, keys, state.registers))


def decode_state(data: bytes) -> ConversationState:
    """A state in format 2, or in format 1 (keys as numbers)."""
    version, keys, registers = codec.loads(data)
    if keys.__class__ is str:
        keys = codec.unpack_keys(base64.b64decode(keys))
    return ConversationState({name: (stamp, value) for name, (stamp, value) in registers.items()}, keys, version)


def shard_directory(root: str, shard_id: str) -> str:
    """Where a shard's database lives under `root` (shard ids are safe file names, but be sure)."""
    return os.path.join(root, re.sub(r"[^A-Za-z0-9._-]", "_", shard_id))


class ShardStore:
    """A shard's RocksDB. Not thread-safe: one shard process, one writer."""

    def __init__(self, path: str, retention_seconds: int | None = None, read_only: bool = False,
                 lock_wait_seconds: float = 0.0):
        """`read_only`: look, while the shard's own process may be writing (`processor inspect`).
        `lock_wait_seconds`: how long to wait for another process to let go of the database (a
        child of the same worker still shutting down when the lease comes back to the worker)."""
        self.path = path
        self._retention = retention_seconds
        self._read_only = read_only
        # A TTL database stores a 4-byte timestamp after each value; only a plain open sees it.
        self._suffix = TTL_SUFFIX_BYTES if read_only and retention_seconds else 0
        self._db = self._open_when_free(lock_wait_seconds)
        try:
            self._check_format()
        except StoreFormatError:
            self._db.close()
            raise

    @classmethod
    def rebuilt_if_foreign(cls, path: str, retention_seconds: int | None, lock_wait_seconds: float = 0.0,
                           log: Callable[[str], None] = lambda _: None) -> ShardStore:
        """The shard's store; one in a format this processor does not read is removed first (its
        state is a cache of DynamoDB: conversations are read back as they return, I6)."""
        try:
            return cls(path, retention_seconds, lock_wait_seconds=lock_wait_seconds)
        except StoreFormatError as foreign:
            log(str(foreign))
            Rdict.destroy(path)
            return cls(path, retention_seconds, lock_wait_seconds=lock_wait_seconds)

    def _check_format(self) -> None:
        """Refuse a format this processor cannot read; a writable open marks the store as this
        format (older processors then refuse it instead of misreading format-2 values)."""
        found = self._value(self._db.get(_FORMAT))
        readable = {str(number).encode("ascii") for number in READABLE_FORMATS}
        if found is not None and found not in readable:
            raise StoreFormatError(f"the state in {self.path} has format {found.decode('ascii', 'replace')}; this "
                                   f"processor reads formats {', '.join(map(str, sorted(READABLE_FORMATS)))}: "
                                   "remove the directory (the state is rebuilt from DynamoDB) or run the version "
                                   "that wrote it")
        if found != str(FORMAT).encode("ascii") and not self._read_only:
            self._db.put(_FORMAT, str(FORMAT).encode("ascii"))

    def _open_when_free(self, wait_seconds: float) -> Rdict:
        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                return self._open()
            except Exception as error:  # rocksdict raises a bare Exception for I/O errors
                if "LOCK" not in str(error) or time.monotonic() >= deadline:
                    raise
                time.sleep(0.5)

    def _open(self) -> Rdict:
        path, read_only, retention_seconds = self.path, self._read_only, self._retention
        if not read_only:
            os.makedirs(path, exist_ok=True)
        options = Options(raw_mode=True)
        options.create_if_missing(True)
        # Bound memory per shard whatever the stream length (I8): small memtables, a small cache.
        options.set_write_buffer_size(WRITE_BUFFER_BYTES)
        options.set_max_write_buffer_number(2)
        table = BlockBasedOptions()
        table.set_block_cache(Cache(BLOCK_CACHE_BYTES))
        table.set_cache_index_and_filter_blocks(True)  # else they grow outside the cache with the data
        # A conversation's first event looks for a state that is not there: a filter answers that
        # without reading a block (10 bits a key, ~1 % false positives).
        table.set_bloom_filter(10, False)
        options.set_block_based_table_factory(table)
        if read_only:
            access = AccessType.read_only()
        else:
            access = AccessType.with_ttl(retention_seconds) if retention_seconds else AccessType.read_write()
        return Rdict(path, options, access_type=access)

    @property
    def last_sequence(self) -> str | None:
        """The sequence number of the last record whose effects are committed here."""
        value = self._value(self._db.get(_SEQUENCE))
        return value.decode("ascii") if value is not None else None

    @property
    def held(self) -> Held:
        """Conversations whose latest stamps are only here, not yet in DynamoDB (see the engine)."""
        value = self._value(self._db.get(_HELD))
        return {} if value is None else {cid: (safe, since) for cid, (safe, since) in codec.loads(value).items()}

    def is_current_for(self, checkpoint: str | None) -> bool:
        """Whether this store may be used by a shard that KCL resumes after `checkpoint` (I14).

        It may when it reflects every record up to the checkpoint: KCL delivers everything after
        it, and records this store already applied are skipped. If another worker took the shard
        further meanwhile (the lease came back), the records it applied are never delivered again
        and this store lacks their effects. A checkpoint that is not a sequence number
        (TRIM_HORIZON, LATEST, AT_TIMESTAMP) proves nothing about an existing store either.
        """
        local = self.last_sequence
        if local is None:
            return not self.has_states()
        return checkpoint is not None and checkpoint.isdigit() and int(local) >= int(checkpoint)

    def has_states(self) -> bool:
        for key in self._db.keys(from_key=_STATE):
            return key.startswith(_STATE)
        return False

    def reset(self) -> None:
        """Drop everything: the shard's state will be read back from DynamoDB as needed (I6)."""
        self._db.close()
        Rdict.destroy(self.path)
        self._db = self._open()
        self._check_format()

    def get(self, conversation_id: str) -> ConversationState | None:
        data = self._value(self._db.get(_STATE + conversation_id.encode("utf-8")))
        return decode_state(data) if data is not None else None

    def get_encoded(self, conversation_ids: Iterable[str]) -> dict[str, bytes]:
        """The stored states, still encoded (`decode_state`): fetched together, decoded one by one
        where they are used."""
        ids = list(conversation_ids)
        values = self._db.get([_STATE + cid.encode("utf-8") for cid in ids])
        return {cid: data for cid, data in zip(ids, map(self._value, values)) if data is not None}

    def _value(self, stored: bytes | None) -> bytes | None:
        return stored[: len(stored) - self._suffix] if stored is not None and self._suffix else stored

    def commit(self, states: Mapping[str, ConversationState], sequence: str | None,
               held: Held | None = None) -> None:
        """Write `states`, the sequence they reach and the held conversations as one atomic batch."""
        batch = WriteBatch(raw_mode=True)
        for conversation_id, state in states.items():
            batch.put(_STATE + conversation_id.encode("utf-8"), encode_state(state))
        if sequence is not None:
            batch.put(_SEQUENCE, sequence.encode("ascii"))
        if held is not None:
            batch.put(_HELD, codec.dumps(held))
        batch.put(_FORMAT, str(FORMAT).encode("ascii"))  # rewritten, or TTL would expire it
        self._db.write(batch)

    def compact(self) -> None:
        """Compact the whole database; this is when RocksDB drops entries past their TTL."""
        self._db.compact_range(None, None)

    def close(self) -> None:
        self._db.close()
