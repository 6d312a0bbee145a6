"""The shard's CloudWatch EMF lines: deltas once an interval and at the stop, and the local stack
reading its progress and totals back from the daemon's log (and polling the leases through a busy
emulator)."""
from __future__ import annotations

import io
import json
from collections import Counter
from types import SimpleNamespace

from botocore.exceptions import ReadTimeoutError

from devstack import demo
from devstack.demo import ShardMetrics, report_of, totals
from processor.metrics import COUNTER_METRICS, FlushMetrics
from processor.replay import REPORT_KEYS


def test_flush_metrics_are_deltas_written_once_an_interval_and_when_the_shard_stops():
    out, now = io.StringIO(), [0.0]
    metrics = FlushMetrics("shardId-000000000001", interval_seconds=60, out=out, clock=lambda: now[0])
    totals = {"Events": 0, "ExactRepeats": 0, "NoopsCollapsed": 0, "Writes": 0, "Throttles": 0, "DeadLetters": 0}
    for second in range(0, 121):
        now[0] = float(second)
        totals = {name: value + 2 for name, value in totals.items()}
        metrics.record(totals, flush_latency_ms=3.0, millis_behind_latest=500)
    now[0] = 130.0
    metrics.record({name: value + 1 for name, value in totals.items()}, 4.0, 0, final=True)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(lines) == 3  # after 60 s, after 120 s, and at the stop
    assert sum(line["Events"] for line in lines) == 243
    assert [line["ShardSeconds"] for line in lines] == [60.0, 60.0, 10.0]
    assert len(lines[0]["FlushLatency"]) == 61 and lines[-1]["MillisBehindLatest"] == 0
    assert {m["Name"] for m in lines[0]["_aws"]["CloudWatchMetrics"][0]["Metrics"]} == set(lines[0]) - {"_aws", "ShardId"}


def emf(shard: str, **deltas: int) -> str:
    return json.dumps({"_aws": {"Timestamp": 0, "CloudWatchMetrics": []}, "ShardId": shard, **deltas})


def test_the_local_stack_sums_each_shards_lines_once_and_only_its_own(tmp_path):
    """The daemon writes each child stderr line twice (raw, and wrapped in a log message): only the
    raw one counts; an earlier run's lines in a reused log are not this run's; a half-written line
    waits for its end."""
    log = tmp_path / "worker-1.log"
    log.write_text(emf("shardId-0", Events=100) + "\n")  # an earlier run
    metrics = ShardMetrics()
    metrics.follow(log)
    with open(log, "a") as out:
        out.write(emf("shardId-0", Events=3, Changes=2, Writes=1) + "\n")
        out.write("2026-11-26 INFO Received error line from subprocess [" + emf("shardId-0", Events=3) + "] for shard\n")
        out.write("not json at all\n" + emf("shardId-1", Events=5, Stale=1) + "\n")
        out.write(emf("shardId-0", Events=4)[:20])  # still being written
    first = metrics.read()
    assert first["shardId-0"]["Events"] == 3 and first["shardId-1"]["Events"] == 5
    with open(log, "a") as out:
        out.write(emf("shardId-0", Events=4)[20:] + "\n")
    summed = totals(metrics.read())
    assert summed["Events"] == 12 and summed["Changes"] == 2
    report = report_of(summed, conversations=7)
    assert list(report) == list(REPORT_KEYS) and report["events"] == 12 and report["stale"] == 1
    assert report["conversations"] == 7 and set(COUNTER_METRICS) >= set(REPORT_KEYS) - {"writes"}


