"""One system of the benchmark in its own process, so its peak RSS is its own.

    python -m bench.system NAME --events F --sorted-events F --endpoint URL --workdir D --out R
    python -m bench.system curve --conversations N --workdir D --out R

Prints nothing; writes its result (seconds, CPU seconds, its own peak RSS, and the peers' acknowledged
writes) as JSON to R.
"""
from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import urlparse

import orjson

from bench import METRICS_PEERS, PEERS, metrics_table_of
from bench.cpu import cpu_window
from bench.ours import SHARDS, run_catchup, run_kcl, run_live
from bench.peers import PEER_CLASSES, consume
from processor.config import Settings
from processor.deadletters import JsonlDeadLetters
from devstack.emulator import LocalEmulator
from processor.replay import read_lines, replay
from processor.dynamodb.sink import NullSink
from processor.dynamodb.client import dynamodb_client
from processor.runtime import compiled_modules, tune_gc
from devstack.storm import StormShape, storm


def table_of(system: str) -> str:
    return f"bench-{system}"


def run_system(system: str, events: str, sorted_events: str, endpoint: str, workdir: Path) -> dict[str, Any]:
    settings = Settings(table=table_of(system), dead_letter_table=f"{table_of(system)}-dead-letters",
                        metrics_table=metrics_table_of(table_of(system)))
    client = dynamodb_client(endpoint, region="us-east-1")
    if system in PEERS:
        options = {"analytics": settings.analytics} if system in METRICS_PEERS else {}
        peer = PEER_CLASSES[system](client, table_of(system), **options)
        peer.setup()
        with cpu_window() as window:
            retried = consume(peer, read_lines(events), settings.build_adapter())
        return {"seconds": window.seconds, "cpu_seconds": window.cpu_seconds, "retried": retried, "writes": peer.writes}
    if system == "this_live":
        return run_live(sorted_events, client, table_of(system), settings, workdir)
    if system == "this_catchup":
        return run_catchup(events, client, table_of(system), settings, workdir)
    if system == "this_kcl":
        return run_kcl(events, LocalEmulator(port=urlparse(endpoint).port), settings, workdir)
    raise SystemExit(f"unknown system {system!r}")


def run_curve_point(conversations: int, workdir: Path) -> dict[str, Any]:
    """this_catchup's engine (RocksDB included, DynamoDB left out) over a storm of `conversations`,
    generated on the fly; the generator's own time is measured and left out of the rate."""
    generating = [0.0]

    def timed(lines: Iterator[bytes]) -> Iterator[bytes]:
        while True:
            started = time.perf_counter()
            line = next(lines, None)
            generating[0] += time.perf_counter() - started
            if line is None:
                return
            yield line

    settings = Settings()
    result = replay(timed(storm(StormShape(conversations=conversations, seed=11))), settings.build_adapter(),
                    NullSink(), JsonlDeadLetters(str(workdir / "curve-dead-letters.jsonl")), shards=SHARDS,
                    state_root=str(workdir / f"curve-{conversations}"), retention_seconds=settings.retention_seconds)
    return {"conversations": conversations, "events": result.counters.events,
            "seconds": result.seconds - generating[0], "generator_seconds": generating[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("system")
    parser.add_argument("--events")
    parser.add_argument("--sorted-events")
    parser.add_argument("--endpoint")
    parser.add_argument("--conversations", type=int)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    tune_gc()  # the collector as every `processor` command sets it; the peers get the same, for a fair race
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if args.system == "curve":
        result = run_curve_point(args.conversations, workdir)
    else:
        result = run_system(args.system, args.events, args.sorted_events, args.endpoint, workdir)
    Path(args.out).write_bytes(orjson.dumps({**result, "own_peak_rss_mb": own_peak_rss_mb(),
                                             "compiled_modules": len(compiled_modules())}))


def own_peak_rss_mb() -> float:
    """This process's peak RSS in MiB: the high-water mark of its own memory (Linux's VmHWM).

    Not getrusage's ru_maxrss, which a parent's `wait4` also reports: Linux starts a child's maxrss
    at its parent's RSS when it was spawned (the address space exec replaced), so a system smaller
    than the benchmark process running it was reported at the benchmark's size."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # no /proc: kilobytes on Linux and BSD


if __name__ == "__main__":
    main()
