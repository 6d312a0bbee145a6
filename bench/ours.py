"""This processor, three ways.

- this_live: the engine fed in event-time order, flushing whenever stream time advances by a
  second (a live shard with a 1 s checkpoint interval);
- this_catchup: `processor replay`'s path over the backlog on 4 shards with the default flush
  policy (10,000 records per shard): reprocessing after an outage;
- this_kcl: the real MultiLangDaemon on a 4-shard stream, records put first, then drained (the
  outage case again, through the JSON protocol and one child process per shard).

The in-process two also count, through `FlushLedger`, the writes each metrics table key gets within
one flush of one shard (I13 bounds it to one): the engines run in this process, so their flushes
and their client's requests can be matched up. this_kcl's children are other processes.
"""
from __future__ import annotations

import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping

from processor.config import Settings
from devstack.daemon import Daemon
from processor.deadletters import JsonlDeadLetters
from devstack.demo import Producer, Stack, batches, totals, wait_until_drained
from processor.engine import FlushPolicy, ShardEngine
from processor.model import Record
from processor.replay import read_lines, replay, route
from processor.dynamodb.client import data_plane_for, ensure_tables
from processor.store import ShardStore
from processor.analytics import layout
from processor.dynamodb.sink import Sink
from bench import metrics_table_of
from bench.cpu import TreeCpu, cpu_window

SHARDS = 4
LIVE_FLUSH_MS = 1000
_WRITE_ACTIONS = ("Put", "Update", "Delete")


class FlushLedger:
    """Writes per metrics key within each flush of each shard.

    `sink()` wraps the sink: each `write` is one flush of one shard (the engine calls it once per
    flush, and these runs call one engine at a time, so flushes never overlap); `client()` wraps the
    DynamoDB client the sink writes with, recording the partition key of every successful write to
    the metrics table (TransactWriteItems Put/Update/Delete, UpdateItem, PutItem, DeleteItem,
    BatchWriteItem) against the flush in progress. A write outside any flush counts on its own."""

    def __init__(self, table: str):
        self.table = table
        self.flushes = 0
        self._lock = threading.Lock()
        self._flush: tuple[str, int] | None = None
        self._per_flush: Counter[tuple[tuple[str, int] | None, str]] = Counter()

    def sink(self, sink: Sink) -> Sink:
        return _FlushMarkingSink(sink, self)

    def client(self, client: Any) -> Any:
        return _RecordingClient(client, self)

    def begin(self, shard_id: str) -> None:
        with self._lock:
            self.flushes += 1
            self._flush = (shard_id, self.flushes)

    def end(self) -> None:
        with self._lock:
            self._flush = None

    def wrote(self, keys: Iterable[str]) -> None:
        with self._lock:
            for key in keys:
                self._per_flush[(self._flush, key)] += 1

    def hottest(self) -> tuple[int, str]:
        """The most writes one metrics key got within one flush of one shard, and that key."""
        with self._lock:
            if not self._per_flush:
                return 0, ""
            (_, key), writes = max(self._per_flush.items(), key=lambda entry: (entry[1], entry[0][1]))
            return writes, key

    def report(self) -> dict[str, Any]:
        writes, key = self.hottest()
        return {"hottest_key_writes_per_flush": writes, "hottest_key_per_flush": key, "flushes": self.flushes}

    def keys_written(self, action: str, request: Mapping[str, Any]) -> list[str]:
        """The metrics table's partition keys a write request names."""
        def key_of(entry: Mapping[str, Any]) -> str:
            return str(next(iter(entry[layout.KEY].values())))

        if action == "transact_write_items":
            return [key_of(op.get("Key") or op["Item"]) for entry in request.get("TransactItems", [])
                    for kind, op in entry.items() if kind in _WRITE_ACTIONS and op.get("TableName") == self.table]
        if action == "batch_write_item":
            return [key_of(entry.get("PutRequest", {}).get("Item") or entry["DeleteRequest"]["Key"])
                    for entry in request.get("RequestItems", {}).get(self.table, [])]
        if request.get("TableName") != self.table:
            return []
        return [key_of(request.get("Key") or request["Item"])]


class _RecordingClient:
    _WRITES = frozenset({"transact_write_items", "update_item", "put_item", "delete_item", "batch_write_item"})

    def __init__(self, client: Any, ledger: FlushLedger):
        self._client, self._ledger = client, ledger

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name not in self._WRITES:
            return attribute

        def write(**request: Any) -> Any:
            response = attribute(**request)  # a request that raised wrote nothing
            keys = self._ledger.keys_written(name, request)
            if name == "batch_write_item":  # what DynamoDB left unprocessed was not written
                unprocessed = self._ledger.keys_written(name, {"RequestItems": response.get("UnprocessedItems", {})})
                for key in unprocessed:
                    keys.remove(key)
            self._ledger.wrote(keys)
            return response

        return write


