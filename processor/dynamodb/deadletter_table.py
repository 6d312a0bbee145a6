"""Dead letters (I7, I15) in a DynamoDB table, for production: keyed `id` (see `DeadLetter.id`), idempotent on
replay, queryable per shard, bytes as binary (a prefix beyond `MAX_INLINE_BYTES`, so an entry always
fits an item), expiring after the dead-letter retention (raw payloads carry PII)."""
from __future__ import annotations

import time
from typing import Any

from processor.deadletters import MAX_INLINE_BYTES, BufferedDeadLetters, describe
from processor.dynamodb.item import serialize
from processor.dynamodb.retry import until_processed, with_retries
from processor.model import DeadLetter

BATCH_WRITE_LIMIT = 25


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
