"""Metrics as CloudWatch Embedded Metric Format (EMF): JSON lines on stderr, one per shard a minute.

CloudWatch Logs turns each line into metrics in the `ConversationStateProcessor` namespace,
dimensioned by shard (and by nothing, for fleet totals). Counts are deltas since the shard's
previous line, so sums over time are totals; a line is written once every `interval_seconds`
(settings `metrics_seconds`), at the first flush or poll after it, quiet shards too, and when the
shard stops (shutdown, shard end, lease lost): ~1 line a minute per shard. The KCL child
writes them to stderr (stdout is the KCL protocol channel); the MultiLangDaemon echoes each child
stderr line raw onto its own stderr (besides logging it wrapped in a message), so on ECS each EMF
line reaches CloudWatch Logs as one JSON log event, which is what EMF extraction needs.

| metric             | unit         | meaning                                                          |
|--------------------|--------------|------------------------------------------------------------------|
| Events             | Count        | records taken in                                                 |
| ExactRepeats       | Count        | events already applied (redeliveries, re-emits)                  |
| NoopsCollapsed     | Count        | events that changed nothing (attribute re-fires)                 |
| Stale              | Count        | events that changed nothing, a newer one already applied (late)  |
| DeadLetters        | Count        | records dead-lettered with a reason                              |
| Changes            | Count        | events that changed their conversation's projection              |
| Conversations      | Count        | conversations the shard had no local state for (looked up)       |
| Rehydrated         | Count        | of those, found in DynamoDB (a lease or a reshard moved them)    |
| Writes             | Count        | DynamoDB write requests issued (puts, transactions, directory)   |
| Transactions       | Count        | of those, transactions: conversations with their metric deltas   |
| Reads              | Count        | DynamoDB BatchGetItem requests issued                            |
| Conflicts          | Count        | failed write conditions, merged (a racing parent or a zombie)    |
| Throttles          | Count        | retried DynamoDB throttles, 5xx and connection errors            |
| RefusedFields      | Count        | values DynamoDB cannot store, left out and dead-lettered (I15)   |
| HeldWrites         | Count        | writes made only to persist stamps that existed locally (I14)    |
| Flushes            | Count        | flushes (FlushLatency keeps at most 100 of them a line)          |
| Held               | Count        | conversations holding the checkpoint back, at the line's time    |
| FlushLatency       | Milliseconds | each flush (writes, dead letters, RocksDB commit), up to 100;    |
|                    |              | absent from a line with no flush (a quiet shard's)               |
| MillisBehindLatest | Milliseconds | how far the shard's reader is behind the stream tip              |
| ShardSeconds       | Seconds      | seconds this shard was processed: Sum/60 a minute = shards active |

Every Count but Held is a delta, so the sum of a shard's lines is what its processes did: the
local stack (`processor demo`, the benchmark) reads its progress and totals from these lines too.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any, Callable

import orjson

NAMESPACE = "ConversationStateProcessor"
#: engine counter (processor.engine.Counters) -> the delta metric that reports it
COUNTER_METRICS = {"events": "Events", "exact_repeats": "ExactRepeats", "noop_collapsed": "NoopsCollapsed",
                   "stale": "Stale", "rejected": "DeadLetters", "changes": "Changes",
                   "conversations": "Conversations", "rehydrated": "Rehydrated", "flushes": "Flushes",
                   "refused_fields": "RefusedFields", "held_writes": "HeldWrites"}
#: sink counter (processor.dynamodb.sink.SinkCounters) -> the delta metric that reports it
SINK_METRICS = {"writes": "Writes", "transactions": "Transactions", "reads": "Reads", "conflicts": "Conflicts",
                "throttles": "Throttles"}
#: the metrics whose values are deltas since the shard's previous line (summable into totals)
DELTAS = (*COUNTER_METRICS.values(), *SINK_METRICS.values())
UNITS = {**{name: "Count" for name in DELTAS}, "Held": "Count", "FlushLatency": "Milliseconds",
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
    _since: float = field(init=False)

    def __post_init__(self) -> None:
        self._since = self.clock()

    def due(self) -> bool:
        """A line is due: a quiet shard writes one too, so its last flush's counts are not held back
        until it flushes again (KCL calls on empty polls)."""
        return self.clock() - self._since >= self.interval_seconds

    def record(self, totals: dict[str, int], flush_latency_ms: float | None, millis_behind_latest: int | None,
               final: bool = False, gauges: dict[str, int] | None = None) -> dict[str, Any] | None:
        """Note one flush (running `totals` and current `gauges`, names as in UNITS); write a line
        when one is due. `flush_latency_ms` None: no flush (a quiet shard's line, or its last on lease loss)."""
        now = self.clock()
        if flush_latency_ms is not None and len(self._latencies) < EMF_VALUES_LIMIT:
            self._latencies.append(round(flush_latency_ms, 1))
        if not final and now - self._since < self.interval_seconds:
            return None
        values: dict[str, Any] = {name: totals[name] - self._previous.get(name, 0) for name in totals}
        if self._latencies:  # EMF takes no empty value list
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
