"""The DynamoDB sink and dead-letter table against moto over HTTP: every scenario of
tests/scenarios/sink.py (I5, I6, I7, I8, I9), as tests/unit runs them on the twin; and throttling
injected by the emulator itself, retried until nothing is lost."""
from __future__ import annotations

import pytest

from devstack.emulator import LocalEmulator
from processor.dynamodb.client import dynamodb_client, ensure_table
from processor.dynamodb.sink import DynamoSink
from processor.model import Register
from tests.conftest import table_items
from tests.scenarios.sink import derive, scenarios, state


@pytest.mark.parametrize("scenario", scenarios.params())
def test_sink_scenario_holds(scenario, dynamodb, table, tmp_path):
    scenario(dynamodb, table, tmp_path)


def test_throttling_is_retried_with_backoff_and_nothing_is_lost():
    with LocalEmulator(throttle=0.3, seed=11) as throttled:
        client = dynamodb_client(throttled.endpoint, region="us-east-1")
        ensure_table(client, "conversations")
        sink = DynamoSink(client, "conversations", derive)
        states = {f"c{i}": state(("queueId", 1, f"q{i}")) for i in range(300)}
        sink.write(states)
        for s in states.values():
            s.registers["agentUserId"] = Register(2, "a")
        sink.write(states)
        found = sink.read(states)
        items = table_items(client, "conversations")
    assert sink.counters.throttles > 0, sink.counters  # the retry path really ran
    assert len(found) == 300
    assert all(item["version"] == 2 and item["agentUserId"] == "a" for item in items.values())
    assert len(items) == 300
