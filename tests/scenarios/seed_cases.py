"""The cases users hit today with check-then-write Lambdas, each through the engine and DynamoDB
(I1 repeats, I2 no-op re-sends, I3 order and same-millisecond ties). Each takes (client, table, tmp_path)."""
from __future__ import annotations

import copy

from processor.adapters import build_adapter
from processor.adapters.genesys import GenesysAdapter
from processor.deadletters import JsonlDeadLetters
from processor.dynamodb.sink import DynamoSink
from processor.engine import ShardEngine
from processor.store import ShardStore
from tests.conftest import T0, detail_event, records, sample, table_items, wrap_websocket_frame
from tests.scenarios import Scenarios

scenarios = Scenarios()


def run(adapter, envelopes, client, table, tmp_path):
    """Each envelope in a batch of its own, flushed: the engine's counters, the sink's, the table."""
    sink = DynamoSink(client, table, adapter.derive)
    store = ShardStore(str(tmp_path / "state"))
    engine = ShardEngine("shardId-000000000000", adapter, store, sink, JsonlDeadLetters(str(tmp_path / "dl")))
    for envelope in envelopes:
        engine.process(records([envelope]))
        engine.flush()
    store.close()
    return engine.counters, sink.counters, table_items(client, table)


@scenarios.add
def same_millisecond_events_with_different_ids_both_count(client, table, tmp_path):
    """A conditional write on timestamp (`updated_at < :t`) drops the second one; here both apply."""
    acd_end = detail_event("c", "acd.end", 5000, acdOutcome="ANSWERED")
    user_start = detail_event("c", "user.start", 5000, userId="agent-7")
    counters, sink, items = run(GenesysAdapter(), [acd_end, user_start], client, table, tmp_path)
    assert (items["c"]["acdOutcome"], items["c"]["agentUserId"]) == ("ANSWERED", "agent-7")
    assert counters.changes == 2 and sink.writes == 2


@scenarios.add
def the_identical_payload_twice_within_milliseconds_is_written_once(client, table, tmp_path):
    event = sample("customer.start__event-streaming-blueprint")
    counters, sink, items = run(GenesysAdapter(), [event, copy.deepcopy(event)], client, table, tmp_path)
    assert counters.exact_repeats == 1 and sink.writes == 1
    assert items["2f7bf00a-0fc2-4d6a-9b56-92238191433e"]["version"] == 1


@scenarios.add
def connected_then_connected_again_with_new_ids_is_one_write(client, table, tmp_path):
    """The snapshot topic re-sends the same conversation state with new ids: no transition."""
    frame = sample("callBackConnectMsg.json")
    first = wrap_websocket_frame(frame)
    again = wrap_websocket_frame(frame)  # new EventBridge id
    again["detail"]["metadata"]["CorrelationId"] = "another-correlation-id"
    counters, sink, items = run(GenesysAdapter(), [first, again], client, table, tmp_path)
    assert first["id"] != again["id"]
    assert sink.writes == 1 and counters.exact_repeats == 1
    assert items["ffff-ffff-ffff-ffff"]["version"] == 1


@scenarios.add
def one_idempotency_key_twice_is_applied_once(client, table, tmp_path):
    """A producer retried with the same IdempotencyKey and a re-stamped body: the key decides."""
    adapter = build_adapter({"kind": "generic", "conversation_id": "$.detail.ContactId",
                             "event_time": "$.detail.Timestamp", "event_id": "$.detail.IdempotencyKey",
                             "state": {"status": "$.detail.Status"}})
    first = {"id": "eb-1", "detail": {"ContactId": "k1", "Timestamp": T0 + 1000, "IdempotencyKey": "idem-1",
                                      "Status": "Active"}}
    retried = {"id": "eb-2", "detail": {"ContactId": "k1", "Timestamp": T0 + 1003, "IdempotencyKey": "idem-1",
                                        "Status": "Active"}}
    counters, sink, items = run(adapter, [first, retried], client, table, tmp_path)
    assert counters.exact_repeats == 1 and sink.writes == 1
    assert items["k1"]["status"] == "Active"


@scenarios.grid(order=[("end", "start", "connected"), ("connected", "end", "start")])
def ended_before_connected_still_ends_up_ended_and_connected(client, table, tmp_path, order):
    """Out of order: customer.end arrives before customer.start and user.start."""
    events = {"end": detail_event("c", "customer.end", 9000), "start": detail_event("c", "customer.start", 1000),
              "connected": detail_event("c", "user.start", 4000, userId="agent-2")}
    _, _, items = run(GenesysAdapter(), [events[name] for name in order], client, table, tmp_path)
    item = items["c"]
    assert (item["ended"], item["endTime"], item["startTime"], item["agentUserId"], item["durationMs"]) == (
        True, T0 + 9000, T0 + 1000, "agent-2", 8000)
