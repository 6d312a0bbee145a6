"""A faster rollback for moto's TransactWriteItems (a local-stack fidelity patch, like kinesis_patch).

moto 5.2.5 deep-copies every table a transaction touches before running it, to roll back on a
cancellation: O(table) per transaction, seconds per call once the conversation table holds
thousands of items. The patch keeps moto's own transaction code and semantics, and hands it a
snapshot that copies only the items the transaction names (the rest of the table is shared, and
left untouched by a cancelled transaction anyway). moto asks for the snapshot once per action, so
a 100-action transaction would copy its items 100 times each; one snapshot per table and call is
handed out instead (moto only reads it back on a cancellation). The snapshot is put in place by
swapping the `copy` module moto's models use, for the length of the call: safe because the emulator
serves one request at a time (its request lock), not for concurrent callers in one process.
"""
from __future__ import annotations

import copy
import types
from collections import defaultdict
from typing import Any

import moto.dynamodb.models as dynamodb_models
from moto.dynamodb.models.dynamo_type import DynamoType
from moto.dynamodb.models.table import Table

_original = dynamodb_models.DynamoDBBackend.transact_write_items


def _touched_keys(backend: Any, transact_items: list[dict[str, Any]]) -> dict[str, set]:
    touched: dict[str, set] = defaultdict(set)
    for action in transact_items:
        for operation in action.values():
            table = backend.tables.get(operation.get("TableName"))
            key = operation.get("Item") or operation.get("Key") or {}
            if table is not None and table.hash_key_attr in key:
                touched[table.name].add(DynamoType(key[table.hash_key_attr]))
    return touched


def _transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
    touched = _touched_keys(self, transact_items)
    snapshots: dict[str, Table] = {}

    def snapshot(value: Any, memo: Any = None) -> Any:
        if not isinstance(value, Table):
            return copy.deepcopy(value, memo)
        if value.name not in snapshots:  # moto asks once per action: a table is copied once per call
            clone = copy.copy(value)
            clone.items = defaultdict(dict, value.items)
            for hash_key in touched.get(value.name, ()):
                if hash_key in value.items:
                    clone.items[hash_key] = copy.deepcopy(value.items[hash_key])
            snapshots[value.name] = clone
        return snapshots[value.name]

    dynamodb_models.copy = types.SimpleNamespace(deepcopy=snapshot, copy=copy.copy)
    try:
        return _original(self, transact_items)
    finally:
        dynamodb_models.copy = copy


def apply() -> None:
    dynamodb_models.DynamoDBBackend.transact_write_items = _transact_write_items
