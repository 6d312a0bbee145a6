"""In-memory twins of the parts the unit tier may not start: a DynamoDB client with DynamoDB's
semantics for the calls the processor makes, and fault injection around the engine's parts.

`MemoryDynamoDB` answers `put_item` (the processor's version condition, `ALL_OLD` on failure),
`get_item`, `batch_get_item`, `batch_write_item`, `scan` (and its paginator), and the control
calls `ensure_table` makes (`describe_table`, `create_table`, `get_waiter`), with the low-level
item shapes and the `ClientError` shapes botocore raises. It refuses what real DynamoDB refuses
(a table that does not exist, an item over 400 KB, numbers out of range, nesting over 32 levels,
a key over 2,048 bytes), stricter than moto, which accepts deep nesting. So `DynamoSink`,
`DynamoDeadLetters` and the helpers of tests/conftest.py run unchanged against it.

Faults are injected by wrapping public interfaces, never by replacing private attributes:
`Faults` around a client, `DyingDeadLetters` around a dead-letter destination, `CrashingStore`
(a `ShardStore`) for the local commit. A process that dies is a `Crash`, which nothing catches.
"""
from __future__ import annotations

import copy
import itertools
import threading
from decimal import Decimal
from typing import Any, Callable, Iterator, Mapping

from botocore.exceptions import ClientError

from processor.dynamodb.item import KEY, item_size
from processor.store import ShardStore

#: the conditions the processor writes with: its version check, and a probe that never holds
VERSION_CONDITION = "attribute_not_exists(#id) OR #v = :expected"
PROBE_CONDITION = "#v = :never"
#: the tables a twin starts with (table -> key attribute), as the unit tests name them
TABLES = {"conversations": KEY, "dead-letters": "id"}


def client_error(code: str, operation: str, message: str = "", **extra: Any) -> ClientError:
    status = 400 if code not in ("InternalServerError", "ServiceUnavailable") else 500
    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}, **extra}
    return ClientError(response, operation)


class MemoryDynamoDB:
    """Tables of items keyed by their string partition key; one lock, like one partition.
    `keys`: the tables that exist and their key attribute (default `TABLES`)."""

    def __init__(self, keys: Mapping[str, str] | None = None):
        self.keys = dict(TABLES if keys is None else keys)  # table -> key attribute name
        self.tables: dict[str, dict[str, dict]] = {name: {} for name in self.keys}
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def table(self, name: str, operation: str) -> dict[str, dict]:
        if name not in self.tables:
            raise client_error("ResourceNotFoundException", operation, "Requested resource not found")
        return self.tables[name]

    def describe_table(self, TableName: str) -> dict:
        self.calls.append("DescribeTable")
        self.table(TableName, "DescribeTable")
        return {"Table": {"TableName": TableName, "TableStatus": "ACTIVE",
                          "KeySchema": [{"AttributeName": self.keys[TableName], "KeyType": "HASH"}]}}

    def create_table(self, TableName: str, KeySchema: list, **definition: Any) -> dict:
        self.calls.append("CreateTable")
        with self._lock:
            if TableName in self.tables:
                raise client_error("ResourceInUseException", "CreateTable", f"Table already exists: {TableName}")
            self.keys[TableName] = KeySchema[0]["AttributeName"]
            self.tables[TableName] = {}
        return self.describe_table(TableName)

    def get_waiter(self, name: str) -> Any:
        """Tables are active as soon as they are created: every waiter is already done."""
        return type("Waiter", (), {"wait": lambda self, **kwargs: None})()

    def put_item(self, TableName: str, Item: dict, ConditionExpression: str | None = None,
                 ExpressionAttributeNames: dict | None = None, ExpressionAttributeValues: dict | None = None,
                 ReturnValuesOnConditionCheckFailure: str = "NONE") -> dict:
        self.calls.append("PutItem")
        table = self.table(TableName, "PutItem")
        key_name = self.keys[TableName]
        _validate(Item, key_name, "PutItem")
        with self._lock:
            stored = table.get(Item[key_name]["S"])
            if ConditionExpression is not None:
                assert ConditionExpression in (VERSION_CONDITION, PROBE_CONDITION), ConditionExpression
                version = stored.get("version", {}).get("N") if stored is not None else None
                if ConditionExpression == PROBE_CONDITION:
                    holds = version == ExpressionAttributeValues[":never"]["N"]
                else:
                    holds = stored is None or version == ExpressionAttributeValues[":expected"]["N"]
                if not holds:
                    extra = {"Item": copy.deepcopy(stored)} if ReturnValuesOnConditionCheckFailure == "ALL_OLD" else {}
                    raise client_error("ConditionalCheckFailedException", "PutItem",
                                       "The conditional request failed", **extra)
            table[Item[key_name]["S"]] = copy.deepcopy(Item)
        return {}

    def get_item(self, TableName: str, Key: dict, ConsistentRead: bool = False) -> dict:
        self.calls.append("GetItem")
        stored = self._get(TableName, Key, "GetItem")
        return {"Item": stored} if stored is not None else {}

    def batch_get_item(self, RequestItems: dict) -> dict:
        self.calls.append("BatchGetItem")
        responses: dict[str, list] = {}
        for name, request in RequestItems.items():
            assert len(request["Keys"]) <= 100
            found = (self._get(name, key, "BatchGetItem") for key in request["Keys"])
            responses[name] = [item for item in found if item is not None]
        return {"Responses": responses, "UnprocessedKeys": {}}

    def batch_write_item(self, RequestItems: dict) -> dict:
        self.calls.append("BatchWriteItem")
        for name, requests in RequestItems.items():
            assert len(requests) <= 25
            table, key_name = self.table(name, "BatchWriteItem"), self.keys[name]
            items = [request["PutRequest"]["Item"] for request in requests]
            if len({item[key_name]["S"] for item in items}) != len(items):
                raise client_error("ValidationException", "BatchWriteItem",
                                   "Provided list of item keys contains duplicates")
            for item in items:
                _validate(item, key_name, "BatchWriteItem")
            with self._lock:
                for item in items:
                    table[item[key_name]["S"]] = copy.deepcopy(item)
        return {"UnprocessedItems": {}}

    def scan(self, TableName: str, ConsistentRead: bool = False) -> dict:
        self.calls.append("Scan")
        items = list(self.items(TableName).values())
        return {"Items": items, "Count": len(items), "ScannedCount": len(items)}

    def get_paginator(self, operation: str) -> Any:
        """The scan paginator: one page holds every item."""
        assert operation == "scan", operation
        return type("Paginator", (), {"paginate": lambda paginator, **kwargs: iter([self.scan(**kwargs)])})()

    def _get(self, table: str, key: dict, operation: str) -> dict | None:
        (value,) = key.values()
        stored_items = self.table(table, operation)
        with self._lock:
            stored = stored_items.get(value["S"])
            return copy.deepcopy(stored) if stored is not None else None

    def items(self, table: str) -> dict[str, dict]:
        with self._lock:
            return copy.deepcopy(self.table(table, "Scan"))


