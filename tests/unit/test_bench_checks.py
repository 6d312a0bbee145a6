"""`processor bench`'s measurements detect what they claim to: leaked duplicates, stale
overwrites, lost updates, mismatches, write units. The command itself: tests/server/test_bench.py."""
from __future__ import annotations

import base64

from bench.checks import history_checks, ledger_checks, table_checks
from bench.workload import Delivery, truth
from devstack.emulator.meter import write_units
from processor.model import Register


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
