"""The `processor` command line.

    processor replay EVENTS.jsonl [--config FILE] [--shards N] [--dynamodb-endpoint URL]
                     [--table NAME] [--export OUT.jsonl] [--report OUT.json] [--dead-letter PATH]
    processor generate OUT.jsonl [--conversations N] [--seed S]
"""
from __future__ import annotations

import argparse
import json
import contextlib
import dataclasses
import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterator, Sequence

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from processor.config import Settings, load_settings
from processor.daemon import DaemonError
from processor.deadletters import JsonlDeadLetters
from devstack.emulator import LOCAL_ENVIRONMENT, EmulatorError, LocalEmulator
from processor.replay import EPHEMERAL, REPORT_KEYS, ReplayResult, bind_state_dir, export_table, read_lines, replay
from processor.operate import OperateError
from processor.dynamodb.retry import GaveUp
from devstack.storm import StormShape, write_storm
from processor.dynamodb.sink import DynamoSink, NullSink
from processor.dynamodb.client import dynamodb_client, ensure_table

log = logging.getLogger("processor")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=os.environ.get("PROCESSOR_LOG_LEVEL", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except (ValueError, EmulatorError, GaveUp, OSError, OperateError, DaemonError) as error:
        print(f"processor: error: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="processor", description=(
        "Conversation-state stream processor: contact-center events to the state changes that matter."))
    commands = parser.add_subparsers(dest="command", required=True)

    replay_parser = commands.add_parser("replay", help="run the engine and sink over a file of EventBridge events",
                                        description=replay.__doc__)
    replay_parser.add_argument("events", help="JSONL file: one EventBridge event per line")
    replay_parser.add_argument("--config", help="settings TOML (adapter, flush, retention, tables)")
    replay_parser.add_argument("--shards", type=int, default=1, help="simulated Kinesis shards (default 1)")
    replay_parser.add_argument("--dynamodb-endpoint", help="DynamoDB endpoint; default: start a local emulator")
    replay_parser.add_argument("--table", help="conversation table (default from settings: conversations)")
    replay_parser.add_argument("--export", help="write the table's final items here as JSONL")
    replay_parser.add_argument("--report", help="write the run's counts here as JSON")
    replay_parser.add_argument("--dead-letter", help="dead-letter JSONL (default: beside --export, "
                                                     "else ./dead-letters.jsonl)")
    replay_parser.add_argument("--state-dir", help="keep shard RocksDBs here (default: a temporary directory); "
                                                   "re-running with it resumes: lines already committed are skipped "
                                                   "(refused for another file, --shards or adapter)")
    replay_parser.add_argument("--dry-run", action="store_true",
                               help="engine and RocksDB only: no DynamoDB reads or writes")
    replay_parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    replay_parser.set_defaults(run=run_replay)

    generate_parser = commands.add_parser("generate", help="write a realistic Genesys event storm as JSONL")
    generate_parser.add_argument("out", help="JSONL file to write")
    generate_parser.add_argument("--conversations", type=int, default=StormShape.conversations)
    generate_parser.add_argument("--seed", type=int, default=StormShape.seed)
    generate_parser.set_defaults(run=run_generate)

    demo_parser = commands.add_parser("demo", help="the main job on the embedded local stack, with the real KCL daemon",
                                      description=demo_module_doc())
    demo_parser.add_argument("--events", help="JSONL events to put (default: a generated Genesys storm)")
    demo_parser.add_argument("--config", help="settings TOML (adapter, flush, retention)")
    demo_parser.add_argument("--shards", type=int, default=4, help="stream shards (default 4)")
    demo_parser.add_argument("--reshard", action="store_true", help="split a shard half-way through the run")
    demo_parser.add_argument("--conversations", type=int, default=5_000, help="size of the generated storm")
    demo_parser.add_argument("--export", help="write the table's final items here as JSONL")
    demo_parser.add_argument("--report", help="write the run's counts here as JSON")
    demo_parser.add_argument("--workdir", help="keep logs, state and settings here (default: a temporary directory)")
    demo_parser.set_defaults(run=run_demo_command)

    bench_parser = commands.add_parser("bench", help="this processor side by side with the patterns in use today",
                                       description=bench_module_doc(),
                                       formatter_class=argparse.RawDescriptionHelpFormatter)
    bench_parser.add_argument("--quick", action="store_true", help="a smaller run without the KCL daemon (< 5 min)")
    bench_parser.add_argument("--conversations", type=int, help="storm size (default 1,000; --quick 200)")
    bench_parser.add_argument("--curve", help="conversation counts for the growth curve, comma-separated "
                                              "(default 1000,10000,100000,1000000; --quick 1000,10000,30000)")
    bench_parser.add_argument("--out", help="write the results as JSON here (and the chart beside it as .png)")
    bench_parser.add_argument("--chart", help="write the PNG chart here (default: beside --out)")
    bench_parser.add_argument("--readme", help="rewrite this README's results section (between bench markers)")
    bench_parser.add_argument("--workdir", help="keep the storm, logs and state here (default: a temporary directory)")
    bench_parser.set_defaults(run=run_bench_command)

    for name, helptext, runner in (
            ("status", "per shard: lease owner, checkpoint, parent/children, lag behind the stream tip", run_status),
            ("reprocess", "with the application stopped, move checkpoints back so the next start replays",
             run_reprocess),
            ("inspect", "one conversation: its DynamoDB item and local state, bookkeeping decoded, every value "
                        "masked but the adapter's known non-PII fields and [inspect] show",
             run_inspect)):
        operate_parser = commands.add_parser(name, help=helptext, description=helptext)
        operate_parser.add_argument("--properties", default="kcl.properties",
                                    help="the deployment's KCL properties: stream, application, region "
                                         "(default ./kcl.properties)")
        operate_parser.add_argument("--endpoint", help="Kinesis and DynamoDB endpoint (the local stack)")
        operate_parser.set_defaults(run=runner)
        if name == "reprocess":
            operate_parser.add_argument("--from", dest="start", required=True, metavar="TIMESTAMP|TRIM_HORIZON",
                                        help="replay from this ISO-8601 time, or from the oldest record")
            operate_parser.add_argument("--shard", help="only this shard (default: every leased shard)")
            operate_parser.add_argument("--force", action="store_true", help="move checkpoints even while leases "
                                        "are being renewed (workers running): they may overwrite the move")
            operate_parser.add_argument("--state-dir", help="also clear these shards' local state under this "
                                        "directory (a worker's disk; ECS task disks go with the tasks)")
            operate_parser.add_argument("--watch-seconds", type=float, help="how long to watch leases for renewals "
                                        "(default: failoverTimeMillis from the properties)")
        if name == "inspect":
            operate_parser.add_argument("conversation_id")
            operate_parser.add_argument("--config", help="settings TOML (table, state_dir, adapter, [inspect])")
            operate_parser.add_argument("--state-dir", help="local state to look in (default from settings)")

    daemon_parser = commands.add_parser("daemon", help="run the KCL MultiLangDaemon (the container's command)",
                                        description="Render the properties with the stream, application and "
                                        "region from KCL_STREAM_NAME, KCL_APPLICATION_NAME and AWS_REGION, then "
                                        "become the MultiLangDaemon (exec), so SIGTERM reaches it directly.")
    daemon_parser.add_argument("--properties", default="kcl.properties", help="KCL properties (default ./kcl.properties)")
    daemon_parser.add_argument("--rendered", default=os.path.join(tempfile.gettempdir(), "processor-kcl.properties"),
                               help="where to write the rendered properties")
    daemon_parser.add_argument("--dry-run", action="store_true", help="print the properties and command, run nothing")
    daemon_parser.set_defaults(run=run_daemon_command)

    kcl_parser = commands.add_parser("kcl", help="the KCL MultiLangDaemon child (executableName in kcl.properties)")
    kcl_parser.add_argument("--config", help="settings TOML")
    kcl_parser.set_defaults(run=run_kcl_command)
    return parser


