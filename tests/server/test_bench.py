"""`processor bench` as an operator runs it: every system measured against the same local DynamoDB,
and the command writes its JSON, chart and README section. The measurements alone:
tests/unit/test_bench_checks.py."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.report import BEGIN, END
from bench.run import run_process
from bench.side_by_side import run_side_by_side
from devstack.storm import StormShape, write_storm

METRICS = {"events_per_s", "ddb_requests_per_1k", "ddb_reads_per_1k", "ddb_writes_per_1k", "wcu_per_1k",
           "leaked_duplicates", "lost_updates", "stale_overwrites", "mismatches", "cells_wrong",
           "hottest_key_writes_per_s", "hottest_key_writes_per_flush", "peak_rss_mb", "cpu_s", "events_per_cpu_s"}


def test_processor_bench_measures_every_system_and_writes_json_chart_and_readme(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Results\n{BEGIN}\nold\n{END}\nafter\n")
    out = tmp_path / "results.json"
    result = subprocess.run([sys.executable, "-m", "processor.cli", "bench", "--quick", "--conversations", "40", "--curve", "1000,3000",
                             "--out", str(out), "--readme", str(readme), "--workdir", str(tmp_path / "work")],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = json.loads(out.read_text())
    systems = results["systems"]
    assert set(systems) == {"naive", "check_then_write", "timestamp_condition", "powertools", "add_per_event",
                            "this_live", "this_catchup"}
    assert all(METRICS <= set(row) for row in systems.values())
    for row in systems.values():  # CPU: the system's own, over its run (no more than its cores could give)
        assert 0 < row["cpu_s"] <= row["seconds"] * os.cpu_count() + 0.1
        assert row["events_per_cpu_s"] == pytest.approx(results["events"] / row["cpu_s"], rel=0.02, abs=1)
    floor, with_aggregates = results["floor_writes_per_1k"], results["floor_plus_aggregates_writes_per_1k"]
    assert floor <= with_aggregates and results["metrics_cells"] > 0
    for ours in ("this_live", "this_catchup"):
        row = systems[ours]
        assert (row["leaked_duplicates"], row["lost_updates"], row["stale_overwrites"], row["mismatches"]) == (0, 0, 0, 0)
        assert row["cells_wrong"] == 0  # every cell of every kind, exactly (I12)
        assert row["hottest_key_writes_per_flush"] == 1  # metrics written, each key once per flush of one shard (I13)
        assert row["ddb_writes_per_1k"] <= with_aggregates  # no write beyond a real projection or session change
    # the metrics Lambda counts every duplicate again, on one hot item per queue and interval
    peer = systems["add_per_event"]
    assert peer["cells_wrong"] > 0 and peer["hottest_key_writes_per_s"] >= 1
    assert peer["hottest_key_writes_per_flush"] is None and peer["mismatches"] is None
    assert all(systems[name]["cells_wrong"] is None for name in ("naive", "check_then_write", "timestamp_condition",
                                                                  "powertools"))
    # the measurements see the failure modes they exist for
    assert systems["naive"]["leaked_duplicates"] > 0 and systems["naive"]["stale_overwrites"] > 0
    assert systems["powertools"]["leaked_duplicates"] > 0  # re-emits carry a new EventBridge id
    assert systems["timestamp_condition"]["lost_updates"] > 0  # late and same-millisecond events dropped
    assert systems["check_then_write"]["ddb_reads_per_1k"] == pytest.approx(1000, rel=0.01)
    # with the metrics on, a live flush per second writes each changed conversation (its transaction
    # carries the metric deltas): the live target is the floor plus the aggregates (above); 40
    # conversations leave a 1 s flush little to batch
    assert systems["powertools"]["ddb_requests_per_1k"] >= 3 * systems["this_live"]["ddb_requests_per_1k"]
    assert systems["powertools"]["ddb_requests_per_1k"] >= 15 * systems["this_catchup"]["ddb_requests_per_1k"]
    assert [point["conversations"] for point in results["curve"]] == [1_000, 3_000]
    compiled = results["compiled"]  # the image's engine against the sources (tests/server/test_compiled.py)
    assert compiled["compiled_modules"] > 0 and compiled["reports_equal"] is True and compiled["ratio"] > 0
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = readme.read_text()
    assert "old" not in text and "| this_catchup |" in text and text.endswith(f"{END}\nafter\n")
    assert "| add_per_event |" in text and "cells wrong" in text and "hot key w/flush" in text
    assert "| CPU s | events/CPU-s |" in text and "CPU targets (events per CPU-second" in text
    assert "run the image's wheel, built here, as production does" in text
    assert results["ours_compiled_modules"] == compiled["compiled_modules"] > 0
    assert {system: row["compiled_modules"] for system, row in systems.items()} == {
        system: compiled["compiled_modules"] if system.startswith("this_") else 0 for system in systems}


def test_a_system_s_peak_rss_is_its_own_not_the_benchmark_process_s(tmp_path):
    """Linux starts a child's ru_maxrss at its parent's RSS: every system smaller than the benchmark
    process (the peers, a 1,000-conversation curve point) was reported at the benchmark's size."""
    ballast = b"\x01" * (300 * 2**20)  # written, so resident (zeros from calloc would only be reserved)
    point, peak_rss_mb = run_process(["curve", "--conversations", "20"], tmp_path)
    assert point["events"] > 0 and "own_peak_rss_mb" not in point
    assert 20 < peak_rss_mb < 250


def test_two_checkouts_run_side_by_side_over_the_same_file_and_agree(tmp_path):
    """bench/side_by_side.py: how issue 12's before/after ratios are measured on a noisy VM."""
    events = str(tmp_path / "storm.jsonl")
    write_storm(events, StormShape(conversations=30, seed=3))
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    results = run_side_by_side({"before": (here, events, 2), "after": (here, events, 1)}, shards=2)
    assert len(results["before"]["rates"]) == 2 and len(results["after"]["rates"]) == 1
    assert all(results[side]["peak_rss_mb"] > 20 for side in ("before", "after"))
    assert all(rate > 0 for side in results.values() for rate in side["rates"])
    assert results["before"]["report"] == results["after"]["report"] and results["after"]["report"]["events"] > 0
