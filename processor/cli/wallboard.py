"""`processor wallboard`: the queue wallboard, a read-only web page over the metrics table.

One tile per queue and media type (waiting and interacting now; offered, answered and abandoned in
the current interval, the newest with metrics; service level against the queue's target; ASA; AHT;
a trend of the intervals before), refreshed every 2 s in place. Binds to loopback unless told
otherwise: exposed, it belongs behind an authenticating proxy or load balancer (README: Wallboard).
"""
from __future__ import annotations

import argparse
import sys

from processor.cli.queues import add_table_arguments, open_reader
from processor.config import load_settings

DESCRIPTION = ("the queue wallboard: a web page of live tiles per queue and media type, read-only from the "
               "metrics table")
DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8080


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("wallboard", help=DESCRIPTION, description=DESCRIPTION + ". Ctrl-C stops it.")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}: this "
                        "machine only; anything else needs an authenticating proxy in front, see the README)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free one)")
    add_table_arguments(parser, config="settings TOML (metrics table, endpoint, interval_minutes, [queues] names, "
                        "service-level targets)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # here, not at the top: processor.wallboard reads through processor.cli.queues, whose package
    # imports this module
    from processor.wallboard.server import BoardReader, BoardSource, WallboardServer

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be 0 to 65535 (0: any free port): {args.port}")
    settings = load_settings(args.config)
    reader, table = open_reader(args, settings)
    read = BoardReader(reader, settings, table)
    read()  # a table of another interval width, or no metrics table at all, is refused now, not every poll
    try:
        server = WallboardServer(args.host, args.port, BoardSource(read, table))
    except OSError as error:
        raise ValueError(f"cannot listen on {args.host}:{args.port} (--host, --port): "
                         f"{error.strerror or error}") from None
    if not server.loopback:
        print(f"processor: warning: the wallboard listens on {server.url} without authentication: put it behind "
              "an authenticating proxy or load balancer (README: Wallboard)", file=sys.stderr)
    try:  # from the URL on: whoever read it may press Ctrl-C
        print(f"wallboard: {server.url} (metrics table {table}); Ctrl-C to stop", flush=True)
        server.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
