"""The sink and dead letters under DynamoDB's failure shapes, against the in-memory twin (unit tier)."""
from __future__ import annotations

import os
import stat

import pytest

from processor.adapters.genesys import GenesysAdapter
from processor.deadletters import MAX_INLINE_BYTES, JsonlDeadLetters
from processor.dynamodb.deadletter_table import DynamoDeadLetters
from processor.dynamodb.item import from_item, item_size
from processor.model import DeadLetter
from processor.reduce import ConversationState, adds_to, merge
from processor.dynamodb.retry import GaveUp
from processor.dynamodb.sink import MAX_CONFLICT_ROUNDS, DynamoSink, RefusedItem
from tests.twins import Faults, MemoryDynamoDB, client_error

pytestmark = pytest.mark.usefixtures("no_backoff")
derive = GenesysAdapter().derive


def state(**fields: tuple[int, object]) -> ConversationState:
    return ConversationState({name: (stamp, value) for name, (stamp, value) in fields.items()}, [1])


def stored(client: MemoryDynamoDB, cid: str = "c1") -> ConversationState:
    return from_item(client.items("conversations")[cid])[1]


def test_a_failed_condition_without_the_stored_item_falls_back_to_a_consistent_read():
    """Another emulator omits ALL_OLD's item (DynamoDB may too): the merge loop must not spin."""
    client = MemoryDynamoDB()
    DynamoSink(client, "conversations", derive).write({"c1": state(queueId=(20, "Q2"))})

    def strip_item(operation, kwargs):
        if operation == "put_item":
            try:
                client.put_item(**kwargs)
            except Exception as error:  # noqa: BLE001
                error.response.pop("Item", None)
                raise
            raise client_error("ConditionalCheckFailedException", "PutItem")  # applied above: now a replay

    late = state(queueId=(10, "Q1"), wrapupCode=(30, "SALE"))
    client.calls.clear()
    DynamoSink(Faults(client, strip_item), "conversations", derive).write({"c1": late})
    assert (stored(client).registers["queueId"][1], stored(client).registers["wrapupCode"][1]) == ("Q2", "SALE")
    assert client.calls.count("GetItem") >= 1 and len(client.calls) < 10


def test_a_merge_loop_that_never_settles_gives_up_loudly():
    client = MemoryDynamoDB()

    def always_conflict(operation, kwargs):
        if operation == "put_item":
            raise client_error("ConditionalCheckFailedException", "PutItem",
                               Item={"conversationId": {"S": "c1"}, "version": {"N": "7"}})

    with pytest.raises(GaveUp, match="conflicted"):
        DynamoSink(Faults(client, always_conflict), "conversations", derive).write({"c1": state(queueId=(1, "Q"))})
    assert client.calls.count("PutItem") == 0 and MAX_CONFLICT_ROUNDS <= 32


def test_a_field_dynamodb_refuses_for_a_reason_the_checks_do_not_know_is_found_and_dropped():
    client = MemoryDynamoDB()

    def refuse_wrapup_codes(operation, kwargs):
        item = kwargs.get("Item", {})
        if operation == "put_item" and item.get("wrapupCode", {}).get("S", "").startswith("\x00"):
            raise client_error("ValidationException", "PutItem", "some rule")

    sink = DynamoSink(Faults(client, refuse_wrapup_codes), "conversations", derive)
    s = state(queueId=(10, "Q1"), attributes=(11, {"a": "x" * 500}), wrapupCode=(12, "\x00odd"))
    refusals = sink.write({"c1": s})
    assert [(r.conversation_id, r.field, r.dropped) for r in refusals] == [("c1", "wrapupCode", (12, "\x00odd"))]
    saved = stored(client)
    assert saved.registers["wrapupCode"] == (12, None) and saved.registers["attributes"][1] == {"a": "x" * 500}
    assert s.version == saved.version == 1 and sink.counters.refused == 1


def test_a_table_that_refuses_every_item_is_a_loud_error_not_silent_loss():
    client = MemoryDynamoDB()

    def wrong_schema(operation, kwargs):
        if operation == "put_item":
            raise client_error("ValidationException", "PutItem", "One of the required keys was not given a value")

    with pytest.raises(RefusedItem, match="key schema"):
        DynamoSink(Faults(client, wrong_schema), "conversations", derive).write({"c1": state(queueId=(1, "Q"))})


def test_throttling_is_retried_for_as_long_as_it_lasts_and_counted():
    client, throttled = MemoryDynamoDB(), iter(range(40))

    def throttle_forty_times(operation, kwargs):
        if next(throttled, None) is not None:
            raise client_error("ProvisionedThroughputExceededException", operation)

    sink = DynamoSink(Faults(client, throttle_forty_times), "conversations", derive)
    sink.write({"c1": state(queueId=(1, "Q"))})  # 40 > the 10 attempts other failures get
    assert stored(client).registers["queueId"][1] == "Q" and sink.counters.throttles == 40


def test_other_transient_failures_get_a_bounded_number_of_attempts():
    def unavailable(operation, kwargs):
        raise client_error("ServiceUnavailable", operation)

    with pytest.raises(GaveUp, match="10 attempts"):
        DynamoSink(Faults(MemoryDynamoDB(), unavailable), "conversations", derive).write({"c1": state(queueId=(1, "Q"))})


def test_a_rehydrated_number_compares_equal_so_nothing_flips_or_is_rewritten():
    client = MemoryDynamoDB()
    sink = DynamoSink(client, "conversations", derive)
    mine = state(attributes=(5, {"n": 5, "f": 2.5}))
    sink.write({"c1": mine})
    client.tables["conversations"]["c1"]["attributes"]["M"]["n"] = {"N": "5.0"}  # as another writer may store it
    back = stored(client)
    assert merge(mine, back) is False and not adds_to(mine, back)


def test_dead_letters_store_bytes_as_binary_with_a_ttl_and_always_fit_an_item():
    client = MemoryDynamoDB()
    letters = DynamoDeadLetters(client, "dead-letters", retention_seconds=3600)
    record = b"\xff" * (1024 * 1024)  # the largest Kinesis record
    letters.add(DeadLetter("oversized", record, "shardId-000000000001", "42", "pk", "c1"))
    letters.add(DeadLetter("field wrapupCode: item over DynamoDB's 400 KB limit", b'"x"', "shardId-000000000001",
                           conversation_id="c1", field="wrapupCode", stamp=3000))
    letters.flush()
    items = client.items("dead-letters")
    whole = items["shardId-000000000001#42"]
    assert whole["data"]["B"] == record[:MAX_INLINE_BYTES] and whole["truncated"] == {"BOOL": True}
    assert whole["conversationId"] == {"S": "c1"} and int(whole["_ttl"]["N"]) > 0
    assert item_size(whole) < 400 * 1024
    field = items["shardId-000000000001#c1#wrapupCode#3000"]
    assert field["field"] == {"S": "wrapupCode"} and field["data"]["B"] == b'"x"'


def test_a_jsonl_dead_letter_file_is_readable_by_its_owner_only(tmp_path):
    path = tmp_path / "dl.jsonl"
    letters = JsonlDeadLetters(str(path))
    letters.add(DeadLetter("not JSON", b"{oops", "shardId-000000000001", "7"))
    letters.flush()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # raw payloads carry PII


def test_an_existing_dead_letter_file_is_made_owner_only_too(tmp_path):
    path = tmp_path / "dl.jsonl"
    path.write_bytes(b"")
    path.chmod(0o644)
    letters = JsonlDeadLetters(str(path))
    letters.add(DeadLetter("not JSON", b"{oops", "shardId-000000000001", "7"))
    letters.flush()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
