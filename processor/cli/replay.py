"""`processor replay`: the production engine and sink over a file of EventBridge events, for
operators re-running a captured file (against a real endpoint) and for the local stack (without
one, it starts the development checkout's emulator for the run)."""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from processor import replay as replaying
from processor.cli.render import counts_table, write_json
from processor.config import load_settings
from processor.deadletters import JsonlDeadLetters
from processor.dynamodb.client import data_plane_client, dynamodb_client, ensure_table, table_exists
from processor.analytics.layout import KEY as METRICS_KEY
from processor.dynamodb.item import KEY
from processor.dynamodb.sink import NullSink

log = logging.getLogger("processor")


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("replay", help="run the engine and sink over a file of EventBridge events",
                                 description=replaying.__doc__)
    parser.add_argument("events", help="JSONL file: one EventBridge event per line")
    parser.add_argument("--config", help="settings TOML (adapter, flush, retention, tables)")
    parser.add_argument("--shards", type=int, default=1, help="simulated Kinesis shards (default 1)")
    parser.add_argument("--dynamodb-endpoint", help="DynamoDB endpoint (for AWS itself: https://dynamodb.REGION."
                        "amazonaws.com); default: start the local stack's emulator for the run")
    parser.add_argument("--table", help="conversation table (default from settings: conversations); it must exist "
                        "unless --create-table")
    parser.add_argument("--create-table", action="store_true", help="create the table (on demand) if it does not "
                        "exist, e.g. on a local endpoint; a deployment's tables come from deploy/template.yaml")
    parser.add_argument("--metrics-table", help="metrics table (default from settings: conversation-metrics); it "
                        "must exist unless --create-table (adapters with sessions only)")
    parser.add_argument("--export", help="write the table's final items here as JSONL")
    parser.add_argument("--export-metrics", help="write the stored metrics here as JSONL, summed over partials: one "
                        "object per cell with any non-zero metric")
    parser.add_argument("--report", help="write the run's counts here as JSON")
    parser.add_argument("--dead-letter", help="dead-letter JSONL (default: beside --export, else ./dead-letters.jsonl)")
    parser.add_argument("--state-dir", help="keep shard RocksDBs here (default: a temporary directory); re-running "
                        "with it resumes: lines already committed are skipped (refused for another file, --shards, "
                        "adapter or table)")
    parser.add_argument("--dry-run", action="store_true", help="engine and RocksDB only: no DynamoDB reads or writes")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if not os.path.exists(args.events):
        raise ValueError(f"events file not found: {args.events}")
    table = args.table or settings.table
    endpoint = args.dynamodb_endpoint or settings.endpoint
    if args.state_dir:
        target = "dry run" if args.dry_run else f"{endpoint} {table}" if endpoint else replaying.EPHEMERAL
        replaying.bind_state_dir(args.state_dir, args.events, args.shards, settings.adapter, target)
    if args.dry_run and (args.export or args.export_metrics):
        raise ValueError("--export and --export-metrics read the tables, which --dry-run does not write")
    dead_letters = JsonlDeadLetters(args.dead_letter or _beside(args.export, "dead-letters.jsonl"))
    adapter = settings.build_adapter()
    with _dynamodb(endpoint, args.dry_run) as (client, data_plane):
        if client is None:
            sink: Any = NullSink()
        else:
            metrics_table = (args.metrics_table or settings.metrics_table) if adapter.keeps_sessions else None
            for name, key in ((table, KEY), (metrics_table, METRICS_KEY)):
                if name is not None:
                    _table_ready(client, name, key, create=args.create_table or not endpoint, endpoint=endpoint)
            sink = settings.build_sink(data_plane, adapter, table, metrics_table)
        with _progress(Console(stderr=True), args.events, enabled=not args.no_progress) as advance:
            result = replaying.replay(replaying.read_lines(args.events), adapter, sink, dead_letters,
                                      shards=args.shards, state_root=args.state_dir,
                                      flush_records=settings.flush_records,
                                      retention_seconds=settings.retention_seconds, on_progress=advance)
        exported = replaying.export_table(client, table, args.export) if args.export and client is not None else None
        if args.export_metrics and client is not None:
            cells = replaying.export_metrics(data_plane, metrics_table, args.export_metrics, settings.interval_minutes) \
                if metrics_table else replaying.write_jsonl(args.export_metrics, [])
    if args.report:
        write_json(args.report, result.report())
    console = Console()
    summary = counts_table(f"processor replay: {args.events}", result.report())
    for label, value in (("skipped", result.counters.skipped),  # committed by an earlier run (--state-dir)
                         ("write conflicts merged", result.sink.conflicts),
                         ("throttled and retried", result.sink.throttles), ("DynamoDB reads", result.sink.reads)):
        summary.add_row(label, f"{value:,}")
    summary.add_row("shards", str(args.shards))
    summary.add_row("throughput", f"{result.events_per_second:,.0f} events/s in {result.seconds:.1f} s")
    console.print(summary)
    if dead_letters.count:
        console.print(f"dead letters: {dead_letters.count:,} in {dead_letters.path}")
    if exported is not None:
        console.print(f"export: {exported:,} items in {args.export} (table {table})")
    if args.export_metrics:
        console.print(f"metrics: {cells:,} cells in {args.export_metrics}")
    if args.report:
        console.print(f"report: {args.report}")
    return 0


@contextlib.contextmanager
def _dynamodb(endpoint: str | None, dry_run: bool) -> Iterator[tuple[Any, Any]]:
    """DynamoDB clients for `endpoint`, boto3's for the tables and the export and the data-plane
    client for the sink and the metrics reader; without an endpoint, the local stack's emulator
    for the run. (None, None) for a dry run."""
    if dry_run:
        yield None, None
        return
    if endpoint:
        yield dynamodb_client(endpoint), data_plane_client(endpoint)
        return
    try:
        from devstack.emulator import LOCAL_ENVIRONMENT, REGION, EmulatorError, LocalEmulator
    except ImportError:
        raise ValueError("no --dynamodb-endpoint, and the local stack (a development checkout's devstack) is not "
                         "installed to start an emulator: pass --dynamodb-endpoint URL") from None
    log.info("no --dynamodb-endpoint: starting a local DynamoDB emulator")
    credentials = {"aws_access_key_id": LOCAL_ENVIRONMENT["AWS_ACCESS_KEY_ID"],
                   "aws_secret_access_key": LOCAL_ENVIRONMENT["AWS_SECRET_ACCESS_KEY"]}
    try:
        emulator = LocalEmulator().start()
    except EmulatorError as error:
        raise ValueError(str(error)) from None
    try:
        yield emulator.client("dynamodb"), data_plane_client(emulator.endpoint, region=REGION, credentials=credentials)
    finally:
        emulator.stop()


@contextlib.contextmanager
def _progress(console: Console, path: str, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    if not enabled or not console.is_terminal:
        yield None
        return
    with open(path, "rb") as source:
        total = sum(1 for line in source if line.strip())
    columns = (TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TextColumn("events"), TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("replay", total=total)
        yield lambda count: progress.advance(task, count)


def _table_ready(client: Any, table: str, key: str, create: bool, endpoint: str | None) -> None:
    """The table must be there: a mistyped name would otherwise receive the whole replay."""
    if create:
        ensure_table(client, table, key)
    elif not table_exists(client, table):
        raise ValueError(f"table {table} does not exist at {endpoint}: check --table/--metrics-table (or pass "
                         "--create-table)")


def _beside(path: str | None, name: str) -> str:
    if path is None:
        return name
    stem, _ = os.path.splitext(path)
    return f"{stem}.{name}"