def test_the_demo_waits_on_through_a_poll_the_busy_emulator_did_not_answer_in_time(monkeypatch):
    """The emulator serves one request at a time; while the children flush, a progress poll can wait
    past the client's read timeout. That once ended the demo with 'Read timeout on endpoint URL'."""
    answers = iter([ReadTimeoutError(endpoint_url="http://127.0.0.1:1/"), {"shardId-000000000000": "7"}])

    def lease_checkpoints(dynamodb):
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(demo, "lease_checkpoints", lease_checkpoints)
    monkeypatch.setattr(demo, "closed_shards", lambda kinesis: {})
    monkeypatch.setattr(demo.time, "sleep", lambda seconds: None)
    stack = SimpleNamespace(dynamodb=None, kinesis=None, daemons=[SimpleNamespace(alive=lambda: True)])
    producer = demo.Producer(kinesis=None, adapter=None, last_sequence={"shardId-000000000000": 7})
    seen: list[dict[str, str]] = []
    demo.wait_until_drained(stack, producer, timeout=60, on_tick=seen.append)
    assert seen == [{"shardId-000000000000": "7"}]


def test_a_split_parent_whose_lease_kcl_cleaned_up_counts_as_drained_once_a_child_checkpointed():
    """KCL deletes a finished parent's lease once its children moved on: a slow drain never saw it at
    SHARD_END, and the demo waited until its timeout, then failed."""
    producer = demo.Producer(kinesis=None, adapter=None, last_sequence={"shardId-000000000000": 6738,
                                                                        "shardId-000000000004": 3452})
    closed = {"shardId-000000000000": {"shardId-000000000004", "shardId-000000000005"}}
    children = {"shardId-000000000004": "3452", "shardId-000000000005": "TRIM_HORIZON"}
    assert demo.drained(producer, children, closed)
    assert demo.drained(producer, {**children, "shardId-000000000000": "SHARD_END"}, closed)
    assert not demo.drained(producer, {**children, "shardId-000000000000": "6000"}, closed)  # still being read
    assert not demo.drained(producer, {"shardId-000000000004": "TRIM_HORIZON",  # no lease yet, no child begun
                                       "shardId-000000000005": "TRIM_HORIZON"}, closed)
    assert not demo.drained(producer, {}, closed)  # the daemon has not made its leases yet


def test_a_reshard_of_a_reshard_drains_once_kcl_cleaned_up_every_closed_shard():
    """2 -> 4 -> 2 under load: KCL cleans up the parents' leases, then the split children's once the
    merged shards moved on; only the merged shards' leases are left."""
    producer = demo.Producer(kinesis=None, adapter=None, last_sequence={f"shardId-00000000000{n}": 10 for n in range(8)})
    closed = {"shardId-000000000000": {"shardId-000000000002", "shardId-000000000003"},
              "shardId-000000000001": {"shardId-000000000004", "shardId-000000000005"},
              "shardId-000000000002": {"shardId-000000000006"}, "shardId-000000000003": {"shardId-000000000006"},
              "shardId-000000000004": {"shardId-000000000007"}, "shardId-000000000005": {"shardId-000000000007"}}
    merged = {"shardId-000000000006": "10", "shardId-000000000007": "10"}
    assert demo.drained(producer, merged, closed)
    assert not demo.drained(producer, {**merged, "shardId-000000000007": "TRIM_HORIZON"}, closed)
    assert not demo.drained(producer, {**merged, "shardId-000000000004": "7"}, closed)  # a split child still read


def test_the_demo_summary_says_how_many_events_were_redelivered_after_lease_moves():
    """A demo's emulator is slow enough for leases to move: the events count passed the records put
    (54,394 for 50,942), which a newcomer could read as duplicates let through."""
    from rich.console import Console

    from devstack.cli import _summary

    def result(events: int) -> demo.DemoResult:
        per_shard = {"shardId-000000000000": Counter(Events=events - 100), "shardId-000000000001": Counter(Events=100)}
        return demo.DemoResult(per_shard, {}, 50_942, 291.9, True, None, 0, 5_000, [], True)

    assert result(54_394).redelivered == 3_452 and result(50_942).redelivered == 0
    for events, shown in ((54_394, True), (50_942, False)):
        out = io.StringIO()
        _summary(Console(file=out, width=200), result(events), SimpleNamespace(export=None, export_metrics=None, report=None))
        assert ("events redelivered after lease moves" in out.getvalue()) is shown
        assert "3,452 (counted again above)" in out.getvalue() or not shown
