"""In-memory twins of the parts the unit tier may not start: a DynamoDB client with DynamoDB's
semantics for the calls the processor makes, and fault injection around it.

`MemoryDynamoDB` answers `put_item` (the processor's version condition, `ALL_OLD` on failure),
`get_item`, `batch_get_item`, `batch_write_item` and `scan`, with the low-level item shapes and the
`ClientError` shapes botocore raises, and it refuses what real DynamoDB refuses (item over 400 KB,
numbers out of range, nesting over 32 levels, a key over 2,048 bytes) — stricter than moto, which
accepts deep nesting. So `DynamoSink` runs unchanged against it.
"""
from __future__ import annotations

import copy
import threading
from decimal import Decimal
from typing import Any, Callable

from botocore.exceptions import ClientError

from processor.dynamodb.item import item_size

#: the conditions the processor writes with: its version check, and a probe that never holds
VERSION_CONDITION = "attribute_not_exists(#id) OR #v = :expected"
PROBE_CONDITION = "#v = :never"


def client_error(code: str, operation: str, message: str = "", **extra: Any) -> ClientError:
    status = 400 if code not in ("InternalServerError", "ServiceUnavailable") else 500
    response = {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}, **extra}
    return ClientError(response, operation)


class MemoryDynamoDB:
    """Tables of items keyed by their string partition key; one lock, like one partition."""

    def __init__(self, keys: dict[str, str] | None = None):
        self.keys = dict(keys or {})  # table -> key attribute name
        self.tables: dict[str, dict[str, dict]] = {}
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def table(self, name: str, key: str = "conversationId") -> dict[str, dict]:
        self.keys.setdefault(name, key)
        return self.tables.setdefault(name, {})

    def put_item(self, TableName: str, Item: dict, ConditionExpression: str | None = None,
                 ExpressionAttributeNames: dict | None = None, ExpressionAttributeValues: dict | None = None,
                 ReturnValuesOnConditionCheckFailure: str = "NONE") -> dict:
        self.calls.append("PutItem")
        _validate(Item, self.keys.get(TableName, "conversationId"), "PutItem")
        key = Item[self.keys.get(TableName, "conversationId")]["S"]
        with self._lock:
            table = self.table(TableName)
            stored = table.get(key)
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
            table[key] = copy.deepcopy(Item)
        return {}

    def get_item(self, TableName: str, Key: dict, ConsistentRead: bool = False) -> dict:
        self.calls.append("GetItem")
        stored = self._get(TableName, Key)
        return {"Item": stored} if stored is not None else {}

    def batch_get_item(self, RequestItems: dict) -> dict:
        self.calls.append("BatchGetItem")
        responses: dict[str, list] = {}
        for name, request in RequestItems.items():
            assert len(request["Keys"]) <= 100
            found = (self._get(name, key) for key in request["Keys"])
            responses[name] = [item for item in found if item is not None]
        return {"Responses": responses, "UnprocessedKeys": {}}

    def batch_write_item(self, RequestItems: dict) -> dict:
        self.calls.append("BatchWriteItem")
        for name, requests in RequestItems.items():
            assert len(requests) <= 25
            key_name = self.keys.setdefault(name, "id")
            items = [request["PutRequest"]["Item"] for request in requests]
            if len({item[key_name]["S"] for item in items}) != len(items):
                raise client_error("ValidationException", "BatchWriteItem",
                                   "Provided list of item keys contains duplicates")
            for item in items:
                _validate(item, key_name, "BatchWriteItem")
            with self._lock:
                table = self.table(name, key_name)
                for item in items:
                    table[item[key_name]["S"]] = copy.deepcopy(item)
        return {"UnprocessedItems": {}}

    def _get(self, table: str, key: dict) -> dict | None:
        (value,) = key.values()
        with self._lock:
            stored = self.table(table).get(value["S"])
            return copy.deepcopy(stored) if stored is not None else None

    def items(self, table: str) -> dict[str, dict]:
        with self._lock:
            return copy.deepcopy(self.tables.get(table, {}))


class Faults:
    """Wraps a client: `before(operation, kwargs)` may raise a fault before the call goes through."""

    def __init__(self, client: Any, before: Callable[[str, dict], None]):
        self._client = client
        self._before = before

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(**kwargs: Any) -> Any:
            self._before(name, kwargs)
            return method(**kwargs)

        return call


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
