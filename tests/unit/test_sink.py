"""The DynamoDB sink and dead-letter table on the in-memory twin: every scenario of
tests/scenarios/sink.py (I5, I6, I7, I8, I9); tests/server runs the same ones on moto. DynamoDB's
failure shapes are in test_sink_faults.py (the twin) and test_dynamodb_errors.py (botocore's Stubber)."""
from __future__ import annotations

import pytest

from processor.dynamodb.item import from_item, to_item
from processor.reduce import merge
from tests.scenarios.sink import derive, scenarios, state


@pytest.mark.parametrize("scenario", scenarios.params())
def test_sink_scenario_holds(scenario, dynamodb, table, tmp_path):
    scenario(dynamodb, table, tmp_path)


def test_item_round_trip_keeps_registers_keys_and_version():
    s = state(("attributes", 5, {"a": "1", "n": 2.5}), ("startTime", -3, 3), keys=(2 ** 64 - 1, 0))
    item = to_item("c1", s, 7, derive, None)
    cid, back = from_item(item)
    assert cid == "c1" and back.version == 7
    assert back.registers == s.registers and back.recent_keys == s.recent_keys
    assert merge(back, s) is False