def _deployment(args: argparse.Namespace) -> tuple[dict[str, str], object, object]:
    """The properties and Kinesis and DynamoDB clients the operating commands work with."""
    import boto3

    from processor.daemon import read_properties

    if not os.path.exists(args.properties):
        raise ValueError(f"properties file not found: {args.properties} (pass --properties)")
    properties = read_properties(Path(args.properties))
    missing = [key for key in ("streamName", "applicationName") if not properties.get(key)]
    if missing:
        raise ValueError(f"{args.properties} lacks {' and '.join(missing)}")
    if args.endpoint:
        for name, value in LOCAL_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
    region = properties.get("regionName") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise ValueError(f"no region: set regionName in {args.properties} or AWS_REGION")
    kinesis = boto3.client("kinesis", endpoint_url=args.endpoint, region_name=region)
    return properties, kinesis, dynamodb_client(args.endpoint, region=region)


def run_status(args: argparse.Namespace) -> int:
    from processor.operate import shard_status

    properties, kinesis, dynamodb = _deployment(args)
    table = Table(title=f"stream {properties['streamName']}, application {properties['applicationName']}")
    for heading in ("shard", "state", "parents", "children", "lease owner", "checkpoint", "lag ms"):
        table.add_column(heading)
    for shard in shard_status(kinesis, dynamodb, properties["streamName"], properties["applicationName"]):
        table.add_row(shard.shard_id, "open" if shard.is_open else "closed", ", ".join(shard.parents) or "-",
                      ", ".join(shard.children) or "-", shard.owner or "-", shard.checkpoint or "(no lease)",
                      "-" if shard.lag_ms is None else f"{shard.lag_ms:,}")
    Console(width=160).print(table)
    return 0


