"""The engine of two checkouts side by side: `processor replay --dry-run` in each, at the same time.

    .venv/bin/processor generate --conversations 9262 --seed 42 /tmp/storm.jsonl
    git worktree add /tmp/before <revision>
    .venv/bin/python bench/side_by_side.py /tmp/storm.jsonl /tmp/before . [--rounds 7] [--shards 1]
        [--after-events /tmp/storm-1m.jsonl --after-rounds 1]

A shared VM swings by ±40 % between two runs of the same code, so a before/after figure taken at
different times says little. Here both checkouts run at once, one process each (one per core on a
two-core machine), over the same file, so both see the same machine; each replays the file
`--rounds` times in-process (the dry run's engine and RocksDB, no DynamoDB) and times each round
by its own CPU seconds. Prints each side's events per CPU-second and peak RSS, the ratio of
medians and of bests, and whether the two reports agree (they must, for the same file and shard count).
`--after-events` gives the second checkout another file (a goal such as "a 1M-event storm at
1.25x the 100k storm's rate before"); its rounds then default to one.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

#: run inside each checkout (PYTHONPATH): only what every revision of the replay API has had
ROUNDS_CODE = r"""
import json, resource, sys, tempfile, time
try:
    from processor.runtime import tune_gc
except ImportError:  # before the collector was tuned
    tune_gc = None
from processor.adapters.genesys import GenesysAdapter
from processor.deadletters import JsonlDeadLetters
from processor.dynamodb.sink import NullSink
from processor.replay import read_lines, replay

path, rounds, shards = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lines = list(read_lines(path))
if tune_gc is not None:
    tune_gc()
rates, report = [], None
with tempfile.TemporaryDirectory() as scratch:
    for round_ in range(rounds):
        letters = JsonlDeadLetters(f"{scratch}/dead-letters-{round_}.jsonl")
        started = time.process_time()
        result = replay(lines, GenesysAdapter(), NullSink(), letters, shards=shards)
        rates.append(len(lines) / (time.process_time() - started))
        report = result.report()
peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"rates": rates, "report": report, "peak_rss_mb": peak_rss_mb}))
"""


def run_side_by_side(sides: dict[str, tuple[str, str, int]], shards: int) -> dict[str, dict]:
    """`sides`: name -> (checkout, events file, rounds). Start one process per side at once; each
    side's rates and report."""
    processes = {name: subprocess.Popen([sys.executable, "-c", ROUNDS_CODE, events, str(rounds), str(shards)],
                                        cwd=root, env={**os.environ, "PYTHONPATH": os.path.abspath(root)},
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for name, (root, events, rounds) in sides.items()}
    results = {}
    for name, process in processes.items():
        out, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"{name} ({sides[name][0]}) failed:\n{err[-3000:]}")
        results[name] = json.loads(out.strip().splitlines()[-1])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("events", help="an events file (processor generate)")
    parser.add_argument("before", help="the checkout measured first (e.g. a git worktree of the old revision)")
    parser.add_argument("after", help="the checkout compared with it")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--after-events", help="another events file for the second checkout")
    parser.add_argument("--after-rounds", type=int, help="its rounds (default: --rounds, or 1 with --after-events)")
    args = parser.parse_args()
    for checkout in (args.before, args.after):
        if not (Path(checkout) / "processor" / "replay.py").exists():
            raise SystemExit(f"{checkout} is not a checkout of this project (no processor/replay.py)")
    after_rounds = args.after_rounds or (1 if args.after_events else args.rounds)
    results = run_side_by_side({"before": (args.before, args.events, args.rounds),
                                "after": (args.after, args.after_events or args.events, after_rounds)}, args.shards)
    before, after = results["before"]["rates"], results["after"]["rates"]
    for name, rates in (("before", before), ("after", after)):
        print(f"{name:6s} events per CPU-second: {' '.join(f'{rate:,.0f}' for rate in rates)}; "
              f"peak RSS {results[name]['peak_rss_mb']:,.1f} MB")
    print(f"median {statistics.median(before):,.0f} -> {statistics.median(after):,.0f}: "
          f"{statistics.median(after) / statistics.median(before):.2f}x; "
          f"best {max(before):,.0f} -> {max(after):,.0f}: {max(after) / max(before):.2f}x; "
          + ("reports of different files" if args.after_events else
             f"reports {'equal' if results['before']['report'] == results['after']['report'] else 'DIFFER'}"))


if __name__ == "__main__":
    main()
