"""I15 through the engine, against the in-memory DynamoDB twin: what cannot be stored never stalls a
shard, is dead-lettered before anything that could hide it, and what can be stored stays exact."""
from __future__ import annotations

import orjson
import pytest

from processor.adapters import build_adapter
from processor.adapters.genesys import GenesysAdapter
from processor.dynamodb.deadletter_table import DynamoDeadLetters
from processor.engine import FlushPolicy, ShardEngine
from processor.dynamodb.item import from_item
from processor.model import Record
from processor.dynamodb.sink import DynamoSink
from processor.store import ShardStore
from tests.conftest import T0, detail_event
from tests.twins import Crash, DyingDeadLetters, Faults, MemoryDynamoDB, client_error

genesys = GenesysAdapter()
ARRIVAL = T0 + 3_600_000


def engine(tmp_path, client: MemoryDynamoDB, adapter=genesys, dead_letters=None) -> ShardEngine:
    return ShardEngine("shardId-000000000001", adapter, ShardStore(str(tmp_path / "state")),
                       DynamoSink(client, "conversations", adapter.derive),
                       dead_letters or DynamoDeadLetters(client, "dead-letters"),
                       FlushPolicy(max_records=10 ** 6), clock=lambda: ARRIVAL / 1000)


def record(envelope: dict, sequence: int) -> Record:
    return Record(orjson.dumps(envelope), str(sequence), "pk", arrival_ms=ARRIVAL)


def test_integers_beyond_64_bits_are_stored_exactly_from_the_record_on(tmp_path):
    adapter = build_adapter({"kind": "generic", "conversation_id": "$.detail.id", "event_time": "$.detail.t",
                             "state": {"account": "$.detail.account", "low": "$.detail.low"}})
    client = MemoryDynamoDB()
    data = b'{"detail": {"id": "k1", "t": %d, "account": 1234567890123456789012345, "low": -9223372036854775809}}' % T0
    shard = engine(tmp_path, client, adapter)
    shard.process([Record(data, "1", "k1", arrival_ms=ARRIVAL)])
    shard.flush()
    shard.close()
    item = from_item(client.items("conversations")["k1"])[1]
    assert item.registers["account"][1] == 1234567890123456789012345
    assert item.registers["low"][1] == -9223372036854775809


def test_a_value_dropped_at_write_time_is_dead_lettered_before_the_item_is_written(tmp_path):
    """Were the dead letter written after the item, a crash in between would lose the value for
    good: the replay finds the item (tombstone and event keys) and sees nothing to refuse."""
    client = MemoryDynamoDB()
    shard = engine(tmp_path, client, dead_letters=DyingDeadLetters(DynamoDeadLetters(client, "dead-letters")))
    big = "x" * 230_000
    shard.process([record(detail_event("c1", "attributes", 1000, attributes={"notes": big}), 1),
                   record(detail_event("c1", "acw", 2000, wrapupCode=big + "y" * 99), 2)])
    with pytest.raises(Crash):  # dies right after the writes, when the buffered dead letters are flushed
        shard.flush()
    (letter,) = client.items("dead-letters").values()
    assert letter["field"] == {"S": "wrapupCode"} and letter["conversationId"] == {"S": "c1"}
    assert orjson.loads(letter["data"]["B"]) == big + "y" * 99
    assert from_item(client.items("conversations")["c1"])[1].registers["wrapupCode"][1] is None


def test_a_conversation_id_near_dynamodbs_key_limit_still_gets_its_dead_letters(tmp_path):
    client = MemoryDynamoDB()
    shard = engine(tmp_path, client)
    long_id = "k" * 2040  # under 2,048 bytes: a valid key, too long to repeat inside another key
    shard.process([record(detail_event(long_id, "attributes", 1000, attributes={"n": 1e300}), 1)])
    shard.flush()
    (letter,) = client.items("dead-letters").values()
    assert len(letter["id"]["S"].encode()) < 200 and letter["conversationId"]["S"] == long_id
    assert from_item(client.items("conversations")[long_id])[1].registers["attributes"][1] is None


def test_every_field_dynamodb_refuses_is_found_not_only_one(tmp_path):
    client = MemoryDynamoDB()

    def refuse_marked_values(operation, kwargs):
        if operation == "put_item" and any(v.get("S", "").startswith("\x00") for v in kwargs["Item"].values()):
            raise client_error("ValidationException", "PutItem", "some rule")

    sink = DynamoSink(Faults(client, refuse_marked_values), "conversations", genesys.derive)
    shard = ShardEngine("shardId-000000000001", genesys, ShardStore(str(tmp_path / "state")), sink,
                        DynamoDeadLetters(client, "dead-letters"), clock=lambda: ARRIVAL / 1000)
    shard.process([record(detail_event("c1", "acw", 1000, wrapupCode="\x00a"), 1),
                   record(detail_event("c1", "acd.start", 1000, queueId="\x00b"), 2),
                   record(detail_event("c1", "user.start", 1000, userId="agent-1"), 3)])
    shard.flush()
    stored = from_item(client.items("conversations")["c1"])[1].registers
    assert (stored["wrapupCode"][1], stored["queueId"][1], stored["agentUserId"][1]) == (None, None, "agent-1")
    assert sorted(letter["field"]["S"] for letter in client.items("dead-letters").values()) == ["queueId", "wrapupCode"]


def test_a_map_with_an_empty_key_is_dead_lettered_not_written(tmp_path):
    """DynamoDB refuses a whole write for a map key that is empty ("Empty attribute name", at any
    depth): the field is refused on admission, with its reason, and the rest of the item written."""
    client = MemoryDynamoDB()
    shard = engine(tmp_path, client)
    shard.process([record(detail_event("c1", "acw", 1000, wrapupCode={"": 1, "a": 2}), 1),
                   record(detail_event("c1", "user.start", 1000, userId="agent-1"), 2)])
    shard.flush()
    stored = from_item(client.items("conversations")["c1"])[1].registers
    assert (stored["wrapupCode"][1], stored["agentUserId"][1]) == (None, "agent-1")
    [letter] = client.items("dead-letters").values()
    assert letter["field"]["S"] == "wrapupCode" and "empty map key" in letter["reason"]["S"]
