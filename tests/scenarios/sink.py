"""The DynamoDB sink and dead-letter table, scenario by scenario: I5 versioned convergent writes and
zombies, I6 batched consistent reads, I8/I9 the compact item with bounded bookkeeping and a TTL,
I7 dead letters keyed by shard and sequence. Each takes (DynamoDB client, table, tmp_path)."""
from __future__ import annotations

import uuid

from processor.adapters.genesys import GenesysAdapter
from processor.dynamodb.client import ensure_table
from processor.dynamodb.deadletter_table import DynamoDeadLetters
from processor.dynamodb.item import Retention, item_size
from processor.dynamodb.sink import DynamoSink
from processor.model import DeadLetter
from processor.reduce import KEY_WINDOW, ConversationState
from tests.conftest import table_items
from tests.scenarios import Scenarios

derive = GenesysAdapter().derive
scenarios = Scenarios()


def state(*fields: tuple[str, int, object], keys=(1,)) -> ConversationState:
    return ConversationState({name: (stamp, value) for name, stamp, value in fields}, list(keys))


def copy(s: ConversationState) -> ConversationState:
    return ConversationState(dict(s.registers), list(s.recent_keys), s.version)


@scenarios.add
def the_first_write_creates_version_1_and_each_write_bumps_it(client, table, tmp_path):
    sink = DynamoSink(client, table, derive)
    s = state(("queueId", 10, "q1"), ("startTime", -5, 5))
    sink.write({"c1": s})
    assert s.version == 1
    s.registers["queueId"] = (20, "q2")
    sink.write({"c1": s})
    item = table_items(client, table)["c1"]
    assert item["version"] == 2 and item["queueId"] == "q2"
    assert sink.counters.writes == 2 and sink.counters.conflicts == 0


@scenarios.add
def the_item_follows_the_contract_and_stays_small(client, table, tmp_path):
    sink = DynamoSink(client, table, derive, Retention(86400, 30 * 86400))
    s = state(("mediaType", 9, "VOICE"), ("ended", 9, True), ("endTime", 9, 9000), ("startTime", -1000, 1000),
              keys=range(40))
    sink.write({"c1": s})
    item = table_items(client, table)["c1"]
    assert item["conversationId"] == "c1" and item["version"] == 1
    assert item["durationMs"] == 8000  # derived figures ride along
    assert item["_t"] == {"mediaType": 9, "ended": 9, "endTime": 9, "startTime": -1000}
    assert item["_ttl"] == 9 + 86400
    assert len(item["_k"]) == 8 * KEY_WINDOW  # the newest keys only: bookkeeping stays bounded
    stored = client.get_item(TableName=table, Key={"conversationId": {"S": "c1"}})["Item"]
    assert item_size(stored) < 1024  # one write unit


@scenarios.add
def a_replayed_write_finds_itself_stored_and_writes_nothing_more(client, table, tmp_path):
    """A crash after the DynamoDB write, before the local commit: the replay's write is a no-op."""
    sink = DynamoSink(client, table, derive)
    written = state(("queueId", 10, "q1"))
    sink.write({"c1": copy(written)})
    replayed = copy(written)  # local state still at version 0, same events re-applied
    sink.write({"c1": replayed})
    assert replayed.version == 1
    assert table_items(client, table)["c1"]["version"] == 1
    assert sink.counters.conflicts == 1 and sink.counters.writes == 2  # one failed conditional put


@scenarios.add
def a_zombie_and_the_new_owner_converge_on_the_merge_of_both(client, table, tmp_path):
    """Each has an event the other lacks; whoever writes second merges, neither overwrites."""
    zombie_sink, owner_sink = DynamoSink(client, table, derive), DynamoSink(client, table, derive)
    base = state(("queueId", 10, "q1"))
    zombie_sink.write({"c1": base})
    zombie, owner = copy(base), copy(base)
    zombie.registers["wrapupCode"] = (30, "SALE")  # the zombie applied acw
    owner.registers["queueId"] = (20, "q2")  # the new owner applied a transfer
    owner_sink.write({"c1": owner})
    zombie_sink.write({"c1": zombie})  # fails on version, merges, retries
    owner.registers["agentUserId"] = (40, "a1")
    owner_sink.write({"c1": owner})  # fails on version, merges the zombie's acw, retries
    item = table_items(client, table)["c1"]
    assert (item["queueId"], item["wrapupCode"], item["agentUserId"]) == ("q2", "SALE", "a1")
    assert item["version"] == 4


@scenarios.add
def a_stale_writer_cannot_overwrite_newer_state(client, table, tmp_path):
    sink = DynamoSink(client, table, derive)
    sink.write({"c1": state(("queueId", 20, "q2"))})
    stale = state(("queueId", 10, "q1"))
    sink.write({"c1": stale})
    item = table_items(client, table)["c1"]
    assert item["queueId"] == "q2" and item["version"] == 1
    assert stale.registers["queueId"][1] == "q2"  # and the stale writer learned the truth


@scenarios.add
def reads_are_batched_and_return_what_was_written(client, table, tmp_path):
    sink = DynamoSink(client, table, derive)
    states = {f"c{i}": state(("queueId", i + 1, f"q{i}"), keys=(i,)) for i in range(150)}
    sink.write({cid: copy(s) for cid, s in states.items()})
    found = sink.read(list(states) + ["absent"])
    assert set(found) == set(states)
    assert found["c7"].registers == states["c7"].registers and found["c7"].recent_keys == [7]
    assert sink.counters.reads == 2  # 150 keys: two BatchGetItem requests of at most 100


@scenarios.add
def dead_letters_in_a_table_are_keyed_by_shard_and_sequence(client, table, tmp_path):
    name = f"dead-letters-{uuid.uuid4().hex[:8]}"
    ensure_table(client, name, key="id")
    letters = DynamoDeadLetters(client, name)
    for _ in range(2):  # a re-delivery after a crash overwrites its twin
        for n in range(30):
            letters.add(DeadLetter("not JSON", b"\xff" * 10, "shardId-000000000001", str(n), "pk"))
        letters.flush()
    items = client.scan(TableName=name)["Items"]
    assert len(items) == 30
    assert {i["id"]["S"] for i in items} == {f"shardId-000000000001#{n}" for n in range(30)}
    assert items[0]["reason"]["S"] == "not JSON" and items[0]["data"]["B"] == b"\xff" * 10  # bytes as bytes
