"""Helpers for the exactly-once metrics tests (ANALYTICS.md, I12 and I13) against a real DynamoDB API.

The truth is computed two independent ways, and every run under faults is held to both:
- `clean`: what one worker, never crashing and alone on the shard, leaves in the metrics table for
  the same set of events (read with `MetricsReader`, as `--export-metrics` does);
- `contribution_rows`: I12 on the final tables, the sum over the stored conversation items of each
  one's contribution, in the reader's row form.

`Worker` is one KCL child for one shard: an engine on its own RocksDB directory, its sink built the
production way (`Settings().build_sink`), on a client that a `Recorder` may log and a `Faults` hook
may kill. `run_shard` feeds a stream like KCL (batches after the checkpoint, a flush and a checkpoint
after each) and starts a new worker after a crash, on the same directory or a fresh one.
"""
from __future__ import annotations

import functools
import re
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import orjson

from devstack.storm import StormShape, storm
from processor.adapters.genesys import GenesysAdapter
from processor.analytics import layout
from processor.analytics.contribution import contribution
from processor.analytics.reader import MetricsReader, rows_of, summed
from processor.config import Settings
from processor.deadletters import JsonlDeadLetters
from processor.dynamodb.client import ensure_tables
from processor.dynamodb.item import from_item
from processor.engine import FlushPolicy, ShardEngine
from processor.model import Record
from tests.twins import Crash, CrashingStore, DyingDeadLetters, Faults, crash_after

SETTINGS = Settings()
ANALYTICS = SETTINGS.analytics
genesys = GenesysAdapter()
PARENT = "shardId-000000000000"
CHILD = "shardId-000000000001"
#: client calls a crash can hit, in the order a flush makes them: reads of conversations new to the
#: shard (in `process`), plain puts, the directory (UpdateItem), the transactions
OPERATIONS = ("batch_get_item", "put_item", "update_item", "transact_write_items")
#: the steps after the DynamoDB writes: dead letters (before the RocksDB commit), right after the
#: RocksDB commit, and after the flush returned but before KCL stored the checkpoint
LATE_STEPS = ("dead-letters", "commit", "checkpoint")


# ---- tables and events ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Tables:
    client: Any
    table: str
    metrics: str


def fresh_tables(client: Any, tag: str) -> Tables:
    """A new conversation table and metrics table, named for the test."""
    suffix = uuid.uuid4().hex[:8]
    tables = Tables(client, f"conv-{tag}-{suffix}", f"metrics-{tag}-{suffix}")
    ensure_tables(client, tables.table, metrics_table=tables.metrics)
    return tables


@functools.lru_cache(maxsize=None)
def storm_records(conversations: int, seed: int, queues: int = 40, first: int = 1000) -> tuple[Record, ...]:
    """A storm as Kinesis records, sequence numbers `first`, `first + 1`, ..."""
    lines = storm(StormShape(conversations=conversations, seed=seed, queues=queues))
    return tuple(Record(line, str(first + i), "pk") for i, line in enumerate(lines))


def as_records(envelopes: Iterable[dict[str, Any]], first: int) -> tuple[Record, ...]:
    return tuple(Record(orjson.dumps(e), str(first + i), "pk") for i, e in enumerate(envelopes))


def envelopes(stream: Iterable[Record]) -> list[dict[str, Any]]:
    return [orjson.loads(record.data) for record in stream]


def subtopic(envelope: dict[str, Any]) -> str:
    """`acd.end` of `v2.detail.events.conversation.{id}.acd.end`."""
    return envelope["detail-type"].split("{id}.", 1)[1]


def conversation(envelope: dict[str, Any]) -> str:
    return envelope["detail"]["eventBody"]["conversationId"]


def chunks(stream: Sequence[Record], size: int) -> list[list[Record]]:
    return [list(stream[start:start + size]) for start in range(0, len(stream), size)]


# ---- recording the client ------------------------------------------------------------------------

class Call(NamedTuple):
    operation: str
    metric_keys: tuple[str, ...]  # partition keys of the metrics table this call writes
    cancelled: list[bool]  # [True] once the call failed: a cancelled transaction wrote nothing


