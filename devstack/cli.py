"""`processor demo` and `processor generate`: the commands the local stack adds to `processor`."""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from devstack.storm import StormShape, write_storm
from devstack.workdir import workdir
from processor.cli.render import counts_table, write_json
from processor.config import load_settings

if TYPE_CHECKING:
    from devstack.demo import DemoResult


def register(commands: argparse._SubParsersAction) -> None:
    from devstack import demo

    parser = commands.add_parser("demo", help="the main job on the embedded local stack, with the real KCL daemon",
                                 description=demo.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", help="JSONL events to put (default: a generated Genesys storm)")
    parser.add_argument("--config", help="settings TOML (adapter, flush, retention)")
    parser.add_argument("--shards", type=int, default=4, help="stream shards (default 4)")
    parser.add_argument("--reshard", action="store_true", help="split a shard half-way through the run")
    parser.add_argument("--conversations", type=int, default=5_000, help="size of the generated storm")
    parser.add_argument("--export", help="write the table's final items here as JSONL")
    parser.add_argument("--export-metrics", help="write the stored metrics here as JSONL, summed over partials: "
                        "one object per cell with any non-zero metric")
    parser.add_argument("--report", help="write the run's counts here as JSON")
    parser.add_argument("--workdir", help="keep logs, state and settings here (default: a temporary directory)")
    parser.add_argument("--arrivals-per-second", type=float, default=StormShape.arrivals_per_second,
                        help="new conversations per second of event time in the generated storm (default "
                        f"{StormShape.arrivals_per_second:g}; lower spreads it over more intervals)")
    parser.add_argument("--wallboard", action="store_true", help="serve the queue wallboard from the start (its "
                        "tiles move as events are processed) and keep it and the stack up after the summary, "
                        "until Ctrl-C")
    parser.add_argument("--wallboard-port", type=int, default=8080, metavar="PORT",
                        help="the wallboard's port on 127.0.0.1 (default 8080; 0: any free one)")
    parser.add_argument("--wallboard-screenshot", metavar="FILE.png", help="save a screenshot of the wallboard "
                        "while the events flow (headless Chromium; the README's picture)")
    parser.set_defaults(run=run_demo)

    generate = commands.add_parser("generate", help="write a realistic Genesys event storm as JSONL")
    generate.add_argument("out", help="JSONL file to write")
    generate.add_argument("--conversations", type=int, default=StormShape.conversations)
    generate.add_argument("--seed", type=int, default=StormShape.seed)
    generate.set_defaults(run=run_generate)


def run_demo(args: argparse.Namespace) -> int:
    from devstack.demo import DemoWallboard, run_demo as demo

    settings = load_settings(args.config)
    console = Console(stderr=True)
    wallboard = None
    if args.wallboard or args.wallboard_screenshot:
        wallboard = DemoWallboard(port=args.wallboard_port, screenshot=args.wallboard_screenshot, keep=args.wallboard)

    def summary(result: DemoResult) -> None:
        if args.report:
            write_json(args.report, result.report())
        _summary(Console(), result, args)

    with workdir(args.workdir, "processor-demo-") as directory:
        events = args.events
        if events is None:
            events = os.path.join(directory, "storm.jsonl")
            shape = StormShape(conversations=args.conversations, arrivals_per_second=args.arrivals_per_second)
            count = write_storm(events, shape)
            console.print(f"generated a Genesys storm: {count:,} events over {args.conversations:,} conversations")
        elif not os.path.exists(events):
            raise ValueError(f"events file not found: {events}")
        result = demo(Path(events), settings, args.shards, args.reshard, directory, console, export=args.export,
                      export_metrics=args.export_metrics, wallboard=wallboard, summary=summary)
    return 0 if result.matches_replay and result.metrics_match_replay else 1


def _summary(console: Console, result: DemoResult, args: argparse.Namespace) -> None:
    from processor.cli.queues import SUMMARY_COLUMNS, queue_table

    summary = counts_table("processor demo: the real KCL daemon on the local stack", result.report())
    summary.add_row("dead letters", f"{result.dead_letters:,}")
    summary.add_row("records put", f"{result.put:,}")
    if result.redelivered:
        summary.add_row("events redelivered after lease moves", f"{result.redelivered:,} (counted again above)")
    if result.split_parent:
        summary.add_row("shard split mid-run", result.split_parent)
    summary.add_row("throughput", f"{result.put / result.seconds:,.0f} records/s end to end ({result.seconds:.1f} s)")
    summary.add_row("table equals `processor replay`", "yes" if result.matches_replay else "NO")
    summary.add_row("metrics equal `processor replay`'s", "yes" if result.metrics_match_replay else "NO")
    console.print(summary)
    console.print(_per_shard(result))
    console.print(queue_table(result.metrics, "per queue, every interval of the run", SUMMARY_COLUMNS))
    if args.export:
        console.print(f"export: {args.export}")
    if args.export_metrics:
        console.print(f"metrics: {args.export_metrics}")
    if args.report:
        console.print(f"report: {args.report}")


def _per_shard(result: DemoResult) -> Table:
    """Counts from the shards' EMF lines; checkpoints from the lease table."""
    shards = Table("shard", "events", "changes", "writes", "checkpointed at", title="per shard", title_justify="left")
    for shard in sorted(set(result.per_shard) | set(result.checkpoints)):
        metrics = result.per_shard.get(shard, {})
        shards.add_row(shard, *(f"{metrics.get(name, 0):,}" for name in ("Events", "Changes", "Writes")),
                       result.checkpoints.get(shard) or "-")
    return shards


def run_generate(args: argparse.Namespace) -> int:
    count = write_storm(args.out, StormShape(conversations=args.conversations, seed=args.seed))
    print(f"wrote {count:,} events over {args.conversations:,} conversations to {args.out}")
    return 0
