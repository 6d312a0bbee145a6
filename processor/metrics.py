"""Metrics as CloudWatch Embedded Metric Format (EMF): JSON lines on stderr, one per shard a minute.

CloudWatch Logs turns each line into metrics in the `ConversationStateProcessor` namespace,
dimensioned by shard (and by nothing, for fleet totals). Counts are deltas since the shard's
previous line, so sums over time are totals; a line is written at most every `interval_seconds`
(and when the shard stops), which keeps log volume at ~1 line a minute per shard. The KCL child
writes them to stderr (stdout is the KCL protocol channel); the MultiLangDaemon echoes each child
stderr line raw onto its own stderr (besides logging it wrapped in a message), so on ECS each EMF
line reaches CloudWatch Logs as one JSON log event, which is what EMF extraction needs.

| metric             | unit         | meaning                                                          |
|--------------------|--------------|------------------------------------------------------------------|
| Events             | Count        | records taken in                                                 |
| ExactRepeats       | Count        | events already applied (redeliveries, re-emits)                  |
| NoopsCollapsed     | Count        | events that changed nothing (attribute re-fires)                 |
| Writes             | Count        | DynamoDB conditional writes issued                               |
| Throttles          | Count        | retried DynamoDB throttles, 5xx and connection errors            |
| DeadLetters        | Count        | records dead-lettered with a reason                              |
| RefusedFields      | Count        | values DynamoDB cannot store, left out and dead-lettered (I15)   |
| HeldWrites         | Count        | writes made only to persist stamps that existed locally (I14)    |
| Held               | Count        | conversations holding the checkpoint back, at the line's time    |
| FlushLatency       | Milliseconds | each flush (writes, dead letters, RocksDB commit), up to 100     |
| MillisBehindLatest | Milliseconds | how far the shard's reader is behind the stream tip              |
| ShardSeconds       | Seconds      | seconds this shard was processed: Sum/60 a minute = shards active |
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any, Callable

import orjson

NAMESPACE = "ConversationStateProcessor"
UNITS = {"Events": "Count", "ExactRepeats": "Count", "NoopsCollapsed": "Count", "Writes": "Count",
         "Throttles": "Count", "DeadLetters": "Count", "RefusedFields": "Count", "HeldWrites": "Count",
         "Held": "Count", "FlushLatency": "Milliseconds",
         "MillisBehindLatest": "Milliseconds", "ShardSeconds": "Seconds"}
EMF_VALUES_LIMIT = 100


@dataclass
class FlushMetrics:
    """Accumulates a shard's flushes and writes them as an EMF line every `interval_seconds`."""

    shard_id: str
    interval_seconds: float = 60.0
    out: IO[str] = field(default_factory=lambda: sys.stderr)
    clock: Callable[[], float] = time.monotonic
    _previous: dict[str, int] = field(default_factory=dict)
    _latencies: list[float] = field(default_factory=list)
    _since: float | None = None

    def record(self, totals: dict[str, int], flush_latency_ms: float, millis_behind_latest: int | None,
               final: bool = False, gauges: dict[str, int] | None = None) -> dict[str, Any] | None:
        """Note one flush (running `totals` and current `gauges`, names as in UNITS); write a line
        when one is due."""
        now = self.clock()
        if self._since is None:
            self._since = now
        if len(self._latencies) < EMF_VALUES_LIMIT:
            self._latencies.append(round(flush_latency_ms, 1))
        if not final and now - self._since < self.interval_seconds:
            return None
        values: dict[str, Any] = {name: totals[name] - self._previous.get(name, 0) for name in totals}
        values["FlushLatency"] = self._latencies
        values["ShardSeconds"] = round(now - self._since, 3)
        if millis_behind_latest is not None:
            values["MillisBehindLatest"] = millis_behind_latest
        values.update(gauges or {})
        self._previous, self._latencies, self._since = dict(totals), [], now
        line = {"_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [{
            "Namespace": NAMESPACE, "Dimensions": [["ShardId"], []],
            "Metrics": [{"Name": name, "Unit": UNITS[name]} for name in values]}]},
            "ShardId": self.shard_id, **values}
        self.out.write(orjson.dumps(line).decode() + "\n")
        self.out.flush()
        return line
