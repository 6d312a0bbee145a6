"""Dead-letter destinations: where records that cannot be applied go, whole, with the reason (I7).

Entries are buffered and written at flush, before the shard's sequence is committed, so a crash
re-dead-letters rather than loses. Each entry is keyed by shard id and sequence number, which makes
a re-delivery overwrite its twin instead of duplicating it.

- `JsonlDeadLetters`: one JSON object a line (bytes in base64), for `processor replay`; the file
  is created readable by its owner only (raw payloads carry PII).
- `processor.dynamodb.deadletter_table.DynamoDeadLetters`: a DynamoDB table, for production. A
  table rather than an SQS queue because writes are idempotent by key and operators can query a
  shard's rejects. Bytes over `MAX_INLINE_BYTES` are kept as a prefix plus length and SHA-256 (the
  record itself stays in the stream for its retention period), so an entry always fits an item.
"""
from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from typing import Any, Protocol

import orjson

from processor.model import DeadLetter

MAX_INLINE_BYTES = 300 * 1024

#: the key of a dead-letter item and record
KEY = "id"


class DeadLetters(Protocol):
    count: int

    def add(self, letter: DeadLetter) -> None: ...

    def flush(self) -> None:
        """Make every added letter durable."""

    def write_now(self, letters: list[DeadLetter]) -> None:
        """Make these letters durable at once (thread-safe), apart from the buffer."""


#: the longest conversation id an entry repeats (a longer one is why its record was refused)
MAX_ID_CHARS = 2048


def describe(letter: DeadLetter, inline_limit: int | None = None) -> dict[str, Any]:
    """The dead-letter entry: reason, where it came from, and its bytes (raw: encode for JSON)."""
    data = letter.data if inline_limit is None else letter.data[:inline_limit]
    entry: dict[str, Any] = {
        KEY: letter.id, "reason": letter.reason, "shardId": letter.shard_id,
        "sequenceNumber": letter.sequence_number, "partitionKey": letter.partition_key[:MAX_ID_CHARS],
        "conversationId": letter.conversation_id[:MAX_ID_CHARS], "data": data, "size": len(letter.data),
        "receivedAt": int(time.time() * 1000)}
    if letter.field:
        entry["field"] = letter.field
    if letter.stamp is not None:
        entry["stamp"] = letter.stamp
    if len(data) < len(letter.data):
        entry["truncated"] = True
        entry["sha256"] = hashlib.sha256(letter.data).hexdigest()
    return entry


class BufferedDeadLetters:
    """Holds letters until the flush; subclasses say how to make a batch durable."""

    def __init__(self) -> None:
        self._pending: list[DeadLetter] = []
        self._lock = threading.Lock()
        self.count = 0

    def add(self, letter: DeadLetter) -> None:
        self._pending.append(letter)

    def flush(self) -> None:
        if self._pending:
            self.write_now(self._pending)
            self._pending = []

    def write_now(self, letters: list[DeadLetter]) -> None:
        with self._lock:
            self._write(letters)
            self.count += len(letters)

    def _write(self, letters: list[DeadLetter]) -> None:
        raise NotImplementedError


class JsonlDeadLetters(BufferedDeadLetters):
    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def _write(self, letters: list[DeadLetter]) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(descriptor, 0o600)  # an existing file too: what is appended is raw payloads
        with open(descriptor, "ab") as out:
            for letter in letters:
                entry = describe(letter)
                entry["data"] = base64.b64encode(entry["data"]).decode("ascii")
                out.write(orjson.dumps(entry) + b"\n")
            out.flush()
            os.fsync(out.fileno())
