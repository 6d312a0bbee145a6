"""The DynamoDB sink and dead-letter table against moto over HTTP: every scenario of
tests/scenarios/sink.py (I5, I6, I7, I8, I9), as tests/unit runs them on the twin, on the processor's
split of clients (conftest.py); and throttling
injected by the emulator itself (transactions included), retried until nothing is lost."""
from __future__ import annotations

import orjson
import pytest

from devstack.emulator import LocalEmulator
from devstack.storm import StormShape, write_storm
from processor.analytics.reader import MetricsReader
from processor.config import Settings
from processor.deadletters import JsonlDeadLetters
from processor.dynamodb.client import data_plane_client, dynamodb_client, ensure_table, ensure_tables
from processor.replay import read_lines, replay
from tests.metrics_oracle import expected_rows
from processor.dynamodb.sink import DynamoSink
from tests.conftest import table_items
from tests.scenarios.sink import derive, scenarios, state


@pytest.mark.parametrize("scenario", scenarios.params())
def test_sink_scenario_holds(scenario, split, table, tmp_path):
    scenario(split, table, tmp_path)


@pytest.mark.parametrize("data_plane", [dynamodb_client, data_plane_client], ids=["boto3", "data plane"])
def test_throttling_is_retried_with_backoff_and_nothing_is_lost(data_plane):
    with LocalEmulator(throttle=0.3, seed=11) as throttled:
        client = dynamodb_client(throttled.endpoint, region="us-east-1")
        ensure_table(client, "conversations")
        sink = DynamoSink(data_plane(throttled.endpoint, region="us-east-1"), "conversations", derive)
        states = {f"c{i}": state(("queueId", 1, f"q{i}")) for i in range(300)}
        sink.write(states)
        for s in states.values():
            s.registers["agentUserId"] = (2, "a")
        sink.write(states)
        found = sink.read(states)
        items = table_items(client, "conversations")
    assert sink.counters.throttles > 0, sink.counters  # the retry path really ran
    assert len(found) == 300
    assert all(item["version"] == 2 and item["agentUserId"] == "a" for item in items.values())
    assert len(items) == 300


@pytest.mark.parametrize("data_plane", [dynamodb_client, data_plane_client], ids=["boto3", "data plane"])
def test_throttled_transactions_are_retried_and_the_metrics_stay_exact(tmp_path, data_plane):
    """A third of the data-plane requests throttled, transactions included: the metrics read back
    equal the independent oracle's over the same events (I12 through the retry path), with either
    client writing and reading."""
    events = tmp_path / "storm.jsonl"
    write_storm(str(events), StormShape(conversations=60, seed=5))
    settings = Settings()
    adapter = settings.build_adapter()
    with LocalEmulator(throttle=0.3, seed=3) as throttled:
        ensure_tables(dynamodb_client(throttled.endpoint, region="us-east-1"), settings.table,
                      metrics_table=settings.metrics_table)
        client = data_plane(throttled.endpoint, region="us-east-1")
        sink = settings.build_sink(client, adapter)
        replay(read_lines(str(events)), adapter, sink, JsonlDeadLetters(str(tmp_path / "dead.jsonl")), shards=2,
               flush_records=100)
        rows = MetricsReader(client, settings.metrics_table, settings.interval_minutes).rows()
    assert sink.counters.throttles > 0 and sink.counters.transactions > 0, sink.counters
    assert rows == expected_rows(orjson.loads(line) for line in read_lines(str(events)))
