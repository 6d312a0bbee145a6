"""`processor kcl` (the MultiLangDaemon's child, one per shard lease) and `processor daemon` (the
container's command: render the properties, then become the daemon)."""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    daemon = commands.add_parser("daemon", help="run the KCL MultiLangDaemon (the container's command)",
                                 description="Render the properties with the stream, application and region from "
                                 "KCL_STREAM_NAME, KCL_APPLICATION_NAME and AWS_REGION, then become the "
                                 "MultiLangDaemon (exec), so SIGTERM reaches it directly.")
    daemon.add_argument("--properties", default="kcl.properties", help="KCL properties (default ./kcl.properties)")
    daemon.add_argument("--rendered", default=os.path.join(tempfile.gettempdir(), "processor-kcl.properties"),
                        help="where to write the rendered properties")
    daemon.add_argument("--dry-run", action="store_true", help="print the properties and command, run nothing")
    daemon.set_defaults(run=run_daemon)

    kcl = commands.add_parser("kcl", help="the KCL MultiLangDaemon child (executableName in kcl.properties)")
    kcl.add_argument("--config", help="settings TOML")
    kcl.set_defaults(run=run_kcl)


def run_daemon(args: argparse.Namespace) -> int:
    from processor.daemon import daemon_command, deployed_properties, java

    if not os.path.exists(args.properties):
        raise ValueError(f"properties file not found: {args.properties}")
    rendered = deployed_properties(Path(args.properties), os.environ)
    command = daemon_command(Path(args.rendered))
    if args.dry_run:  # shows what would run, writes and needs nothing
        print(rendered + "\n" + " ".join(command))
        return 0
    Path(args.rendered).write_text(rendered)
    os.execv(java(), command)  # the daemon takes this process's place (PID under tini)


def run_kcl(args: argparse.Namespace) -> int:
    try:
        from processor.kcl import run_child  # needs amazon_kclpy, which replay does not
    except ImportError as missing:
        raise ValueError(f"the KCL child needs amazon_kclpy ({missing.name} is missing): pip install amazon-kclpy") from None
    return run_child(args.config)
