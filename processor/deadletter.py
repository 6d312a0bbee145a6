"""Dead-letter destinations: where records that cannot be applied go, whole, with the reason (I7).

Entries are buffered and written at flush, before the shard's sequence is committed, so a crash
re-dead-letters rather than loses. Each entry is keyed by shard id and sequence number, which makes
a re-delivery overwrite its twin instead of duplicating it.

- `JsonlDeadLetters`: one JSON object a line (bytes in base64), for `processor replay`; the file
  is created readable by its owner only (raw payloads carry PII).
- `DynamoDeadLetters`: a DynamoDB table (key `id` = "shardId#sequenceNumber", with "#field" for a
  value DynamoDB cannot store), for production. A table rather than an SQS queue because writes
  are idempotent by key and operators can query a shard's rejects. Bytes are stored as binary;
  over `MAX_INLINE_BYTES` they are kept as a prefix plus length and SHA-256 (the record itself
  stays in the stream for its retention period), so an entry always fits DynamoDB's 400 KB.
  Entries expire (`_ttl`) after the dead-letter retention: they hold raw payloads, hence PII.
"""
from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from typing import Any, Protocol

import orjson

from processor.item import serialize
from processor.model import DeadLetter
from processor.retry import until_processed, with_retries

MAX_INLINE_BYTES = 300 * 1024
BATCH_WRITE_LIMIT = 25


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
        "id": letter.id, "reason": letter.reason, "shardId": letter.shard_id,
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


class DynamoDeadLetters(BufferedDeadLetters):
    def __init__(self, client: Any, table: str, retention_seconds: int | None = None):
        super().__init__()
        self._client = client
        self._table = table
        self._retention = retention_seconds

    def _item(self, letter: DeadLetter) -> dict[str, Any]:
        entry = {name: value for name, value in describe(letter, MAX_INLINE_BYTES).items() if value != ""}
        if self._retention is not None:
            entry["_ttl"] = int(time.time()) + self._retention
        return {name: serialize(value) for name, value in entry.items()}

    def _write(self, letters: list[DeadLetter]) -> None:
        def send(request: dict) -> dict:
            return with_retries(lambda: self._client.batch_write_item(RequestItems=request))

        letters = list({letter.id: letter for letter in letters}.values())  # a batch refuses twin keys
        for start in range(0, len(letters), BATCH_WRITE_LIMIT):
            puts = [{"PutRequest": {"Item": self._item(letter)}} for letter in letters[start:start + BATCH_WRITE_LIMIT]]
            for _ in until_processed(send, {self._table: puts}, "UnprocessedItems"):
                pass
