"""The outage case through the real KCL daemon: a backlog put while no worker runs, then drained.

    .venv/bin/python bench/kcl_backlog.py [--records 500000] [--shards 4]

Reports the put rate, the time from worker start to the first checkpoint past TRIM_HORIZON (KCL start-up
and lease taking), and the drain rate until every record is checkpointed, with the engine's and the
sink's counts beside it (summed from the children's EMF metric lines), so the time can be attributed.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from processor.config import Settings
from devstack.demo import Producer, Stack, batches, totals, wait_until_drained
from processor.replay import read_lines
from devstack.storm import StormShape, write_storm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--out", help="write the results as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="kcl-backlog-") as scratch:
        workdir = Path(scratch)
        events = workdir / "storm.jsonl"
        write_storm(str(events), StormShape(conversations=max(1, args.records * 10 // 108), seed=9))
        lines = list(read_lines(str(events)))[: args.records]
        settings = Settings()
        with Stack(workdir, settings, args.shards) as stack:
            producer = Producer(stack.kinesis, settings.build_adapter())
            started = time.perf_counter()
            for batch in batches(iter(lines), 500):
                producer.send(batch)
            put_seconds = time.perf_counter() - started
            print(f"put {producer.put:,} records in {put_seconds:.1f} s ({producer.put / put_seconds:,.0f}/s)", flush=True)

            started = time.perf_counter()
            stack.start_daemon()
            first: list[float] = []

            def tick(checkpoints: dict[str, str]) -> None:
                if not first and any(c.isdigit() for c in checkpoints.values()):
                    first.append(time.perf_counter() - started)

            wait_until_drained(stack, producer, timeout=7200, on_tick=tick)
            total = time.perf_counter() - started
            stack.stop_daemons()  # the children's last EMF lines: the sums are totals now
            counts = totals(stack.shard_metrics())
        startup = first[0] if first else 0.0
        sink = {"writes": counts["Writes"], "reads": counts["Reads"], "conflicts": counts["Conflicts"]}
        results = {"records": producer.put, "shards": args.shards, "put_per_s": round(producer.put / put_seconds),
                   "drain_seconds": round(total, 1), "startup_seconds": round(startup, 1),
                   "drain_per_s_after_startup": round(producer.put / max(total - startup, 1e-9)),
                   "events": counts["Events"], "changes": counts["Changes"],
                   "exact_repeats": counts["ExactRepeats"], "flushes": counts["Flushes"],
                   "dynamodb": sink, "dynamodb_requests_per_s": round((sink["writes"] + sink["reads"]) / max(total - startup, 1e-9))}
        print(json.dumps(results, indent=2))
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
