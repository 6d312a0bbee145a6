"""The DynamoDB sink against a real DynamoDB API server (moto over HTTP): I5, I6, I9."""
from __future__ import annotations

import uuid

import pytest

from processor.adapters.genesys import GenesysAdapter
from processor.dynamodb.deadletter_table import DynamoDeadLetters
from devstack.emulator import LocalEmulator
from processor.dynamodb.item import Retention, from_item, item_size, to_item
from processor.model import DeadLetter, Register
from processor.reduce import KEY_WINDOW, ConversationState, merge
from processor.dynamodb.sink import DynamoSink
from processor.dynamodb.client import dynamodb_client, ensure_table
from tests.conftest import table_items

pytestmark = pytest.mark.server
derive = GenesysAdapter().derive


def state(*fields: tuple[str, int, object], keys=(1,)) -> ConversationState:
    return ConversationState({name: Register(stamp, value) for name, stamp, value in fields}, list(keys))


def copy(s: ConversationState) -> ConversationState:
    return ConversationState(dict(s.registers), list(s.recent_keys), s.version)


def test_first_write_creates_version_1_and_each_write_bumps_it(dynamodb, table):
    sink = DynamoSink(dynamodb, table, derive)
    s = state(("queueId", 10, "q1"), ("startTime", -5, 5))
    sink.write({"c1": s})
    assert s.version == 1
    s.registers["queueId"] = Register(20, "q2")
    sink.write({"c1": s})
    item = table_items(dynamodb, table)["c1"]
    assert item["version"] == 2 and item["queueId"] == "q2"
    assert sink.counters.writes == 2 and sink.counters.conflicts == 0


def test_the_item_follows_the_contract_and_stays_small(dynamodb, table):
    sink = DynamoSink(dynamodb, table, derive, Retention(86400, 30 * 86400))
    s = state(("mediaType", 9, "VOICE"), ("ended", 9, True), ("endTime", 9, 9000), ("startTime", -1000, 1000),
              keys=range(40))
    sink.write({"c1": s})
    item = table_items(dynamodb, table)["c1"]
    assert item["conversationId"] == "c1" and item["version"] == 1
    assert item["durationMs"] == 8000  # derived figures ride along
    assert item["_t"] == {"mediaType": 9, "ended": 9, "endTime": 9, "startTime": -1000}
    assert item["_ttl"] == 9 + 86400
    assert len(item["_k"]) == 8 * KEY_WINDOW  # the newest keys only: bookkeeping stays bounded
    stored = dynamodb.get_item(TableName=table, Key={"conversationId": {"S": "c1"}})["Item"]
    assert item_size(stored) < 1024  # one write unit


def test_a_replayed_write_finds_itself_stored_and_writes_nothing_more(dynamodb, table):
    """A crash after the DynamoDB write, before the local commit: the replay's write is a no-op."""
    sink = DynamoSink(dynamodb, table, derive)
    written = state(("queueId", 10, "q1"))
    sink.write({"c1": copy(written)})
    replayed = copy(written)  # local state still at version 0, same events re-applied
    sink.write({"c1": replayed})
    assert replayed.version == 1
    assert table_items(dynamodb, table)["c1"]["version"] == 1
    assert sink.counters.conflicts == 1 and sink.counters.writes == 2  # one failed conditional put


def test_a_zombie_and_the_new_owner_converge_on_the_merge_of_both(dynamodb, table):
    """Each has an event the other lacks; whoever writes second merges, neither overwrites."""
    zombie_sink, owner_sink = DynamoSink(dynamodb, table, derive), DynamoSink(dynamodb, table, derive)
    base = state(("queueId", 10, "q1"))
    zombie_sink.write({"c1": base})
    zombie, owner = copy(base), copy(base)
    zombie.registers["wrapupCode"] = Register(30, "SALE")  # the zombie applied acw
    owner.registers["queueId"] = Register(20, "q2")  # the new owner applied a transfer
    owner_sink.write({"c1": owner})
    zombie_sink.write({"c1": zombie})  # fails on version, merges, retries
    owner.registers["agentUserId"] = Register(40, "a1")
    owner_sink.write({"c1": owner})  # fails on version, merges the zombie's acw, retries
    item = table_items(dynamodb, table)["c1"]
    assert (item["queueId"], item["wrapupCode"], item["agentUserId"]) == ("q2", "SALE", "a1")
    assert item["version"] == 4


def test_a_stale_writer_cannot_overwrite_newer_state(dynamodb, table):
    sink = DynamoSink(dynamodb, table, derive)
    newer = state(("queueId", 20, "q2"))
    sink.write({"c1": newer})
    stale = state(("queueId", 10, "q1"))
    sink.write({"c1": stale})
    item = table_items(dynamodb, table)["c1"]
    assert item["queueId"] == "q2" and item["version"] == 1
    assert stale.registers["queueId"].value == "q2"  # and the stale writer learned the truth


def test_reads_are_batched_and_return_what_was_written(dynamodb, table):
    sink = DynamoSink(dynamodb, table, derive)
    states = {f"c{i}": state(("queueId", i + 1, f"q{i}"), keys=(i,)) for i in range(150)}
    sink.write({cid: copy(s) for cid, s in states.items()})
    found = sink.read(list(states) + ["absent"])
    assert set(found) == set(states)
    assert found["c7"].registers == states["c7"].registers and found["c7"].recent_keys == [7]
    assert sink.counters.reads == 2  # 150 keys: two BatchGetItem requests of at most 100


def test_item_round_trip_keeps_registers_keys_and_version():
    s = state(("attributes", 5, {"a": "1", "n": 2.5}), ("startTime", -3, 3), keys=(2 ** 64 - 1, 0))
    item = to_item("c1", s, 7, derive, None)
    cid, back = from_item(item)
    assert cid == "c1" and back.version == 7
    assert back.registers == s.registers and back.recent_keys == s.recent_keys
    assert merge(back, s) is False


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


def test_dead_letters_in_a_table_are_keyed_by_shard_and_sequence(dynamodb):
    name = f"dead-letters-{uuid.uuid4().hex[:8]}"
    ensure_table(dynamodb, name, key="id")
    letters = DynamoDeadLetters(dynamodb, name)
    for _ in range(2):  # a re-delivery after a crash overwrites its twin
        for n in range(30):
            letters.add(DeadLetter("not JSON", b"\xff" * 10, "shardId-000000000001", str(n), "pk"))
        letters.flush()
    items = dynamodb.scan(TableName=name)["Items"]
    assert len(items) == 30
    assert {i["id"]["S"] for i in items} == {f"shardId-000000000001#{n}" for n in range(30)}
    assert items[0]["reason"]["S"] == "not JSON" and items[0]["data"]["B"] == b"\xff" * 10  # bytes as bytes
