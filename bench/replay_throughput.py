"""Replay throughput and memory: the engine alone (dry run) and with DynamoDB writes (local emulator).

    .venv/bin/python bench/replay_throughput.py [--conversations N] [--curve 10000,40000,160000]

Each configuration runs `processor replay` in its own process, so its peak RSS is its own
(`wait4`), and both are measured in the same run, side by side, on the same file.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devstack.emulator import LocalEmulator
from devstack.storm import StormShape, write_storm


PROCESSOR = [sys.executable, "-m", "processor.cli"]


def run(args: list[str]) -> dict:
    """Run `processor replay ARGS`; its report plus wall seconds and peak RSS (MiB)."""
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "report.json"
        started = time.perf_counter()
        process = subprocess.Popen([*PROCESSOR, "replay", *args, "--no-progress", "--report", str(report)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=LocalEmulator.environment())
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"replay failed: {process.stderr.read().decode()[-2000:]}")
        counts = json.loads(report.read_text())
    return {**counts, "seconds": round(seconds, 2), "events_per_s": round(counts["events"] / seconds),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


def storm_file(directory: Path, conversations: int) -> Path:
    path = directory / f"storm-{conversations}.jsonl"
    if not path.exists():
        write_storm(str(path), StormShape(conversations=conversations, seed=42))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=93_000, help="~10.8 events each (default ~1M events)")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--curve", default="10000,40000,160000", help="conversation counts for the RSS curve")
    parser.add_argument("--skip-dynamodb", action="store_true")
    parser.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "processor-bench"))
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    data = Path(args.data)
    data.mkdir(parents=True, exist_ok=True)

    events = storm_file(data, args.conversations)
    results = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
               "file": str(events), "shards": args.shards}
    results["engine_only"] = run([str(events), "--shards", str(args.shards), "--dry-run"])
    print("engine only (dry run):", results["engine_only"], flush=True)
    if not args.skip_dynamodb:
        # The emulator runs beside, not under, the measured process: its memory is not the replay's.
        with LocalEmulator() as emulator:
            results["with_dynamodb"] = run([str(events), "--shards", str(args.shards),
                                            "--dynamodb-endpoint", emulator.endpoint, "--create-table"])
        print("with DynamoDB writes (local emulator):", results["with_dynamodb"], flush=True)
    results["rss_curve"] = []
    for conversations in (int(n) for n in args.curve.split(",") if n):
        point = run([str(storm_file(data, conversations)), "--shards", str(args.shards), "--dry-run"])
        point["conversations_generated"] = conversations
        results["rss_curve"].append(point)
        print(f"curve {conversations:>8,} conversations:", point, flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
