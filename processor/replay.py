"""`processor replay`: the production engine and sink over a file of EventBridge events.

Each line is routed to one of N simulated shards by the MD5 of its partition key, exactly as
Kinesis routes a put, and each shard gets its own engine and RocksDB. Records reach an engine in
batches, as GetRecords hands them out, and it flushes every `flush_records` records: a backlog
being caught up after an outage. There is no time-based flush here, so a replay is deterministic.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import time
from functools import lru_cache
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import orjson

from processor import codec
from processor.analytics.reader import MetricsReader
from processor.adapters import Adapter
from processor.deadletters import DeadLetters
from processor.engine import CHUNK_RECORDS, Counters, FlushPolicy, ShardEngine
from processor.dynamodb.item import KEY, exportable
from processor.decode import decode
from processor.model import Record, Rejected
from processor.dynamodb.sink import Sink, SinkCounters
from processor.store import ShardStore, shard_directory

HASH_SPACE = 2 ** 128
MANIFEST = "replay-manifest.json"
REPORT_KEYS = ("events", "exact_repeats", "noop_collapsed", "stale", "rejected", "changes", "writes",
               "conversations")


#: records handed to a shard's engine at a time, as KCL hands a batch: the engine reads the batch's
#: conversations new to the shard together (100 to a BatchGetItem), then applies it in chunks. A dry
#: run has nothing to read; it feeds a chunk at a time, so a line's decode (done here, to route it)
#: stays next to its apply while the envelope is still in the CPU's caches.
FEED_RECORDS = 500


@lru_cache(maxsize=65_536)  # a conversation's events share a key: most look-ups repeat
def shard_index(partition_key: str, shards: int) -> int:
    """The shard a partition key lands on when N shards split the MD5 hash range evenly."""
    if shards == 1:
        return 0
    hash_key = int.from_bytes(hashlib.md5(partition_key.encode("utf-8")).digest(), "big")
    return min(hash_key // (HASH_SPACE // shards), shards - 1)


def shard_name(index: int) -> str:
    return f"shardId-{index:012d}"


@dataclass
class ReplayResult:
    counters: Counters
    sink: SinkCounters
    seconds: float
    per_shard: dict[str, Counters] = field(default_factory=dict)

    def report(self) -> dict[str, int]:
        """The report of the `processor replay` contract (integers only)."""
        values = {name: getattr(self.counters, name) for name in REPORT_KEYS if name != "writes"}
        values["writes"] = self.sink.writes
        return {name: int(values[name]) for name in REPORT_KEYS}

    @property
    def events_per_second(self) -> float:
        return self.counters.events / self.seconds if self.seconds else 0.0


def read_lines(path: str) -> Iterator[bytes]:
    """The non-blank lines of an events file, as the bytes Kinesis would carry."""
    with open(path, "rb") as source:
        for line in source:
            line = line.strip()
            if line:
                yield line


def file_digest(path: str, chunk_bytes: int = 1 << 20) -> str:
    """blake2b over the file's bytes, streamed: an events file may not fit in memory."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as source:
        while chunk := source.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def adapter_digest(adapter_settings: Mapping[str, Any]) -> str:
    """A hash of the `[adapter]` table, key order aside; no table means the Genesys adapter."""
    canonical = orjson.dumps({"kind": "genesys", **adapter_settings}, option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(canonical, digest_size=16).hexdigest()


#: the target of a replay whose table lives only as long as the run (the local emulator)
EPHEMERAL = "a local emulator started for the run"


def bind_state_dir(state_dir: str, events_path: str, shards: int, adapter_settings: Mapping[str, Any],
                   target: str) -> None:
    """Tie a `--state-dir` to the input and table it holds state for, or refuse a different one.

    A shard's store skips records at or below its committed sequence, and replay numbers records
    1..N per simulated shard: state from another file, shard count or adapter, or kept for another
    table (a dry run's, an emulator's that is gone) would silently skip most of this run's records.
    First use writes the manifest; reuse must match it. `target`: "endpoint table", "dry run" or
    `EPHEMERAL`."""
    if shards < 1:
        raise ValueError("--shards must be at least 1")
    wanted = {"events_blake2b": file_digest(events_path), "shards": shards,
              "adapter_blake2b": adapter_digest(adapter_settings), "target": target}
    manifest = Path(state_dir) / MANIFEST
    if manifest.exists():
        _refuse_if_different(state_dir, _read_manifest(manifest), wanted)
        return
    if any(Path(state_dir).glob("shardId-*")):
        raise ValueError(f"--state-dir {state_dir} holds shard state but no {MANIFEST}, so which input it "
                         "belongs to is unknown; use a fresh --state-dir")
    manifest.parent.mkdir(parents=True, exist_ok=True)
    partial = manifest.with_suffix(".tmp")
    partial.write_bytes(orjson.dumps(wanted, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    os.replace(partial, manifest)


def _read_manifest(manifest: Path) -> dict[str, Any]:
    try:
        recorded = orjson.loads(manifest.read_bytes())
    except orjson.JSONDecodeError:
        recorded = None
    if not isinstance(recorded, dict):
        raise ValueError(f"{manifest} is not a replay manifest; use a fresh --state-dir")
    return recorded


def _refuse_if_different(state_dir: str, recorded: Mapping[str, Any], wanted: Mapping[str, Any]) -> None:
    differences = []
    if recorded.get("events_blake2b") != wanted["events_blake2b"]:
        differences.append("another events file (its content differs)")
    if recorded.get("shards") != wanted["shards"]:
        differences.append(f"--shards {recorded.get('shards')} (now {wanted['shards']})")
    if recorded.get("adapter_blake2b") != wanted["adapter_blake2b"]:
        differences.append("other [adapter] settings")
    if recorded.get("target") == EPHEMERAL:
        differences.append(f"{EPHEMERAL}, whose table is gone")
    elif recorded.get("target") != wanted["target"]:
        differences.append(f"another table ({recorded.get('target')}, now {wanted['target']})")
    if differences:
        raise ValueError(f"--state-dir {state_dir} holds the state of a replay with {' and '.join(differences)}: "
                         "reusing it would skip records as already applied; use a fresh --state-dir "
                         "(same file, --shards and adapter resume)")


def route(adapter: Adapter, data: bytes) -> tuple[str, dict[str, Any] | None]:
    """The partition key an EventBridge rule would give this event ("" when it has none), and the
    decoded envelope, handed on so the engine does not decode it twice."""
    try:
        envelope = decode(data)
    except Rejected:
        return "", None
    return adapter.partition_key(envelope), envelope


def replay(lines: Iterable[bytes], adapter: Adapter, sink: Sink, dead_letters: DeadLetters, *,
           shards: int = 1, state_root: str | None = None, flush_records: int = 10_000,
           retention_seconds: int | None = None,
           on_progress: Callable[[int], None] | None = None) -> ReplayResult:
    """Run every line through its shard's engine; flush everything at the end."""
    if shards < 1:
        raise ValueError("--shards must be at least 1")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="replay-state-") as scratch:
        root = state_root or scratch
        # No time-based flush and no hold expiry: a replay is deterministic, and its final flush
        # writes every held stamp.
        policy = FlushPolicy(max_records=flush_records, max_seconds=float("inf"), max_hold_seconds=float("inf"))
        engines = [ShardEngine(shard_name(i), adapter,
                               ShardStore(shard_directory(root, shard_name(i)), retention_seconds),
                               sink, dead_letters, policy) for i in range(shards)]
        feed = FEED_RECORDS if sink.keeps_states else CHUNK_RECORDS
        batches: list[list[Record]] = [[] for _ in range(shards)]
        sequence = [0] * shards
        try:
            for count, data in enumerate(lines, 1):
                key, envelope = route(adapter, data)
                index = shard_index(key, shards)
                sequence[index] += 1
                batches[index].append(Record(data, str(sequence[index]), key, envelope))
                if len(batches[index]) >= feed:
                    _feed(engines[index], batches[index])
                if on_progress is not None and count % 1000 == 0:
                    on_progress(1000)
            for engine, batch in zip(engines, batches):
                _feed(engine, batch)
                engine.flush(final=True)  # the run ends here: nothing may stay only local (I14)
        finally:
            for engine in engines:
                engine.close()
    per_shard = {engine.shard_id: engine.counters for engine in engines}
    total = sum(per_shard.values(), Counters())
    return ReplayResult(total, sink.counters, time.perf_counter() - started, per_shard)


def _feed(engine: ShardEngine, batch: list[Record]) -> None:
    if batch:
        engine.process(batch)
        batch.clear()
    if engine.flush_due():
        engine.flush()


def scan_items(client: Any, table: str) -> list[dict[str, Any]]:
    """Every item of `table` in plain JSON values, sorted by conversation id (strongly consistent)."""
    items: list[dict[str, Any]] = []
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        items.extend(exportable(item) for item in page.get("Items", []))
    return sorted(items, key=lambda item: str(item.get(KEY, "")))


def export_table(client: Any, table: str, path: str) -> int:
    """Write every item of `table` as a JSON line (plain values), sorted by conversation id."""
    return write_jsonl(path, scan_items(client, table))


def export_metrics(client: Any, table: str, path: str, interval_minutes: int) -> int:
    """Write the stored metrics, summed over partials, one JSON line per cell (`--export-metrics`)."""
    return write_jsonl(path, MetricsReader(client, table, interval_minutes).rows())


def write_jsonl(path: str, rows: list[dict[str, Any]]) -> int:
    """Rows as JSON lines in a file only its owner reads (projection values can carry PII)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with open(descriptor, "wb") as out:
        for row in rows:
            out.write(codec.dumps(row, sort_keys=True) + b"\n")
    return len(rows)