class Crash(Exception):
    """The process died here: raised by a fault wrapper; nothing in the processor catches it."""


class Faults:
    """Wraps a client: `before(operation, kwargs)` may raise a fault before the call goes through."""

    def __init__(self, client: Any, before: Callable[[str, dict], None]):
        self._client = client
        self._before = before

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self._before(name, kwargs)
            return method(*args, **kwargs)

        return call


def crash_after(calls: int, operation: str, armed: Callable[[], bool] = lambda: True) -> Callable[[str, dict], None]:
    """A `Faults` hook: the process dies at the call of `operation` that follows the first `calls`
    made while `armed()` (the writers are threads: some calls got through, the rest never will)."""
    made: Iterator[int] = itertools.count()

    def before(name: str, kwargs: dict) -> None:
        if name == operation and armed() and next(made) >= calls:
            raise Crash(f"died at {operation} number {calls + 1}")

    return before


class DyingDeadLetters:
    """A dead-letter destination (`processor.deadletters.DeadLetters`) whose `flush` dies while
    `armed()`: the crash after the DynamoDB writes, before the rest of the flush."""

    def __init__(self, letters: Any, armed: Callable[[], bool] = lambda: True):
        self._letters = letters
        self._armed = armed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._letters, name)

    def flush(self) -> None:
        if self._armed():
            raise Crash("died before the dead letters were flushed")
        self._letters.flush()


class CrashingStore(ShardStore):
    """A shard's RocksDB whose `commit` writes, then dies while `armed()`: the crash between the
    local commit and the KCL checkpoint."""

    def __init__(self, path: str, armed: Callable[[], bool] = lambda: True, **options: Any):
        super().__init__(path, **options)
        self._armed = armed

    def commit(self, *args: Any, **kwargs: Any) -> None:
        super().commit(*args, **kwargs)
        if self._armed():
            raise Crash("died after the local commit")


def _validate(item: dict, key_name: str, operation: str) -> None:
    """Refuse what DynamoDB refuses, with its error shape."""
    if len(item[key_name]["S"].encode("utf-8")) > 2048:
        raise client_error("ValidationException", operation, "Size of hashkey has exceeded the maximum size limit")
    if item_size(item) > 400 * 1024:
        raise client_error("ValidationException", operation, "Item size has exceeded the maximum allowed size")
    for value in item.values():
        _validate_value(value, 1, operation)


def _validate_value(attribute: dict, depth: int, operation: str) -> None:
    (kind, value), = attribute.items()
    if kind == "N":
        number = abs(Decimal(value))
        if number >= Decimal("1E+126"):
            raise client_error("ValidationException", operation, "Number overflow")
        if number and number < Decimal("1E-130"):
            raise client_error("ValidationException", operation, "Number underflow")
        if len(number.normalize().as_tuple().digits) > 38:
            raise client_error("ValidationException", operation, "Attempting to store more than 38 significant digits")
    elif kind in ("M", "L"):
        if depth > 32:
            raise client_error("ValidationException", operation, "Nesting Levels have exceeded supported limits")
        for inner in (value.values() if kind == "M" else value):
            _validate_value(inner, depth + 1, operation)