def run_reprocess(args: argparse.Namespace) -> int:
    from processor.operate import clear_local_state, live_leases, reprocess

    properties, kinesis, dynamodb = _deployment(args)
    application = properties["applicationName"]
    if not args.force:
        watch = args.watch_seconds if args.watch_seconds is not None else int(
            properties.get("failoverTimeMillis", "10000")) / 1000
        print(f"watching leases for {watch:.0f}s to make sure no worker is running …", file=sys.stderr)
        live = live_leases(dynamodb, application, watch)
        if live:
            raise OperateError(f"leases are being renewed ({', '.join(live)}): stop the application first "
                               "(or pass --force and accept that running workers may overwrite the move)")
    moved = reprocess(kinesis, dynamodb, properties["streamName"], application, args.start, args.shard)
    for shard, checkpoint in sorted(moved.items()):
        print(f"{shard}: checkpoint -> {checkpoint}")
    if not moved:
        print("no shard has records at or after that time: nothing moved")
    if args.state_dir:
        for directory in clear_local_state(args.state_dir, moved):
            print(f"cleared local state {directory}")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from processor.operate import inspect, shown_fields

    _, _, dynamodb = _deployment(args)
    settings = load_settings(args.config)
    shown = shown_fields(settings.build_adapter().public_fields, settings.inspect_show, settings.inspect_mask)
    found = inspect(args.conversation_id, dynamodb, settings.table, args.state_dir or settings.state_dir,
                    settings.retention_seconds, shown=shown)
    print(json.dumps(found, indent=2, default=str, ensure_ascii=False))  # exact integers of any size
    return 0 if "dynamodb" in found or found["local"] else 1


def run_daemon_command(args: argparse.Namespace) -> int:
    from processor.daemon import daemon_command, deployed_properties

    if not os.path.exists(args.properties):
        raise ValueError(f"properties file not found: {args.properties}")
    rendered = deployed_properties(Path(args.properties), os.environ)
    Path(args.rendered).write_text(rendered)
    command = daemon_command(Path(args.rendered))
    if args.dry_run:
        print(rendered + "\n" + " ".join(command))
        return 0
    os.execv(command[0], command)  # the daemon takes this process's place (PID under tini)


def run_kcl_command(args: argparse.Namespace) -> int:
    from processor.kcl import run_child  # needs amazon_kclpy, which replay does not

    return run_child(args.config)


def bench_module_doc() -> str:
    import bench as benchmark

    return benchmark.__doc__ or ""


