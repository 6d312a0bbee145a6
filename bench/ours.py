"""This processor, three ways.

- this_live: the engine fed in event-time order, flushing whenever stream time advances by a
  second (a live shard with a 1 s checkpoint interval);
- this_catchup: `processor replay`'s path over the backlog on 4 shards with the default flush
  policy (10,000 records per shard): reprocessing after an outage;
- this_kcl: the real MultiLangDaemon on a 4-shard stream, records put first, then drained (the
  outage case again, through the JSON protocol and one child process per shard).
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from processor.config import Settings
from devstack.daemon import Daemon
from processor.deadletters import JsonlDeadLetters
from devstack.demo import Producer, Stack, batches, totals, wait_until_drained
from processor.engine import FlushPolicy, ShardEngine
from processor.model import Record
from processor.replay import read_lines, replay, route
from processor.dynamodb.client import ensure_tables
from processor.store import ShardStore
from bench import metrics_table_of

SHARDS = 4
LIVE_FLUSH_MS = 1000


def run_live(sorted_events: str, client: Any, table: str, settings: Settings, workdir: Path) -> dict[str, Any]:
    """`sorted_events`: the storm in event-time order."""
    adapter = settings.build_adapter()
    ensure_tables(client, table, metrics_table=metrics_table_of(table))
    sink = settings.build_sink(client, adapter, table, metrics_table_of(table))
    engine = ShardEngine("shardId-000000000000", adapter, ShardStore(str(workdir / "live-state"), settings.retention_seconds),
                         sink, JsonlDeadLetters(str(workdir / "live-dead-letters.jsonl")),
                         FlushPolicy(max_records=10**12, max_seconds=float("inf")))
    started = time.perf_counter()
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
    seconds = time.perf_counter() - started
    engine.close()
    sink.close()
    return {"seconds": seconds}


def run_catchup(events: str, client: Any, table: str, settings: Settings, workdir: Path) -> dict[str, Any]:
    adapter = settings.build_adapter()
    ensure_tables(client, table, metrics_table=metrics_table_of(table))
    sink = settings.build_sink(client, adapter, table, metrics_table_of(table))
    result = replay(read_lines(events), adapter, sink, JsonlDeadLetters(str(workdir / "catchup-dead-letters.jsonl")),
                    shards=SHARDS, state_root=str(workdir / "catchup-state"), retention_seconds=settings.retention_seconds)
    sink.close()
    return {"seconds": result.seconds}


def run_kcl(events: str, emulator: Any, settings: Settings, workdir: Path) -> dict[str, Any]:
    """Put the backlog first, then start the daemon and time it until every record is checkpointed.
    `events`: the records the children took in, by their EMF lines (equal to `put` in a clean run)."""
    with Stack(workdir, settings, shards=SHARDS, emulator=emulator) as stack:
        producer = Producer(stack.kinesis, settings.build_adapter())
        for batch in batches(read_lines(events), 500):
            producer.send(batch)
        started = time.perf_counter()
        daemon = stack.start_daemon()
        peak = [0.0]

        def sample(_checkpoints: Any) -> None:
            peak[0] = max(peak[0], tree_rss_mb(daemon))

        wait_until_drained(stack, producer, timeout=3600, on_tick=sample)
        seconds = time.perf_counter() - started
        stack.stop_daemons()  # the children's last EMF lines: the sums are totals now
        counts = totals(stack.shard_metrics())
    return {"seconds": seconds, "tree_peak_rss_mb": round(peak[0], 1), "put": producer.put,
            "events": counts["Events"]}


def tree_rss_mb(daemon: Daemon) -> float:
    """Resident memory of the daemon and its record-processor children, MiB."""
    return sum(_rss_bytes(pid) for pid in [daemon.pid, *daemon.children()] if pid is not None) / 2**20


def _rss_bytes(pid: int) -> int:
    try:
        resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0  # the process ended between listing and reading
    return resident_pages * os.sysconf("SC_PAGE_SIZE")
