"""`processor bench`: the comparison's measurements detect what they claim to, and the command
writes its JSON, chart and README section."""
from __future__ import annotations

import base64
import json
import subprocess
import sys

import pytest

from bench.checks import history_checks, ledger_checks, table_checks
from bench.report import BEGIN, END
from bench.workload import Delivery, truth
from devstack.emulator.meter import write_units
from processor.model import Register

METRICS = {"events_per_s", "ddb_requests_per_1k", "ddb_reads_per_1k", "ddb_writes_per_1k", "wcu_per_1k",
           "leaked_duplicates", "lost_updates", "stale_overwrites", "mismatches", "peak_rss_mb"}


def delivery(index: int, stamp: int, value: str, duplicate: bool = False, key: int | None = None) -> Delivery:
    return Delivery(index, b"", {}, "c1", key if key is not None else stamp, stamp, {"queueId": Register(stamp, value)},
                    duplicate)


def put(stamps: dict[str, int], keys: list[int], values: dict[str, str]) -> dict:
    """A conversation item as the DynamoDB wire carries it."""
    item = {"conversationId": {"S": "c1"}, "version": {"N": "1"},
            "_t": {"M": {name: {"N": str(stamp)} for name, stamp in stamps.items()}},
            "_k": {"B": base64.b64encode(b"".join(k.to_bytes(8, "big") for k in keys)).decode()}}
    item.update({name: {"S": value} for name, value in values.items()})
    return item


def test_history_checks_find_stale_overwrites_and_writes_no_new_event_caused():
    history = [put({"queueId": 10}, [1], {"queueId": "q1"}),
               put({"queueId": 20}, [1, 2], {"queueId": "q2"}),
               put({"queueId": 20}, [1, 2], {"queueId": "q2"}),  # nothing new: a leaked duplicate
               put({"queueId": 10}, [1, 2, 3], {"queueId": "q1"})]  # an older value back: stale
    counts = history_checks(history)
    assert (counts.leaked_duplicates, counts.stale_overwrites) == (1, 1)


def test_ledger_checks_attribute_writes_to_the_deliveries_that_caused_them():
    deliveries = [delivery(0, 20, "q2"), delivery(1, 10, "q1"), delivery(2, 20, "q2", duplicate=True, key=20)]
    counts = ledger_checks(deliveries, [(0, ["queueId"]), (1, ["queueId"]), (2, ["queueId"])])
    assert (counts.leaked_duplicates, counts.stale_overwrites) == (1, 1)


def test_table_checks_count_lost_events_and_mismatched_conversations():
    deliveries = [delivery(0, 10, "q1"), delivery(1, 20, "q2")]
    facts = truth(deliveries)
    assert table_checks(facts, deliveries, {"c1": {"queueId": "q2"}}) == {"mismatches": 0, "lost_updates": 0}
    assert table_checks(facts, deliveries, {"c1": {"queueId": "q1"}}) == {"mismatches": 1, "lost_updates": 1}
    assert facts.projection_changes == 2


def test_write_units_are_billed_per_started_kilobyte():
    assert [write_units(n) for n in (0, 1, 1024, 1025, 4096)] == [1, 1, 1, 2, 4]


@pytest.mark.server
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
    assert set(systems) == {"naive", "check_then_write", "timestamp_condition", "powertools", "this_live",
                            "this_catchup"}
    assert all(METRICS <= set(row) for row in systems.values())
    floor = results["floor_writes_per_1k"]
    for ours in ("this_live", "this_catchup"):
        row = systems[ours]
        assert (row["leaked_duplicates"], row["lost_updates"], row["stale_overwrites"], row["mismatches"]) == (0, 0, 0, 0)
        assert row["ddb_writes_per_1k"] <= floor  # no write beyond a real projection change
    # the measurements see the failure modes they exist for
    assert systems["naive"]["leaked_duplicates"] > 0 and systems["naive"]["stale_overwrites"] > 0
    assert systems["powertools"]["leaked_duplicates"] > 0  # re-emits carry a new EventBridge id
    assert systems["timestamp_condition"]["lost_updates"] > 0  # late and same-millisecond events dropped
    assert systems["check_then_write"]["ddb_reads_per_1k"] == pytest.approx(1000, rel=0.01)
    assert systems["powertools"]["ddb_requests_per_1k"] >= 4 * systems["this_live"]["ddb_requests_per_1k"]
    assert systems["powertools"]["ddb_requests_per_1k"] >= 15 * systems["this_catchup"]["ddb_requests_per_1k"]
    assert [point["conversations"] for point in results["curve"]] == [1_000, 3_000]
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = readme.read_text()
    assert "old" not in text and "| this_catchup |" in text and text.endswith(f"{END}\nafter\n")