def run_bench_command(args: argparse.Namespace) -> int:
    from bench.report import chart, comparison_table, markdown, ratios, update_readme
    from bench.run import Plan, bench

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)  # the table is wide; logs and CI have room
    plan = Plan.for_run(args.quick, args.conversations)
    if args.curve is not None:
        plan = dataclasses.replace(plan, curve=tuple(int(n) for n in args.curve.split(",") if n.strip()))
    with _workdir(args.workdir, "processor-bench-") as workdir:
        results = bench(plan, workdir, say=lambda line: console.print(line, highlight=False))
    console.print(comparison_table(results))
    console.print(ratios(results))
    if args.out:
        Path(args.out).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    chart_path = args.chart or (str(Path(args.out).with_suffix(".png")) if args.out else None)
    if chart_path:
        chart(results, Path(chart_path))
    if args.readme:
        command = "processor bench" + (" --quick" if args.quick else "") + (
            f" --conversations {args.conversations}" if args.conversations else "") + (
            f" --curve {args.curve}" if args.curve is not None else "") + (
            f" --out {args.out}" if args.out else "") + f" --readme {args.readme}"
        update_readme(Path(args.readme), markdown(results, command) + (
            f"\n![benchmark chart]({chart_path})\n" if chart_path else ""))
    return 0


def demo_module_doc() -> str:
    from devstack import demo

    return demo.__doc__ or ""


def run_demo_command(args: argparse.Namespace) -> int:
    from devstack.demo import run_demo

    settings = load_settings(args.config)
    config_text = _adapter_table(args.config)
    console = Console(stderr=True)
    with _workdir(args.workdir, "processor-demo-") as workdir:
        events = args.events
        if events is None:
            events = os.path.join(workdir, "storm.jsonl")
            count = write_storm(events, StormShape(conversations=args.conversations))
            console.print(f"generated a Genesys storm: {count:,} events over {args.conversations:,} conversations")
        elif not os.path.exists(events):
            raise ValueError(f"events file not found: {events}")
        result = run_demo(Path(events), settings, config_text, args.shards, args.reshard, workdir, console,
                          export=args.export)
    if args.report:
        with open(args.report, "wb") as out:
            out.write(orjson.dumps(result.report(), option=orjson.OPT_INDENT_2) + b"\n")
    _demo_summary(Console(), result, args)
    return 0 if result.matches_replay else 1


def _adapter_table(path: str | None) -> str:
    """The [adapter] part of a settings file, carried into the KCL children's settings."""
    if not path:
        return ""
    with open(path, "rb") as source:
        adapter = tomllib.load(source).get("adapter")
    return "" if not adapter else _toml_table("adapter", adapter)


def _toml_table(name: str, table: dict) -> str:
    lines, nested = [f"[{name}]"], []
    for key, value in table.items():
        if isinstance(value, dict):
            nested.append(_toml_table(f"{name}.{key}", value))
        else:
            lines.append(f"{key} = {orjson.dumps(value).decode()}")
    return "\n".join(lines) + "\n" + "".join(nested)


def _demo_summary(console: Console, result, args: argparse.Namespace) -> None:
    summary = _counts_table("processor demo: the real KCL daemon on the local stack", result.report())
    summary.add_row("dead letters", f"{result.dead_letters:,}")
    summary.add_row("records put", f"{result.put:,}")
    if result.split_parent:
        summary.add_row("shard split mid-run", result.split_parent)
    summary.add_row("throughput", f"{result.put / result.seconds:,.0f} records/s end to end ({result.seconds:.1f} s)")
    summary.add_row("table equals `processor replay`", "yes" if result.matches_replay else "NO")
    console.print(summary)
    shards = Table("shard", "events", "changes", "writes", "checkpointed at", title="per shard", title_justify="left")
    for shard, entry in sorted(result.per_shard.items()):
        shards.add_row(shard, f"{entry['counters']['events']:,}", f"{entry['counters']['changes']:,}",
                       f"{entry['sink']['writes']:,}", str(entry["sequence"]))
    console.print(shards)
    if args.export:
        console.print(f"export: {args.export}")
    if args.report:
        console.print(f"report: {args.report}")


def run_generate(args: argparse.Namespace) -> int:
    count = write_storm(args.out, StormShape(conversations=args.conversations, seed=args.seed))
    print(f"wrote {count:,} events over {args.conversations:,} conversations to {args.out}")
    return 0


