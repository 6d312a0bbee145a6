"""What DynamoDB would bill: requests, write units and conditional failures per table, seen by the
emulator itself, so every system a benchmark compares is measured the same way, whatever client
(boto3, Powertools, the KCL children) made the calls.

Write units follow DynamoDB's rule: one per started KB of the item, the larger of its size before
and after the request (a failed condition still costs the units of the item it read), two per KB
inside a transaction. The meter also keeps, per table, the items of successful PutItems (alone or
in a transaction) in the order they were applied: the write history a benchmark needs to find
stale overwrites and writes no new event caused; and the hottest key: the most writes one
partition key received in one second (a partition takes 1,000 write units a second at most).
"""
from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from typing import Any, Callable, Iterable

READS = {"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"}
WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}

#: (table, key attributes in wire form) → the stored item's size in bytes, or 0 if absent
StoredSize = Callable[[str, dict[str, Any]], int]


def write_units(size_bytes: int) -> int:
    return max(1, math.ceil(size_bytes / 1024))


class Meter:
    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = defaultdict(
            lambda: {"reads": 0, "writes": 0, "write_units": 0, "conditional_failures": 0})
        self.puts: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self._key_second: dict[tuple[str, str], tuple[int, int]] = {}  # (table, key) -> (second, writes)
        self.hottest: dict[str, tuple[int, str]] = {}  # table -> (writes in one second, key)

    def before(self, action: str, request: dict[str, Any],
               stored_size: StoredSize) -> list[tuple[str, dict[str, Any], int]]:
        """The items a write request touches, with their sizes before it runs."""
        if action not in WRITES:
            return []
        return [(table, key, stored_size(table, key)) for table, key in _touched_keys(action, request)]

    def after(self, action: str, request: dict[str, Any], touched: list[tuple[str, dict[str, Any], int]],
              status: int, response: bytes, stored_size: StoredSize,
              hash_key: Callable[[str], str | None] = lambda table: None) -> None:
        """`hash_key`: the table's partition key attribute (to count writes per key)."""
        if action in READS:
            for table in _tables(request):
                self.counts[table]["reads"] += 1
            return
        if action not in WRITES:
            return
        for table in {table for table, _, _ in touched} or _tables(request):
            self.counts[table]["writes"] += 1
        per_kb = 2 if action == "TransactWriteItems" else 1
        for table, key, size_before in touched:
            self.counts[table]["write_units"] += per_kb * write_units(max(size_before, stored_size(table, key)))
            self._count_key(table, key.get(hash_key(table) or "", key))
        if status >= 400 and b"ConditionalCheckFailed" in response:
            for table in {table for table, _, _ in touched}:
                self.counts[table]["conditional_failures"] += 1
        if action == "PutItem" and status == 200:
            self.puts[request["TableName"]].append(request["Item"])
        if action == "TransactWriteItems" and status == 200:
            for entry in request["TransactItems"]:
                if "Put" in entry:
                    self.puts[entry["Put"]["TableName"]].append(entry["Put"]["Item"])

    def _count_key(self, table: str, key: Any) -> None:
        """Writes per partition key per second, keeping each table's peak."""
        name = next(iter(key.values())) if isinstance(key, dict) and len(key) == 1 else json.dumps(key, sort_keys=True)
        second = int(time.monotonic())
        seen, writes = self._key_second.get((table, name), (second, 0))
        writes = writes + 1 if seen == second else 1
        self._key_second[(table, name)] = (second, writes)
        if writes > self.hottest.get(table, (0, ""))[0]:
            self.hottest[table] = (writes, name)

    def report(self, table: str) -> dict[str, Any]:
        writes, key = self.hottest.get(table, (0, ""))
        return {"counts": dict(self.counts.get(table, {})), "puts": self.puts.get(table, []),
                "hottest_key": {"writes_per_second": writes, "key": key}}

    def report_json(self, query: str) -> bytes:
        tables = [part.partition("=")[2] for part in query.split("&") if part.startswith("table=")]
        return json.dumps({table: self.report(table) for table in tables}).encode()


def _tables(request: dict[str, Any]) -> Iterable[str]:
    if "RequestItems" in request:
        return list(request["RequestItems"])
    if "TransactItems" in request:
        return [next(iter(entry.values()))["TableName"] for entry in request["TransactItems"]]
    return [request["TableName"]] if "TableName" in request else []


def _touched_keys(action: str, request: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if action == "PutItem":
        return [(request["TableName"], request["Item"])]
    if action in ("UpdateItem", "DeleteItem"):
        return [(request["TableName"], request["Key"])]
    if action == "BatchWriteItem":
        return [(table, entry.get("PutRequest", {}).get("Item") or entry["DeleteRequest"]["Key"])
                for table, entries in request["RequestItems"].items() for entry in entries]
    if action == "TransactWriteItems":
        touched = []
        for entry in request["TransactItems"]:
            operation = next(iter(entry.values()))
            touched.append((operation["TableName"], operation.get("Item") or operation["Key"]))
        return touched
    return []
