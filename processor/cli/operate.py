"""`processor status | reprocess | inspect`: the deployment's shards and conversations, for
operators (`processor.operate` does the work; this module parses and prints)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from processor.config import load_settings
from processor.daemon import read_properties
from processor.dynamodb.client import dynamodb_client
from processor.operate import OperateError

COMMANDS = {
    "status": "per shard: lease owner, checkpoint, parent/children, lag behind the stream tip",
    "reprocess": "with the application stopped, move checkpoints back so the next start replays",
    "inspect": "one conversation: its DynamoDB item and local state, bookkeeping decoded, every value masked but "
               "the adapter's known non-PII fields and [inspect] show",
}


def register(commands: argparse._SubParsersAction) -> None:
    for name, helptext in COMMANDS.items():
        parser = commands.add_parser(name, help=helptext, description=helptext)
        parser.add_argument("--properties", default="kcl.properties",
                            help="the deployment's KCL properties: stream, application, region (default ./kcl.properties)")
        parser.add_argument("--endpoint", help="Kinesis and DynamoDB endpoint (the local stack)")
        parser.set_defaults(run={"status": run_status, "reprocess": run_reprocess, "inspect": run_inspect}[name])
        if name == "reprocess":
            parser.add_argument("--from", dest="start", required=True, metavar="TIMESTAMP|TRIM_HORIZON",
                                help="replay from this ISO-8601 time, or from the oldest record")
            parser.add_argument("--shard", help="only this shard (default: every leased shard)")
            parser.add_argument("--force", action="store_true", help="move checkpoints even while leases are being "
                                "renewed (workers running): they may overwrite the move")
            parser.add_argument("--state-dir", help="also clear these shards' local state under this directory "
                                "(a worker's disk; ECS task disks go with the tasks)")
            parser.add_argument("--watch-seconds", type=float, help="how long to watch leases for renewals "
                                "(default: failoverTimeMillis from the properties)")
        if name == "inspect":
            parser.add_argument("conversation_id")
            parser.add_argument("--config", help="settings TOML (table, state_dir, adapter, [inspect])")
            parser.add_argument("--state-dir", help="local state to look in (default from settings)")


def deployment(args: argparse.Namespace) -> tuple[dict[str, str], Any, Any]:
    """The properties and Kinesis and DynamoDB clients the operating commands work with
    (credentials from the standard provider chain)."""
    import boto3

    if not os.path.exists(args.properties):
        raise ValueError(f"properties file not found: {args.properties} (pass --properties)")
    properties = read_properties(Path(args.properties))
    missing = [key for key in ("streamName", "applicationName") if not properties.get(key)]
    if missing:
        raise ValueError(f"{args.properties} lacks {' and '.join(missing)}")
    region = properties.get("regionName") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise ValueError(f"no region: set regionName in {args.properties} or AWS_REGION")
    kinesis = boto3.client("kinesis", endpoint_url=args.endpoint, region_name=region)
    return properties, kinesis, dynamodb_client(args.endpoint, region=region)


def run_status(args: argparse.Namespace) -> int:
    from processor.operate import shard_status

    properties, kinesis, dynamodb = deployment(args)
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

    from processor.operate import parse_time

    if args.start != "TRIM_HORIZON":
        parse_time(args.start)  # a mistyped time is refused before the wait below
    properties, kinesis, dynamodb = deployment(args)
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

    _, _, dynamodb = deployment(args)
    settings = load_settings(args.config)
    shown = shown_fields(settings.build_adapter().public_fields, settings.inspect_show, settings.inspect_mask)
    found = inspect(args.conversation_id, dynamodb, settings.table, args.state_dir or settings.state_dir,
                    settings.retention_seconds, shown=shown)
    print(json.dumps(found, indent=2, default=str, ensure_ascii=False))  # exact integers of any size
    return 0 if "dynamodb" in found or found["local"] else 1
