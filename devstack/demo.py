"""`processor demo`: the main job on the embedded local stack, end to end.

  1. start the local emulator (Kinesis + DynamoDB on a free loopback port);
  2. create the stream (N shards), the conversation table and the dead-letter table;
  3. start the real KCL MultiLangDaemon, whose children run this processor (`processor kcl`);
  4. put the events with the conversation id as partition key, as the EventBridge rule does,
     splitting a shard half-way through when asked;
  5. wait until every record is processed and checkpointed (open shards at their last sequence,
     closed ones finished), showing progress;
  6. stop the daemon (SIGTERM: children flush, checkpoint and write their last metrics line),
     export the table, write the report, and check the table against `processor replay` of the
     same events.

With `--wallboard`, the queue wallboard (`processor wallboard`) is served from the start, so its
tiles move while the events flow, and the stack stays up after the summary until Ctrl-C.

Progress and counts come from what production emits, nothing the harness asks for: each child's
CloudWatch EMF lines, which the daemon echoes into its log, and the checkpoints in the lease table.
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import orjson
from botocore.exceptions import ConnectTimeoutError, ReadTimeoutError

from processor.adapters import Adapter
from processor.config import Settings
from devstack.daemon import Daemon, local_properties
from processor.deadletters import JsonlDeadLetters
from devstack.emulator import LocalEmulator
from processor.dynamodb.item import KEY
from processor.metrics import COUNTER_METRICS, DELTAS, SINK_METRICS
from processor.operate import leases, list_shards
from processor.analytics.reader import QUEUE_VIEW_KINDS, MetricsReader
from processor.replay import REPORT_KEYS, export_table, read_lines, replay, route, scan_items, write_jsonl
from processor.dynamodb.client import ensure_tables

STREAM, APPLICATION = "conversation-events", "conversation-state-processor"
PUT_BATCH = 500


@dataclass
class Producer:
    """Puts events as the EventBridge Kinesis target does; remembers the last sequence per shard."""

    kinesis: Any
    adapter: Adapter
    stream: str = STREAM
    put: int = 0
    last_sequence: dict[str, int] = field(default_factory=dict)

    def send(self, lines: list[bytes]) -> None:
        entries = [{"Data": line, "PartitionKey": self._key(line)} for line in lines]
        while entries:
            response = self.kinesis.put_records(StreamName=self.stream, Records=entries)
            retry = []
            for entry, result in zip(entries, response["Records"]):
                if "ErrorCode" in result:
                    retry.append(entry)
                    continue
                shard, sequence = result["ShardId"], int(result["SequenceNumber"])
                self.last_sequence[shard] = max(sequence, self.last_sequence.get(shard, 0))
                self.put += 1
            entries = retry

    def _key(self, line: bytes) -> str:
        key, _ = route(self.adapter, line)
        return key or "unroutable"  # Kinesis needs a key; EventBridge would use its fallback too


def split_widest_shard(kinesis: Any, stream: str = STREAM) -> str:
    """Split the open shard with the widest hash range at its middle; returns the parent's id."""
    shards = list_shards(kinesis, stream)
    open_shards = [s for s in shards if "EndingSequenceNumber" not in s["SequenceNumberRange"]]
    shard = max(open_shards, key=lambda s: int(s["HashKeyRange"]["EndingHashKey"])
                - int(s["HashKeyRange"]["StartingHashKey"]))
    low, high = int(shard["HashKeyRange"]["StartingHashKey"]), int(shard["HashKeyRange"]["EndingHashKey"])
    kinesis.split_shard(StreamName=stream, ShardToSplit=shard["ShardId"], NewStartingHashKey=str((low + high) // 2))
    return shard["ShardId"]


def lease_checkpoints(dynamodb: Any, application: str = APPLICATION) -> dict[str, str]:
    """shard id -> checkpoint."""
    return {shard: lease.get("checkpoint", "") for shard, lease in leases(dynamodb, application).items()}


def lease_owners(dynamodb: Any, application: str = APPLICATION) -> dict[str, str]:
    """shard id -> worker holding the lease, for shards not yet ended."""
    return {shard: lease.get("leaseOwner", "") for shard, lease in leases(dynamodb, application).items()
            if lease.get("checkpoint") != "SHARD_END"}


def drained(producer: Producer, checkpoints: dict[str, str], closed: Mapping[str, set[str]]) -> bool:
    """Every shard that got records is checkpointed at its last record, or finished if closed."""
    for shard, last in producer.last_sequence.items():
        checkpoint = checkpoints.get(shard, "")
        if shard in closed:
            if not finished(shard, checkpoints, closed):
                return False
        elif not checkpoint.isdigit() or int(checkpoint) < last:
            return False
    return True


def finished(shard: str, checkpoints: Mapping[str, str], closed: Mapping[str, set[str]]) -> bool:
    """Whether a closed shard was processed to its end: its lease at SHARD_END, or gone once a shard
    after it has checkpointed. KCL deletes a finished parent's lease once its children have moved
    past their initial position (LeaseCleanupManager), children that a later reshard closed
    included, and starts a child only after its parents ended: a slow drain may never see the
    parent at SHARD_END."""
    if shard in checkpoints:
        return checkpoints[shard] == "SHARD_END"
    return any(_begun(child, checkpoints, closed) for child in closed[shard])


def _begun(shard: str, checkpoints: Mapping[str, str], closed: Mapping[str, set[str]]) -> bool:
    """Whether the shard has checkpointed, or (its lease cleaned up too) a shard after it has."""
    if shard in checkpoints:
        return checkpoints[shard].isdigit() or checkpoints[shard] == "SHARD_END"
    return any(_begun(child, checkpoints, closed) for child in closed.get(shard, ()))


def closed_shards(kinesis: Any, stream: str = STREAM) -> dict[str, set[str]]:
    """Each closed shard, with the shards split or merged out of it."""
    shards = list_shards(kinesis, stream)
    closed: dict[str, set[str]] = {s["ShardId"]: set() for s in shards
                                   if "EndingSequenceNumber" in s["SequenceNumberRange"]}
    for s in shards:
        for parent in (s.get("ParentShardId"), s.get("AdjacentParentShardId")):
            if parent in closed:
                closed[parent].add(s["ShardId"])
    return closed


#: the start of an EMF line as the daemon echoes it: raw, unprefixed (the wrapped copy it also logs,
#: "... Received error line from subprocess [{...}] for shard ...", is not counted)
EMF_PREFIX = b'{"_aws"'


def emf_lines(lines: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The EMF metric lines among a daemon's log lines (JSON objects with `_aws` and `ShardId`)."""
    for line in lines:
        if not line.startswith(EMF_PREFIX):
            continue
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # torn by another thread's output: cannot be attributed
        if isinstance(entry, dict) and "ShardId" in entry:
            yield entry


def add_deltas(sums: dict[str, Counter], entries: Iterable[dict[str, Any]]) -> None:
    """Add each line's delta metrics to its shard's sums."""
    for entry in entries:
        shard = sums.setdefault(entry["ShardId"], Counter())
        shard.update({name: int(entry[name]) for name in DELTAS if name in entry})


@dataclass
class ShardMetrics:
    """Per shard and metric, the sum of the EMF deltas in the workers' logs: after every child
    wrote its last line (a graceful stop or shard end), what the children did; meanwhile, progress
    to the last line (one each `metrics_seconds`). Reads each log on from where it stopped."""

    offsets: dict[Path, int] = field(default_factory=dict)
    sums: dict[str, Counter] = field(default_factory=dict)

    def follow(self, log: Path) -> None:
        """Count `log` from its current end (an earlier run's lines in a reused workdir are not ours);
        a worker restarted onto the same log is already followed."""
        self.offsets.setdefault(log, log.stat().st_size if log.exists() else 0)

    def read(self) -> dict[str, Counter]:
        """shard id -> metric -> sum so far."""
        for log, offset in self.offsets.items():
            if not log.exists():
                continue
            with open(log, "rb") as source:
                source.seek(offset)
                text = source.read()
            complete = text.rfind(b"\n") + 1  # a line still being written is read next time
            add_deltas(self.sums, emf_lines(text[:complete].splitlines()))
            self.offsets[log] = offset + complete
        return self.sums


def totals(per_shard: dict[str, Counter]) -> Counter:
    """metric -> sum over every shard."""
    return sum(per_shard.values(), Counter())


def report_of(metric_totals: dict[str, int], conversations: int) -> dict[str, int]:
    """The `processor replay` report from summed metrics; `conversations`: the items in the table
    (a conversation that moved shards was looked up by each, counted once here)."""
    metric = {**COUNTER_METRICS, **SINK_METRICS}
    values = {key: int(metric_totals.get(metric[key], 0)) for key in REPORT_KEYS}
    values["conversations"] = conversations
    return values


@dataclass
class DemoResult:
    per_shard: dict[str, Counter]  # shard id -> metric -> sum (ShardMetrics)
    checkpoints: dict[str, str]  # shard id -> its lease's checkpoint at the end
    put: int
    seconds: float
    matches_replay: bool
    split_parent: str | None
    dead_letters: int
    conversations: int  # items in the table: a conversation that moved shards counts once
    metrics: list[dict[str, Any]]  # the stored metrics, summed over partials (export rows)
    metrics_match_replay: bool

    def report(self) -> dict[str, int]:
        return report_of(totals(self.per_shard), self.conversations)

    @property
    def redelivered(self) -> int:
        """Records taken in more than once: KCL hands a new owner everything after the checkpoint, so
        what a lost lease applied but had not checkpointed is applied again (the table is the same)."""
        return max(0, int(totals(self.per_shard)["Events"]) - self.put)


class Stack:
    """The emulator, the stream, the tables and the daemon, for one demo or test run."""

    def __init__(self, workdir: Path, settings: Settings, shards: int, emulator: LocalEmulator | None = None):
        """`emulator`: one already running (a benchmark's, shared with other systems), else its own."""
        self.workdir = workdir
        self.settings = settings
        self.shards = shards
        self._own_emulator = emulator is None
        self.emulator = emulator or LocalEmulator(log_path=str(workdir / "emulator.log"))
        self.daemons: list[Daemon] = []
        self.metrics = ShardMetrics()

    def __enter__(self) -> Stack:
        if self._own_emulator:
            self.emulator.start()
        self.kinesis = self.emulator.client("kinesis")
        self.dynamodb = self.emulator.client("dynamodb")
        self.kinesis.create_stream(StreamName=STREAM, ShardCount=self.shards)
        self.kinesis.get_waiter("stream_exists").wait(StreamName=STREAM, WaiterConfig={"Delay": 0.2})
        ensure_tables(self.dynamodb, self.settings.table, self.settings.dead_letter_table, self.settings.metrics_table)
        self.state_dir = self.workdir / "state"
        return self

    def start_daemon(self, name: str = "worker-1", **overrides: Any) -> Daemon:
        """A KCL worker with its own state directory, as each ECS task has its own disk.
        `overrides` replace settings for this worker only (e.g. flush_seconds)."""
        config = self.workdir / f"{name}.toml"
        settings = dataclasses.replace(
            self.settings, state_dir=str(self.state_dir / name), endpoint=self.emulator.endpoint,
            stamp_hold_seconds=min(self.settings.stamp_hold_seconds, DEMO_STAMP_HOLD_SECONDS),
            metrics_seconds=min(self.settings.metrics_seconds, DEMO_METRICS_SECONDS), **overrides)
        config.write_text(settings.to_toml())
        properties = self.workdir / f"{name}.properties"
        executable = f"{sys.executable} -m processor.cli kcl --config {config}"
        properties.write_text(local_properties(endpoint=self.emulator.endpoint, stream=STREAM,
                                               application=APPLICATION, executable=executable,
                                               extra={"workerId": name}))
        log = self.workdir / f"{name}.log"
        self.metrics.follow(log)
        daemon = Daemon(properties, log, self.emulator.environment()).start()
        self.daemons.append(daemon)
        return daemon

    def stop_daemons(self) -> None:
        """Stop every worker gracefully: each child flushes, checkpoints and writes its last metrics
        line, so `shard_metrics` then holds the totals."""
        for daemon in self.daemons:
            daemon.stop()

    def shard_metrics(self) -> dict[str, Counter]:
        """shard id -> metric -> sum of the EMF deltas the workers logged so far."""
        return self.metrics.read()

    def __exit__(self, *exc: object) -> None:
        for daemon in self.daemons:
            daemon.stop(timeout=20)
        if self._own_emulator:
            self.emulator.stop()


#: the demo holds locally advanced stamps for seconds, not a minute, so the drain it waits for (every
#: shard checkpointed at its last record) ends soon after the last put
DEMO_STAMP_HOLD_SECONDS = 5.0
#: each shard's EMF line every second, not every minute: the demo's progress and totals are read from them
DEMO_METRICS_SECONDS = 1.0


def batches(lines: Iterator[bytes], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for line in lines:
        batch.append(line)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def wait_until_drained(stack: Stack, producer: Producer, timeout: float, on_tick=None) -> None:
    deadline = time.monotonic() + timeout
    checkpoints: dict[str, str] = {}
    while True:
        polled = poll_progress(stack)
        if polled is not None:
            checkpoints, closed = polled
            if on_tick is not None:
                on_tick(checkpoints)
            if drained(producer, checkpoints, closed):
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"records not all checkpointed after {timeout:.0f}s: {checkpoints}")
        if not any(d.alive() for d in stack.daemons):
            raise RuntimeError(f"every KCL daemon exited; see the worker logs in {stack.workdir}")
        time.sleep(0.5)


def poll_progress(stack: Stack) -> tuple[dict[str, str], dict[str, set[str]]] | None:
    """The lease checkpoints and the closed shards with their children; None when the emulator did
    not answer in time.

    The emulator serves one request at a time, and the children's flushes queue dozens of
    transactions at once: a poll may wait past the client's read timeout. It is asked again on the
    next tick; the drain's own deadline still bounds the wait."""
    try:
        return lease_checkpoints(stack.dynamodb), closed_shards(stack.kinesis)
    except (ReadTimeoutError, ConnectTimeoutError):
        return None


def replay_matches(stack: Stack, events: Path, adapter: Adapter, shards: int) -> tuple[bool, bool]:
    """Replay the same events into fresh tables on the same emulator; compare the projections, and
    the metrics summed over partials (the daemon's shards and the replay's differ: the sums may not)."""
    table, metrics_table = "replay-check", "replay-check-metrics"
    ensure_tables(stack.dynamodb, table, metrics_table=metrics_table)
    sink = stack.settings.build_sink(stack.dynamodb, adapter, table, metrics_table)
    replay(read_lines(str(events)), adapter, sink, JsonlDeadLetters(str(stack.workdir / "replay-dead-letters.jsonl")),
           shards=shards, retention_seconds=stack.settings.retention_seconds)
    projections = _projections(stack.dynamodb, stack.settings.table) == _projections(stack.dynamodb, table)
    return projections, stored_metrics(stack, metrics_table) == stored_metrics(stack)


def stored_metrics(stack: Stack, metrics_table: str | None = None) -> list[dict[str, Any]]:
    settings = stack.settings
    return MetricsReader(stack.dynamodb, metrics_table or settings.metrics_table, settings.interval_minutes).rows()


def _projections(dynamodb: Any, table: str) -> dict[str, dict]:
    return {item[KEY]: {k: v for k, v in item.items() if not k.startswith("_") and k != "version"}
            for item in scan_items(dynamodb, table)}


@dataclass(frozen=True)
class DemoWallboard:
    """`processor demo --wallboard` and `--wallboard-screenshot`: the wallboard on the demo's stack."""

    host: str = "127.0.0.1"
    port: int = 8080
    screenshot: str | None = None  # a PNG of the board, taken while the events flow
    keep: bool = False  # after the summary, keep the stack and the wallboard up until Ctrl-C


#: for a screenshot the events are put at a steady pace once the daemon processes them, and the
#: picture taken when this share is processed: mid-storm, the tiles moving and calls waiting (put at
#: once, the stream is processed before a browser starts, and the newest interval of a finished
#: storm is its quiet tail)
SCREENSHOT_SHARE = 0.4
SCREENSHOT_PUT_PAUSE_SECONDS = 2.0


class DemoBoard:
    """The wallboard being served on the demo's stack, at `url`."""

    def __init__(self, url: str, options: DemoWallboard, console: Any):
        self.url, self.options, self.console = url, options, console
        self._screenshot_due = options.screenshot is not None

    def put(self, processed: Callable[[], int], total: int) -> None:
        """After each batch put, while a screenshot is due: wait for the daemon to process
        something, then pace the puts, so that the stream is processed as it is put."""
        while self._screenshot_due and processed() == 0:
            time.sleep(1.0)
        if self._screenshot_due:
            self.progress(processed(), total)
        if self._screenshot_due:
            time.sleep(SCREENSHOT_PUT_PAUSE_SECONDS)

    def progress(self, processed: int, total: int) -> None:
        if processed >= SCREENSHOT_SHARE * total:
            self.take_screenshot()

    def take_screenshot(self) -> None:
        """Save the board (once), if asked to: mid-run, or at the end of a run too quick to catch."""
        if not self._screenshot_due:
            return
        from devstack.browser import screenshot

        self._screenshot_due = False
        screenshot(self.url, self.options.screenshot)
        self.console.print(f"wallboard screenshot: {self.options.screenshot}")

    def hold(self) -> None:
        """Block until Ctrl-C, the stack and the board still up."""
        self.console.print(f"wallboard: {self.url} (the local stack stays up); Ctrl-C stops everything")
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            self.console.print("stopping the wallboard and the local stack")


@contextlib.contextmanager
def demo_board(stack: Stack, options: DemoWallboard | None, console: Any) -> Iterator[DemoBoard | None]:
    """The wallboard over the stack's metrics table while the block runs (None: not asked for)."""
    if options is None:
        yield None
        return
    from processor.wallboard.server import BoardReader, BoardSource, WallboardServer, serving

    settings, table = stack.settings, stack.settings.metrics_table
    # its own client: the screens' reads never wait on the demo's connections, nor the demo on theirs
    reader = MetricsReader(stack.emulator.client("dynamodb"), table, settings.interval_minutes, kinds=QUEUE_VIEW_KINDS)
    server = WallboardServer(options.host, options.port, BoardSource(BoardReader(reader, settings, table), table))
    with serving(server) as url:
        console.print(f"wallboard: {url} (its tiles move as the events are processed)")
        yield DemoBoard(url, options, console)


def run_demo(events: Path, settings: Settings, shards: int, reshard: bool, workdir: Path,
             console: Any, export: str | None = None, timeout: float = 900.0,
             export_metrics: str | None = None, wallboard: DemoWallboard | None = None,
             summary: Callable[[DemoResult], None] | None = None) -> DemoResult:
    """Everything `processor demo` does after parsing its arguments; `summary` shows the result
    while the stack is still up (before a kept wallboard holds it until Ctrl-C)."""
    from rich.live import Live

    adapter = settings.build_adapter()
    started = time.perf_counter()
    split_parent = None
    with Stack(workdir, settings, shards) as stack, demo_board(stack, wallboard, console) as board:
        producer = Producer(stack.kinesis, adapter)
        stack.start_daemon()
        total = sum(1 for _ in read_lines(str(events)))
        with Live(console=console, refresh_per_second=4, transient=not console.is_terminal) as live:
            last_line = [0.0]

            def show(checkpoints: dict[str, str] | None = None) -> None:
                per_shard = stack.shard_metrics()
                live.update(progress_table(producer, total, per_shard, checkpoints or {}))
                if board is not None:
                    board.progress(totals(per_shard)["Events"], total)
                if not console.is_terminal and time.monotonic() - last_line[0] >= 10:  # logs get a line
                    last_line[0] = time.monotonic()
                    done = totals(per_shard)["Events"]
                    console.print(f"put {producer.put:,}/{total:,}, processed {done:,}", highlight=False)

            for batch in batches(read_lines(str(events)), PUT_BATCH):
                producer.send(batch)
                if board is not None:
                    board.put(lambda: totals(stack.shard_metrics())["Events"], total)
                if reshard and split_parent is None and producer.put >= total // 2:
                    split_parent = split_widest_shard(stack.kinesis)
                show()
            wait_until_drained(stack, producer, timeout, on_tick=show)
        seconds = time.perf_counter() - started
        stack.stop_daemons()  # the children's last EMF lines make the sums totals
        per_shard, checkpoints = dict(stack.shard_metrics()), lease_checkpoints(stack.dynamodb)
        if export:
            export_table(stack.dynamodb, settings.table, export)
        metrics = stored_metrics(stack)
        if export_metrics:
            write_jsonl(export_metrics, metrics)
        dead_letters = count_items(stack.dynamodb, settings.dead_letter_table)
        conversations = count_items(stack.dynamodb, settings.table)
        matches, metrics_match = replay_matches(stack, events, adapter, shards)
        result = DemoResult(per_shard, checkpoints, producer.put, seconds, matches, split_parent, dead_letters,
                            conversations, metrics, metrics_match)
        if board is not None:
            board.take_screenshot()
        if summary is not None:
            summary(result)
        if board is not None and wallboard.keep:
            board.hold()
    return result


def count_items(dynamodb: Any, table: str) -> int:
    pages = dynamodb.get_paginator("scan").paginate(TableName=table, Select="COUNT", ConsistentRead=True)
    return sum(page["Count"] for page in pages)


def progress_table(producer: Producer, total: int, per_shard: dict[str, Counter],
                   checkpoints: dict[str, str]) -> Any:
    from rich.table import Table

    processed = totals(per_shard)["Events"]
    table = Table(title=f"put {producer.put:,}/{total:,}   processed {processed:,}", title_justify="left")
    for column in ("shard", "put", "processed", "checkpoint", "lag"):
        table.add_column(column, justify="right" if column != "shard" else "left")
    for shard in sorted(set(producer.last_sequence) | set(per_shard)):
        last = producer.last_sequence.get(shard, 0)
        checkpoint = checkpoints.get(shard, "")
        lag = "done" if checkpoint == "SHARD_END" else (
            f"{max(0, last - int(checkpoint)):,}" if checkpoint.isdigit() else "-")
        events = per_shard.get(shard, Counter())["Events"]
        table.add_row(shard, f"{last:,}", f"{events:,}", checkpoint or "-", lag)
    return table