class Recorder:
    """Wraps a client and logs every call, in segments (one per flush, `begin` starts the next),
    with the metrics-table keys each write names. Calls from writer threads land in the segment
    open when they are made."""

    def __init__(self, client: Any, metrics_table: str):
        self._client = client
        self._table = metrics_table
        self._lock = threading.Lock()
        self.segments: list[tuple[str, list[Call]]] = []

    def begin(self, label: str) -> None:
        with self._lock:
            self.segments.append((label, []))

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            entry = Call(name, self._metric_keys(name, kwargs), [])
            with self._lock:
                if not self.segments:
                    self.segments.append(("", []))
                self.segments[-1][1].append(entry)
            try:
                return method(*args, **kwargs)
            except Exception:
                entry.cancelled.append(True)
                raise

        return call

    def _metric_keys(self, name: str, kwargs: dict[str, Any]) -> tuple[str, ...]:
        if name == "update_item" and kwargs.get("TableName") == self._table:
            return (kwargs["Key"][layout.KEY]["S"],)
        if name == "transact_write_items":
            return tuple(action["Update"]["Key"][layout.KEY]["S"] for action in kwargs["TransactItems"]
                         if "Update" in action and action["Update"]["TableName"] == self._table)
        return ()

    def counts(self) -> list[dict[str, int]]:
        """Per segment, how many calls of each operation."""
        result = []
        for _, calls in self.segments:
            counted: dict[str, int] = {}
            for c in calls:
                counted[c.operation] = counted.get(c.operation, 0) + 1
            result.append(counted)
        return result


# ---- one worker, and a shard fed like KCL --------------------------------------------------------

@dataclass
class Worker:
    """One KCL child for one shard: an engine on `state_dir`. `before`: a `Faults` hook on its
    client; `dies_after_writes(flush)` / `dies_after_commit(flush)`: whether its flush number
    `flush` (1-based, this worker's) dies before the dead letters / right after the RocksDB commit."""

    tables: Tables
    state_dir: Path
    shard_id: str = PARENT
    checkpoint: str | None = None
    client: Any = None
    before: Callable[[str, dict], None] | None = None
    dies_after_writes: Callable[[int], bool] = lambda flush: False
    dies_after_commit: Callable[[int], bool] = lambda flush: False
    flushes: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        client = self.client if self.client is not None else self.tables.client
        if self.before is not None:
            client = Faults(client, self.before)
        self.sink = SETTINGS.build_sink(client, genesys, self.tables.table, self.tables.metrics)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = CrashingStore(str(self.state_dir / "rocksdb"), armed=lambda: self.dies_after_commit(self.flushes))
        letters = JsonlDeadLetters(str(self.state_dir / "dead-letters.jsonl"))
        self.letters = DyingDeadLetters(letters, armed=lambda: self.dies_after_writes(self.flushes))
        self.engine = ShardEngine(self.shard_id, genesys, self.store, self.sink, self.letters,
                                  FlushPolicy(max_records=10 ** 9, max_seconds=10 ** 9), checkpoint=self.checkpoint)

    def apply(self, batch: Sequence[Record]) -> str | None:
        """Process a batch and flush it: the sequence number safe to checkpoint."""
        self.flushes += 1
        self.engine.process(batch)
        return self.engine.flush()

    def finish(self) -> str | None:
        """The graceful end of the lease: every held conversation written."""
        return self.engine.flush(final=True)

    def die(self) -> None:
        self.sink.close()
        self.store.close()


class CrashPoint(NamedTuple):
    """Where the first worker dies: `step` is one of OPERATIONS (at its `call`-th call, 0-based,
    within flush `flush`) or of LATE_STEPS (in flush `flush`)."""

    step: str
    flush: int
    call: int = 0

    def __str__(self) -> str:
        return f"{self.step}@flush{self.flush}" + (f"#{self.call}" if self.step in OPERATIONS else "")


@dataclass
class Run:
    workers: int
    checkpoint: str | None
    crashed_in_flush: int | None  # of the first worker, 1-based