def run_replay(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    if not os.path.exists(args.events):
        raise ValueError(f"events file not found: {args.events}")
    table = args.table or settings.table
    endpoint = args.dynamodb_endpoint or settings.endpoint
    if args.state_dir:
        target = "dry run" if args.dry_run else f"{endpoint} {table}" if endpoint else EPHEMERAL
        bind_state_dir(args.state_dir, args.events, args.shards, settings.adapter, target)
    dead_letter_path = args.dead_letter or _beside(args.export, "dead-letters.jsonl")
    dead_letters = JsonlDeadLetters(dead_letter_path)
    adapter = settings.build_adapter()
    console = Console(stderr=True)
    with _dynamodb(endpoint, args.dry_run) as client:
        if client is None:
            sink = NullSink()
        else:
            ensure_table(client, table)
            sink = DynamoSink(client, table, adapter.derive, settings.retention)
        with _progress(console, args.events, enabled=not args.no_progress) as advance:
            result = replay(read_lines(args.events), adapter, sink, dead_letters, shards=args.shards,
                            state_root=args.state_dir, flush_records=settings.flush_records,
                            retention_seconds=settings.retention_seconds, on_progress=advance)
        exported = export_table(client, table, args.export) if args.export and client is not None else None
    if args.report:
        with open(args.report, "wb") as out:
            out.write(orjson.dumps(result.report(), option=orjson.OPT_INDENT_2) + b"\n")
    _summary(Console(), result, settings, table, exported, args, dead_letters)
    return 0


@contextlib.contextmanager
def _workdir(path: str | None, prefix: str) -> Iterator[Path]:
    """`path` (created if missing and kept), else a temporary directory removed afterwards."""
    if path:
        os.makedirs(path, exist_ok=True)
        yield Path(path)
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as scratch:
        yield Path(scratch)


@contextlib.contextmanager
def _dynamodb(endpoint: str | None, dry_run: bool) -> Iterator[object | None]:
    """A DynamoDB client for `endpoint`; without one, a local emulator for the run's duration."""
    if dry_run:
        yield None
        return
    if endpoint:
        yield dynamodb_client(endpoint)
        return
    log.info("no --dynamodb-endpoint: starting a local DynamoDB emulator")
    with LocalEmulator() as emulator:
        for name, value in LOCAL_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
        yield dynamodb_client(emulator.endpoint, region=LOCAL_ENVIRONMENT["AWS_REGION"])


@contextlib.contextmanager
def _progress(console: Console, path: str, enabled: bool) -> Iterator:
    if not enabled or not console.is_terminal:
        yield None
        return
    with open(path, "rb") as source:
        total = sum(1 for line in source if line.strip())
    columns = (TextColumn("replay"), BarColumn(), MofNCompleteColumn(), TextColumn("events"),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("replay", total=total)
        yield lambda count: progress.advance(task, count)


def _beside(path: str | None, name: str) -> str:
    if path is None:
        return name
    stem, _ = os.path.splitext(path)
    return f"{stem}.{name}"


def _counts_table(title: str, report: dict[str, int]) -> Table:
    """The report's counts as the first rows of a two-column summary; callers add their own rows."""
    summary = Table(title=title, show_header=False, title_justify="left")
    summary.add_column(style="bold")
    summary.add_column(justify="right")
    for name in REPORT_KEYS:
        summary.add_row(name.replace("_", " "), f"{report[name]:,}")
    return summary


def _summary(console: Console, result: ReplayResult, settings: Settings, table: str,
             exported: int | None, args: argparse.Namespace, dead_letters: JsonlDeadLetters) -> None:
    summary = _counts_table(f"processor replay: {args.events}", result.report())
    summary.add_row("skipped", f"{result.counters.skipped:,}")  # committed by an earlier run (--state-dir)
    summary.add_row("write conflicts merged", f"{result.sink.conflicts:,}")
    summary.add_row("throttled and retried", f"{result.sink.throttles:,}")
    summary.add_row("DynamoDB reads", f"{result.sink.reads:,}")
    summary.add_row("shards", str(args.shards))
    summary.add_row("throughput", f"{result.events_per_second:,.0f} events/s in {result.seconds:.1f} s")
    console.print(summary)
    if dead_letters.count:
        console.print(f"dead letters: {dead_letters.count:,} in {dead_letters.path}")
    if exported is not None:
        console.print(f"export: {exported:,} items in {args.export} (table {table})")
    if args.report:
        console.print(f"report: {args.report}")


if __name__ == "__main__":
    sys.exit(main())