class _FlushMarkingSink:
    def __init__(self, sink: Sink, ledger: FlushLedger):
        self._sink, self._ledger = sink, ledger

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sink, name)

    def write(self, states: Any, on_refused: Any = None, shard_id: str = "") -> Any:
        self._ledger.begin(shard_id)
        try:
            return self._sink.write(states, on_refused, shard_id)
        finally:
            self._ledger.end()


def run_live(sorted_events: str, client: Any, table: str, settings: Settings, workdir: Path) -> dict[str, Any]:
    """`sorted_events`: the storm in event-time order."""
    adapter = settings.build_adapter()
    ensure_tables(client, table, metrics_table=metrics_table_of(table))
    ledger = FlushLedger(metrics_table_of(table))
    sink = settings.build_sink(ledger.client(data_plane_for(client)), adapter, table, metrics_table_of(table))
    engine = ShardEngine("shardId-000000000000", adapter, ShardStore(str(workdir / "live-state"), settings.retention_seconds),
                         ledger.sink(sink), JsonlDeadLetters(str(workdir / "live-dead-letters.jsonl")),
                         FlushPolicy(max_records=10**12, max_seconds=float("inf")))
    with cpu_window() as window:
        batch: list[Record] = []
        flushed_at: int | None = None
        for sequence, data in enumerate(read_lines(sorted_events), 1):
            key, envelope = route(adapter, data)
            time_ms = adapter.normalize(envelope).time_ms
            if flushed_at is None:
                flushed_at = time_ms
            elif time_ms - flushed_at >= LIVE_FLUSH_MS:
                engine.process(batch)
                engine.flush()
                batch, flushed_at = [], time_ms
            batch.append(Record(data, str(sequence), key, envelope))
        engine.process(batch)
        engine.flush(final=True)
    engine.close()
    sink.close()
    return {"seconds": window.seconds, "cpu_seconds": window.cpu_seconds, **ledger.report()}


def run_catchup(events: str, client: Any, table: str, settings: Settings, workdir: Path) -> dict[str, Any]:
    adapter = settings.build_adapter()
    ensure_tables(client, table, metrics_table=metrics_table_of(table))
    ledger = FlushLedger(metrics_table_of(table))
    sink = settings.build_sink(ledger.client(data_plane_for(client)), adapter, table, metrics_table_of(table))
    dead_letters = JsonlDeadLetters(str(workdir / "catchup-dead-letters.jsonl"))
    with cpu_window() as window:
        replay(read_lines(events), adapter, ledger.sink(sink), dead_letters, shards=SHARDS,
               state_root=str(workdir / "catchup-state"), retention_seconds=settings.retention_seconds)
    sink.close()
    return {"seconds": window.seconds, "cpu_seconds": window.cpu_seconds, **ledger.report()}


def run_kcl(events: str, emulator: Any, settings: Settings, workdir: Path) -> dict[str, Any]:
    """Put the backlog first, then start the daemon and time it until every record is checkpointed.
    `events`: the records the children took in, by their EMF lines (equal to `put` in a clean run).
    CPU: the daemon's and its children's whole lives (JVM start-up and the shutdown flush included;
    the producer's puts, in this process, are not), sampled by `TreeCpu`."""
    with Stack(workdir, settings, shards=SHARDS, emulator=emulator) as stack:
        producer = Producer(stack.kinesis, settings.build_adapter())
        for batch in batches(read_lines(events), 500):
            producer.send(batch)
        started = time.perf_counter()
        daemon = stack.start_daemon()
        cpu = TreeCpu(daemon.pid).start()
        peak = [0.0]

        def sample(_checkpoints: Any) -> None:
            peak[0] = max(peak[0], tree_rss_mb(daemon))

        wait_until_drained(stack, producer, timeout=3600, on_tick=sample)
        seconds = time.perf_counter() - started
        stack.stop_daemons()  # the children's last EMF lines: the sums are totals now
        cpu.stop()
        counts = totals(stack.shard_metrics())
    return {"seconds": seconds, "tree_peak_rss_mb": round(peak[0], 1), "put": producer.put,
            "events": counts["Events"], "cpu_seconds": cpu.root_seconds + cpu.descendants_seconds,
            "daemon_cpu_seconds": cpu.root_seconds, "children_cpu_seconds": cpu.descendants_seconds}


def tree_rss_mb(daemon: Daemon) -> float:
    """Resident memory of the daemon and its record-processor children, MiB."""
    return sum(_rss_bytes(pid) for pid in [daemon.pid, *daemon.children()] if pid is not None) / 2**20


def _rss_bytes(pid: int) -> int:
    try:
        resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0  # the process ended between listing and reading
    return resident_pages * os.sysconf("SC_PAGE_SIZE")
