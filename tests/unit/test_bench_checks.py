"""`processor bench`'s measurements detect what they claim to: leaked duplicates, stale
overwrites, lost updates, mismatches, wrong metrics cells, write units, writes per key per flush,
CPU seconds (in-process, and of the KCL daemon's process tree from /proc). The command itself:
tests/server/test_bench.py."""
from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import threading
import time

import pytest

from bench.checks import cells_wrong, history_checks, ledger_checks, table_checks
from bench.cpu import TICK_SECONDS, TreeCpu, cpu_window
from bench.ours import FlushLedger
from bench.peers import event_amounts
from bench.report import COLUMNS, CPU_TARGETS, cpu_targets, markdown
from bench.run import cpu_result
from bench.workload import Delivery, truth
from devstack.emulator.meter import write_units
from processor.analytics.contribution import METRICS, QUEUE
from processor.analytics.sessions import session_register


def delivery(index: int, stamp: int, value: str, duplicate: bool = False, key: int | None = None) -> Delivery:
    return Delivery(index, b"", {}, "c1", key if key is not None else stamp, stamp, {"queueId": (stamp, value)},
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


def queue_row(queue: str, interval: str, **metrics: int) -> dict:
    return {"kind": "queue", "queueId": queue, "mediaType": "VOICE", "interval": interval,
            **{name: metrics.get(name, 0) for name in METRICS["queue"]}}


def agent_row(user: str, interval: str, **metrics: int) -> dict:
    return {"kind": "agent", "userId": user, "interval": interval, **{name: metrics.get(name, 0) for name in METRICS["agent"]}}


def gauge_row(queue: str, **metrics: int) -> dict:
    return {"kind": "gauge", "queueId": queue, "mediaType": "VOICE", **{name: metrics.get(name, 0) for name in METRICS["gauge"]}}


A, B = "2026-11-20T08:00:00Z", "2026-11-20T08:30:00Z"


def test_cells_wrong_counts_cells_that_differ_are_missing_or_extra_of_every_kind():
    expected = [queue_row("q1", A, nOffered=2, nAnswered=1), queue_row("q1", B, nOffered=1), agent_row("u1", A, nHandled=1),
                gauge_row("q1", oWaiting=1)]
    assert cells_wrong(expected, expected) == 0
    assert cells_wrong(expected, list(reversed(expected))) == 0  # order is no part of it
    found = [queue_row("q1", A, nOffered=3, nAnswered=1),  # a duplicate counted again
             agent_row("u1", A, nHandled=1), gauge_row("q1", oWaiting=1),
             queue_row("q2", A, nOffered=1)]  # extra; q1 in B missing
    assert cells_wrong(expected, found) == 3
    assert cells_wrong(expected, [*found[1:], queue_row("q1", A, nOffered=2, nAnswered=1, tAnswered=5)]) == 3
    # a cell another kind names the same way is another cell; an all-zero cell is no cell
    assert cells_wrong([agent_row("q1", A, nHandled=1)], [agent_row("q1", A, nHandled=1), queue_row("q1", A)]) == 0
    assert cells_wrong([gauge_row("q1", oWaiting=1)], [gauge_row("q1", oInteracting=1)]) == 1


def test_cells_wrong_compares_only_the_metrics_and_kinds_named():
    expected = [queue_row("q1", A, nOffered=2, nAnswered=1, tAnswered=900), agent_row("u1", A, nHandled=1)]
    kept = {"kind": "queue", "queueId": "q1", "mediaType": "VOICE", "interval": A, "nOffered": 2, "nAnswered": 1}
    assert cells_wrong(expected, [kept], {QUEUE: ("nOffered", "nAnswered")}) == 0  # no tAnswered, no agents kept
    assert cells_wrong(expected, [{**kept, "nAnswered": 2}], {QUEUE: ("nOffered", "nAnswered")}) == 1
    assert cells_wrong(expected, [kept]) == 2  # over every metric of every kind


def test_truth_sums_contributions_of_full_states_and_counts_session_changes_beside_the_floor():
    def acd(index: int, subtopic: str, time_ms: int, duplicate: bool = False, **body: str) -> Delivery:
        name, register = session_register(subtopic, {"participantId": "p1", "queueId": "q1", "mediaType": "VOICE", **body},
                                          time_ms)
        projected = {"queueId": (1_000, "q1")}  # the end changes no projection field
        return Delivery(index, b"", {}, "c1", time_ms, time_ms, projected, duplicate, {**projected, name: register})

    start_ms = 1_763_625_600_000  # 2025-11-20T08:00:00Z
    deliveries = [acd(0, "acd.start", start_ms), acd(1, "acd.end", start_ms + 30_000, acdOutcome="ANSWERED"),
                  acd(2, "acd.end", start_ms + 30_000, duplicate=True, acdOutcome="ANSWERED")]
    facts = truth(deliveries)
    assert (facts.projection_changes, facts.state_changes) == (1, 2)
    assert facts.floor_plus_aggregates_writes_per_1k == 1000 * 2 / 3
    assert facts.metrics == [queue_row("q1", "2025-11-20T08:00:00Z", nOffered=1, nAnswered=1, tAnswered=30_000,
                                       nOverSla=1)]
    assert cells_wrong(facts.metrics, truth(deliveries[:1]).metrics) == 2  # a gauge extra, the cell short


def test_add_per_event_reads_what_each_detail_event_adds():
    assert event_amounts("acd.start", {}) == {"nOffered": 1}
    assert event_amounts("acd.end", {"acdOutcome": "ABANDON"}) == {"nAbandon": 1}
    assert event_amounts("acd.end", {"acdOutcome": "TRANSFER"}) == {}
    assert event_amounts("user.end", {"interactingDurationMs": 5, "heldDurationMs": 2, "disconnectType": "TRANSFER"}) \
        == {"tTalk": 5, "tHeld": 2, "nHandled": 1, "nTransferred": 1}
    assert event_amounts("acw", {"wrapupDurationMs": 7}) == {"nAcw": 1, "tAcw": 7}
    assert event_amounts("customer.end", {}) == {}


class FakeClient:
    def __init__(self):
        self.calls = []

    def update_item(self, **request):
        self.calls.append(request)
        return {}

    def transact_write_items(self, **request):
        self.calls.append(request)
        return {}

    def get_item(self, **request):
        return {"Item": None}


class FakeSink:
    def __init__(self, client, transactions):
        self.client, self.transactions, self.counters = client, transactions, "counters"

    def write(self, states, on_refused=None, shard_id=""):
        for keys in self.transactions.pop(0):
            self.client.transact_write_items(TransactItems=[
                {"Update": {"TableName": "m", "Key": {"pk": {"S": key}}}} for key in keys] + [
                {"Put": {"TableName": "conversations", "Item": {"conversationId": {"S": "c1"}}}}])
        return []


def test_flush_ledger_counts_writes_per_metrics_key_within_one_flush_of_one_shard():
    ledger = FlushLedger("m")
    client = ledger.client(FakeClient())
    sink = ledger.sink(FakeSink(client, [[["a#s1#0", "b#s1#0"], ["a#s1#1"]], [["a#s1#0"]]]))
    assert sink.counters == "counters"  # the rest of the sink is the sink's
    client.update_item(TableName="m", Key={"pk": {"S": "d|x|s1|0"}})  # outside a flush: counted on its own
    sink.write({}, None, "s1")
    sink.write({}, None, "s1")  # the same key again, in the next flush
    client.update_item(TableName="conversations", Key={"conversationId": {"S": "c1"}})  # not the metrics table
    assert client.get_item(TableName="m") == {"Item": None}
    assert (ledger.report()["hottest_key_writes_per_flush"], ledger.report()["flushes"]) == (1, 2)
    sink = ledger.sink(FakeSink(client, [[["a#s1#0"], ["a#s1#0"]]]))  # one key twice in one flush
    sink.write({}, None, "s1")
    assert ledger.report()["hottest_key_writes_per_flush"] == 2
    assert ledger.report()["hottest_key_per_flush"] == "a#s1#0"


def write_stat(proc, pid: int, ppid: int, own: int, reaped: int = 0, started: int = 1, name: str = "py (x) y") -> None:
    """A /proc/<pid>/stat line: `own` and `reaped` in clock ticks, each split into user and system."""
    (proc / str(pid)).mkdir(exist_ok=True)
    (proc / str(pid) / "stat").write_text(f"{pid} ({name}) S {ppid} 0 0 0 -1 4194304 0 0 0 0 {own - own // 2} "
                                          f"{own // 2} {reaped - reaped // 2} {reaped // 2} 20 0 1 0 {started} 0 0\n")


def test_tree_cpu_counts_the_daemon_apart_and_every_descendant_once_to_its_end(tmp_path):
    def gone(pid: int) -> None:
        shutil.rmtree(tmp_path / str(pid))

    write_stat(tmp_path, 100, 1, 300, name="java")
    write_stat(tmp_path, 101, 100, 100)
    write_stat(tmp_path, 102, 100, 50)
    write_stat(tmp_path, 103, 101, 10)  # a grandchild
    write_stat(tmp_path, 200, 1, 999)  # not the daemon's
    cpu = TreeCpu(100, discover_every=0, proc=tmp_path)
    cpu.sample()
    assert (cpu.root_seconds, cpu.descendants_seconds) == pytest.approx((300 * TICK_SECONDS, 160 * TICK_SECONDS))
    gone(103)  # its parent waits for it
    write_stat(tmp_path, 101, 100, 120, reaped=10)
    cpu.sample()
    gone(101)  # ends with 10 ticks unsampled; the daemon waits for it
    write_stat(tmp_path, 100, 1, 310, reaped=140)
    write_stat(tmp_path, 102, 100, 60)
    cpu.sample()  # 101's last 10 ticks are not known yet: each process's last value
    assert cpu.descendants_seconds == pytest.approx(190 * TICK_SECONDS)
    gone(102)
    write_stat(tmp_path, 100, 1, 320, reaped=210)
    write_stat(tmp_path, 102, 1, 500, started=7)  # its pid reused by another process
    cpu.sample()  # everything waited for: the daemon's reaped time is exact
    assert (cpu.root_seconds, cpu.descendants_seconds) == pytest.approx((320 * TICK_SECONDS, 210 * TICK_SECONDS))
    write_stat(tmp_path, 104, 100, 5)
    cpu.sample()
    gone(100)  # the daemon exits first: its child, orphaned, still counts
    write_stat(tmp_path, 104, 1, 80)
    cpu.sample()
    assert (cpu.root_seconds, cpu.descendants_seconds) == pytest.approx((320 * TICK_SECONDS, 270 * TICK_SECONDS))


def test_tree_cpu_follows_a_real_process_tree_to_its_exact_total():
    burn = f"{sys.executable} -c 'import time; t = time.process_time()\nwhile time.process_time() - t < 0.4: pass'"
    # The shell outlives its children a moment, as the KCL daemon does: the sampler then sees their
    # exact total in its reaped time (a root that exits with them leaves only their last samples).
    process = subprocess.Popen(["sh", "-c", f"{burn} & {burn}; wait; sleep 0.3"])
    cpu = TreeCpu(process.pid, interval=0.05, discover_every=0.05).start()
    _, _, usage = os.wait4(process.pid, 0)  # the shell's own time and everything it waited for, exactly
    process.returncode = 0  # reaped here: Popen must not wait for it again
    cpu.stop()
    exact = usage.ru_utime + usage.ru_stime
    assert cpu.descendants_seconds >= 0.8 > cpu.root_seconds
    assert exact - 0.2 <= cpu.root_seconds + cpu.descendants_seconds <= exact + 0.03


def test_cpu_window_counts_every_thread_of_the_process_and_no_waiting():
    def burn(seconds: float) -> None:
        started = time.thread_time()
        while time.thread_time() - started < seconds:
            pass

    with cpu_window() as window:
        burn(0.2)
        worker = threading.Thread(target=burn, args=(0.1,))
        worker.start()
        worker.join()
        time.sleep(0.3)
    assert window.seconds >= 0.6 and 0.3 <= window.cpu_seconds < 0.45


def test_cpu_columns_and_targets_are_derived_from_the_cpu_seconds_measured():
    assert cpu_result({"cpu_seconds": 0.5}, 10_000) == {"cpu_s": 0.5, "events_per_cpu_s": 20_000}
    kcl = cpu_result({"cpu_seconds": 10.0, "daemon_cpu_seconds": 7.0, "children_cpu_seconds": 3.0, "events": 6_000},
                     6_000)
    assert kcl == {"cpu_s": 10.0, "events_per_cpu_s": 600, "kcl_daemon_cpu_s": 7.0, "kcl_children_cpu_s": 3.0,
                   "kcl_child_us_per_record": 500}
    assert CPU_TARGETS == {"this_catchup": 15_000, "this_live": 5_000}
    row = {key: 1 for key, _ in COLUMNS}
    results = {"machine": "m", "events": 6_000, "conversations": 1, "duplicates": 0, "floor_writes_per_1k": 1.0,
               "curve": [], "systems": {"this_live": {**row, "events_per_cpu_s": 5_000},
                                        "this_catchup": {**row, "events_per_cpu_s": 14_999},
                                        "this_kcl": {**row, **kcl}}}
    assert cpu_targets(results) == {"this_live": {"events_per_cpu_s": 5_000, "target": 5_000, "met": True},
                                    "this_catchup": {"events_per_cpu_s": 14_999, "target": 15_000, "met": False}}
    text = markdown(results, "processor bench")
    assert "| CPU s | events/CPU-s |" in text and "*CPU s*:" in text
    assert "this_catchup **14,999** (target ≥ 15,000: **missed**)" in text
    assert "this_live **5,000** (target ≥ 5,000: **met**)" in text
    assert "the Java daemon **7.0 s**, its Python children **3.0 s**, **500 µs**" in text