def run_shard(tables: Tables, stream: Sequence[Record], state_root: Path, *, batch: int,
              shard_id: str = PARENT, crash: CrashPoint | None = None, profile: list[dict[str, int]] | None = None,
              new_owner: bool = False, recorder: Recorder | None = None, checkpoint: str | None = None) -> Run:
    """Feed `stream` to `shard_id` like KCL: batches of the records after the checkpoint, a flush
    after each, the checkpoint stored only once the flush returned. With `crash`, the first worker
    dies there (`profile`: the calls per flush of a clean run, to find the call) and a second one
    starts from the stored checkpoint: on the same state directory, or a fresh one (`new_owner`)."""
    pieces = chunks(stream, batch)
    workers = 0
    crashed_in: int | None = None
    while True:
        first = workers == 0 and crash is not None
        worker = Worker(tables, state_root / f"{shard_id}-{workers if new_owner else 0}", shard_id, checkpoint,
                        client=recorder, **(_faults(crash, profile) if first else {}))
        workers += 1
        try:
            for piece in pieces:
                todo = [r for r in piece if checkpoint is None or int(r.sequence_number) > int(checkpoint)]
                if not todo:
                    continue
                if recorder is not None:
                    recorder.begin(f"{shard_id}/worker{workers}/flush{worker.flushes + 1}")
                sequence = worker.apply(todo)
                if first and crash.step == "checkpoint" and crash.flush == worker.flushes:
                    raise Crash("died before KCL stored the checkpoint")
                checkpoint = sequence or checkpoint
            if recorder is not None:
                recorder.begin(f"{shard_id}/worker{workers}/final")
            return Run(workers, worker.finish() or checkpoint, crashed_in)
        except Crash:
            if not first:
                raise
            crashed_in = worker.flushes
        finally:
            worker.die()


def _faults(crash: CrashPoint, profile: list[dict[str, int]] | None) -> dict[str, Any]:
    if crash.step == "dead-letters":
        return {"dies_after_writes": lambda flush: flush == crash.flush}
    if crash.step == "commit":
        return {"dies_after_commit": lambda flush: flush == crash.flush}
    if crash.step == "checkpoint":
        return {}
    assert crash.step in OPERATIONS, crash
    assert profile is not None, "a crash at a call needs the clean run's calls per flush"
    made = profile[crash.flush - 1].get(crash.step, 0)
    if crash.call >= made:
        raise LookupError(f"{crash}: a clean run's flush {crash.flush} makes {made} {crash.step} calls ({profile})")
    before = sum(counts.get(crash.step, 0) for counts in profile[:crash.flush - 1])
    return {"before": crash_after(before + crash.call, crash.step)}


# ---- the truth -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Clean:
    rows: list[dict[str, Any]]
    profile: list[dict[str, int]]  # calls per flush


_clean_lock = threading.Lock()
_clean_runs: dict[tuple, Clean] = {}


def clean(client: Any, stream: Sequence[Record], batch: int | None = None) -> Clean:
    """The metrics one worker alone, never crashing, leaves for `stream` (flushes of `batch`
    records, default all in one), and its calls per flush. Cached per client, stream, batch and
    transaction size (the profile depends on them; the rows on the events alone)."""
    import tempfile

    from processor.dynamodb import metrics as packing

    stream = tuple(stream)
    key = (id(client), stream, batch or len(stream), packing.MAX_ACTIONS)
    with _clean_lock:
        if key not in _clean_runs:
            tables = fresh_tables(client, "clean")
            recorder = Recorder(client, tables.metrics)
            with tempfile.TemporaryDirectory() as root:
                run_shard(tables, stream, Path(root), batch=batch or len(stream), recorder=recorder)
            rows = metric_rows(tables)
            assert rows == contribution_rows(tables), "the clean run itself breaks I12"
            assert not key_violations(recorder), key_violations(recorder)
            _clean_runs[key] = Clean(rows, recorder.counts())
        return _clean_runs[key]


def truth(client: Any, stream: Sequence[Record]) -> list[dict[str, Any]]:
    """A clean run's metrics for `stream`, from any clean run of it already made."""
    stream = tuple(stream)
    with _clean_lock:
        for (owner, events, _, _), run in _clean_runs.items():
            if owner == id(client) and events == stream:
                return run.rows
    return clean(client, stream).rows


def metric_rows(tables: Tables) -> list[dict[str, Any]]:
    """The metrics as `--export-metrics` reads them: the directory followed, partials summed."""
    return MetricsReader(tables.client, tables.metrics, ANALYTICS.interval_minutes).rows()


def scan(client: Any, table: str) -> list[dict[str, Any]]:
    return [item for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
            for item in page["Items"]]


