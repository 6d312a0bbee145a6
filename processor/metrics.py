"""Per-flush metrics as CloudWatch Embedded Metric Format (EMF): one JSON line on stderr per flush.

CloudWatch Logs turns each line into metrics in the `ConversationStateProcessor` namespace,
dimensioned by shard (and by nothing, for fleet totals). Values are deltas since the previous flush
of the same shard, so summing over time gives totals. The KCL child writes them to stderr (stdout
is the KCL protocol channel); the MultiLangDaemon echoes each child stderr line raw onto its own
stderr (besides logging it wrapped in a message), so on ECS each EMF line reaches CloudWatch Logs as
one JSON log event, which is what EMF extraction needs.

| metric             | unit         | meaning                                                     |
|--------------------|--------------|-------------------------------------------------------------|
| Events             | Count        | records taken in                                            |
| ExactRepeats       | Count        | events already applied (redeliveries, re-emits)             |
| NoopsCollapsed     | Count        | events that changed nothing (attribute re-fires)            |
| Writes             | Count        | DynamoDB conditional writes issued                          |
| Throttles          | Count        | retried DynamoDB throttles, 5xx and connection errors       |
| DeadLetters        | Count        | records dead-lettered with a reason                          |
| FlushLatency       | Milliseconds | the flush: writes, dead letters, RocksDB commit             |
| MillisBehindLatest | Milliseconds | how far the shard's reader is behind the stream tip         |
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

NAMESPACE = "ConversationStateProcessor"
UNITS = {"Events": "Count", "ExactRepeats": "Count", "NoopsCollapsed": "Count", "Writes": "Count",
         "Throttles": "Count", "DeadLetters": "Count", "FlushLatency": "Milliseconds",
         "MillisBehindLatest": "Milliseconds"}


@dataclass
class FlushMetrics:
    """Turns a shard's running totals into per-flush EMF lines."""

    shard_id: str
    out: IO[str] = field(default_factory=lambda: sys.stderr)
    _previous: dict[str, int] = field(default_factory=dict)

    def emit(self, totals: dict[str, int], flush_latency_ms: float, millis_behind_latest: int | None) -> dict[str, Any]:
        """Write one EMF line with the deltas of `totals` (names as in UNITS) since the last call."""
        values: dict[str, Any] = {name: totals[name] - self._previous.get(name, 0) for name in totals}
        self._previous = dict(totals)
        values["FlushLatency"] = round(flush_latency_ms, 1)
        if millis_behind_latest is not None:
            values["MillisBehindLatest"] = millis_behind_latest
        line = {"_aws": {"Timestamp": int(time.time() * 1000), "CloudWatchMetrics": [{
            "Namespace": NAMESPACE, "Dimensions": [["ShardId"], []],
            "Metrics": [{"Name": name, "Unit": UNITS[name]} for name in values]}]},
            "ShardId": self.shard_id, **values}
        self.out.write(orjson.dumps(line).decode() + "\n")
        self.out.flush()
        return line
