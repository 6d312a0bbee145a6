"""The `processor` command: one subcommand per job, grouped by who runs it.

    processor kcl | daemon                      the container: the KCL child, the MultiLangDaemon
    processor replay EVENTS.jsonl [...]          operators: re-run a captured file after an outage
    processor status | reprocess | inspect      operators: the deployment's shards and conversations
    processor queues [...]                      operators: per-queue metrics from the metrics table
    processor wallboard [...]                   supervisors: the live queue wallboard (a web page)
    processor demo | generate                   the local stack (a development checkout: devstack)
    processor bench                             the benchmark (a development checkout: bench)

Each group's module adds its parsers (`register`); the development groups are absent from the
production image, where their commands say so instead of failing to import.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Sequence

from botocore.exceptions import BotoCoreError, ClientError

from processor.cli import daemon, operate, queues, replay, wallboard
from processor.daemon import DaemonError
from processor.dynamodb.retry import GaveUp
from processor.operate import OperateError
from processor.runtime import tune_gc
from processor.store import StoreFormatError

#: command groups of a development checkout: module -> the commands it adds
DEVELOPMENT_GROUPS = {"devstack.cli": ("demo", "generate"), "bench.cli": ("bench",)}
#: what a command may fail with that the user can act on: reported in one line, exit 2 (botocore's
#: errors too: no region or credentials, an endpoint that does not answer, a table or stream not there)
USER_ERRORS = (ValueError, GaveUp, OSError, OperateError, DaemonError, StoreFormatError, BotoCoreError, ClientError)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "absent", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    logging.basicConfig(level=os.environ.get("PROCESSOR_LOG_LEVEL", "INFO"), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tune_gc()
    try:
        return args.run(args)
    except USER_ERRORS as error:
        print(f"processor: error: {error}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="processor", description=(
        "Conversation-state stream processor: contact-center events to the state changes that matter."))
    commands = parser.add_subparsers(dest="command", required=True)
    for group in (daemon, replay, operate, queues, wallboard):
        group.register(commands)
    for module, names in DEVELOPMENT_GROUPS.items():
        try:
            importlib.import_module(module).register(commands)
        except ImportError:
            for name in names:
                _absent(commands, name, module.split(".")[0])
    return parser


def _absent(commands: argparse._SubParsersAction, name: str, package: str) -> None:
    def refuse(args: argparse.Namespace) -> int:
        raise ValueError(f"`processor {name}` is part of the development checkout ({package}), which this "
                         "installation does not have: clone the repository and run ./dev")

    parser = commands.add_parser(name, help=f"(development checkout only: {package})", add_help=False)
    parser.set_defaults(run=refuse, absent=True)  # whatever its arguments: the answer is the same