def scanned_rows(tables: Tables) -> list[dict[str, Any]]:
    """Every partial item in the metrics table summed, whether the directory lists it or not."""
    from processor.dynamodb.item import unwrap

    return summed(unwrap(item) for item in scan(tables.client, tables.metrics) if "kind" in item)


def contribution_rows(tables: Tables) -> list[dict[str, Any]]:
    """I12's right-hand side: the contributions of the stored conversation items, summed per cell."""
    return rows_of(contribution(from_item(item)[1].registers, ANALYTICS) for item in scan(tables.client, tables.table))


def row_diff(actual: list[dict[str, Any]], expected: list[dict[str, Any]], limit: int = 6) -> str:
    """The cells that differ, for an assertion message."""
    def identity(row: dict[str, Any]) -> tuple:
        return tuple(row.get(name) for name in ("kind", "queueId", "userId", "mediaType", "interval"))

    mine, theirs = {identity(r): r for r in actual}, {identity(r): r for r in expected}
    lines = []
    for key in sorted(mine.keys() | theirs.keys(), key=str):
        a, e = mine.get(key), theirs.get(key)
        if a != e:
            if a is not None and e is not None:
                changed = {m: (a[m], e[m]) for m in a if a[m] != e.get(m)}
                lines.append(f"{key}: (got, want) {changed}")
            else:
                lines.append(f"{key}: got {a}, want {e}")
    shown = lines[:limit] + ([f"... {len(lines) - limit} more"] if len(lines) > limit else [])
    return f"{len(lines)} cells differ:\n  " + "\n  ".join(shown)


def assert_exact(tables: Tables, expected: list[dict[str, Any]]) -> None:
    """The metrics equal the clean run's, and I12 holds on the final tables."""
    rows = metric_rows(tables)
    assert rows == expected, "metrics differ from a clean run's: " + row_diff(rows, expected)
    stored = contribution_rows(tables)
    assert rows == stored, "I12: partials differ from the stored conversations' contributions: " + row_diff(rows, stored)


# ---- I13 -----------------------------------------------------------------------------------------

PARTIAL_KEY = re.compile(r"^[qag]\|.*#(?P<shard>[^#]+)#(?P<writer>w\d)\.(?P<slot>\d+)$")


def key_violations(recorder: Recorder) -> list[str]:
    """I13 as the writes show it: per flush of one shard, no partial written twice (a cancelled
    transaction wrote nothing: its retry takes the same slots, already listed); every partial
    key carries `#<shard>#<slot>` of the shard that wrote it; every other key written is the shard's
    directory (`d|<interval>|<shard>|<bucket>`), its days (`s|<shard>`), a day's intervals
    (`i|<shard>|<day>`), its writer epoch (`w|<shard>`) or a registry bucket (`r|<n>`)."""
    problems = []
    for label, calls in recorder.segments:
        shard = label.split("/", 1)[0]
        partials: dict[str, int] = {}
        for c in calls:
            if c.operation == "transact_write_items":
                for key in c.metric_keys:
                    partials[key] = partials.get(key, 0) + (not c.cancelled)
                    found = PARTIAL_KEY.match(key)
                    if found is None or found["shard"] != shard:
                        problems.append(f"{label}: partial key without this shard's suffix: {key}")
            elif c.operation == "update_item":
                for key in c.metric_keys:
                    if not (re.fullmatch(r"r\|\d+", key) or key in (f"s|{shard}", f"w|{shard}")
                            or re.fullmatch(rf"i\|{re.escape(shard)}\|\d{{4}}-\d\d-\d\d", key)
                            or re.fullmatch(rf"d\|[^|]+\|{re.escape(shard)}(\|\d+)?", key)):
                        problems.append(f"{label}: UpdateItem on a key that is no directory of this shard: {key}")
        problems += [f"{label}: partial {key} written {n} times in one flush" for key, n in partials.items() if n > 1]
    return problems


def directory_writes(recorder: Recorder) -> dict[str, int]:
    """Per flush segment, the most times one directory key was written in it (> 1: noted)."""
    worst = {}
    for label, calls in recorder.segments:
        counted: dict[str, int] = {}
        for c in calls:
            if c.operation == "update_item":
                for key in c.metric_keys:
                    counted[key] = counted.get(key, 0) + 1
        if counted:
            worst[label] = max(counted.values())
    return worst
