"""DynamoDB's answers as botocore parses them, where their shape is what is tested: a real boto3
client (the processor's own settings, region us-east-1, dummy credentials) with botocore's Stubber
in front, so nothing leaves the process. Failed conditions with and without the stored item (I5),
throttling (I9), a refusal no check foresaw (I15), and the unprocessed part of batch calls."""
from __future__ import annotations

from typing import Iterator

import pytest
from botocore.stub import ANY, Stubber

from processor.adapters.genesys import GenesysAdapter
from processor.dynamodb.client import dynamodb_client
from processor.dynamodb.deadletter_table import DynamoDeadLetters
from processor.dynamodb.item import KEY, to_item
from processor.dynamodb.sink import DynamoSink
from processor.model import DeadLetter
from processor.reduce import ConversationState
from tests.twins import PROBE_CONDITION, VERSION_CONDITION

pytestmark = pytest.mark.usefixtures("no_backoff")
derive = GenesysAdapter().derive
TABLE, DEAD_LETTERS = "conversations", "dead-letters"


def state(**fields: tuple[int, object]) -> ConversationState:
    return ConversationState({name: (stamp, value) for name, (stamp, value) in fields.items()}, [1])


def stored(cid: str, version: int, **fields: tuple[int, object]) -> dict:
    """An item as DynamoDB holds it."""
    return to_item(cid, state(**fields), version, derive, None)


def key(cid: str) -> dict:
    return {KEY: {"S": cid}}


def versioned_put(expected: int) -> dict:
    """The parameters of a conditional write over `expected` (the item itself: any)."""
    return {"TableName": TABLE, "Item": ANY, "ConditionExpression": VERSION_CONDITION,
            "ExpressionAttributeNames": {"#id": KEY, "#v": "version"},
            "ExpressionAttributeValues": {":expected": {"N": str(expected)}},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}


#: a probe: a put that can never happen, which DynamoDB validates before refusing its condition
PROBE = {"TableName": TABLE, "Item": ANY, "ConditionExpression": PROBE_CONDITION,
         "ExpressionAttributeNames": {"#v": "version"}, "ExpressionAttributeValues": {":never": {"N": "-1"}}}


@pytest.fixture
def client():
    return dynamodb_client(region="us-east-1", credentials={"aws_access_key_id": "testing",
                                                            "aws_secret_access_key": "testing"})


@pytest.fixture
def stubber(client) -> Iterator[Stubber]:
    """Stubbed answers in the order given; every one of them must have been asked for."""
    with Stubber(client) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


@pytest.fixture
def sent(client) -> list[dict]:
    """The parameters of every request the client made, in order."""
    requests: list[dict] = []
    client.meta.events.register("provide-client-params.dynamodb.*", lambda params, **_: requests.append(params))
    return requests


@pytest.mark.parametrize("returned", [True, False], ids=["with the item", "without the item"])
def test_a_failed_condition_merges_the_stored_item_and_writes_over_it(client, stubber, sent, returned):
    """ALL_OLD hands the stored item back with the failure; where it is missing, one strongly
    consistent GetItem reads it. Either way both writers' fields end up stored (I5)."""
    theirs = stored("c1", 3, queueId=(20, "q2"))
    stubber.add_client_error("put_item", "ConditionalCheckFailedException", expected_params=versioned_put(0),
                             modeled_fields={"Item": theirs} if returned else None)
    if not returned:
        stubber.add_response("get_item", {"Item": theirs},
                             {"TableName": TABLE, "Key": key("c1"), "ConsistentRead": True})
    stubber.add_response("put_item", {}, versioned_put(3))
    mine = state(wrapupCode=(30, "SALE"))
    DynamoSink(client, TABLE, derive).write({"c1": mine})
    written = sent[-1]["Item"]
    assert (written["queueId"], written["wrapupCode"], written["version"]) == ({"S": "q2"}, {"S": "SALE"}, {"N": "4"})
    assert mine.version == 4


def test_a_failed_condition_over_the_same_state_is_a_replay_and_writes_nothing_more(client, stubber):
    theirs = stored("c1", 1, queueId=(20, "q2"))
    stubber.add_client_error("put_item", "ConditionalCheckFailedException", expected_params=versioned_put(0),
                             modeled_fields={"Item": theirs})
    replayed = state(queueId=(20, "q2"))
    DynamoSink(client, TABLE, derive).write({"c1": replayed})
    assert replayed.version == 1


def test_a_throttled_write_is_retried_and_counted(client, stubber):
    stubber.add_client_error("put_item", "ProvisionedThroughputExceededException", expected_params=versioned_put(0))
    stubber.add_response("put_item", {}, versioned_put(0))
    sink, mine = DynamoSink(client, TABLE, derive), state(queueId=(1, "q"))
    sink.write({"c1": mine})
    assert (sink.counters.throttles, sink.counters.writes, mine.version) == (1, 2, 1)


def test_a_validation_error_is_traced_to_its_field_by_probes_and_the_rest_is_written(client, stubber, sent):
    """I15: DynamoDB refuses the item for a reason no check foresaw. Probes that write nothing
    find the field (the item with no value passes, then each value back, largest first); it is
    tombstoned and dead-lettered, the rest written."""
    refused = ("ValidationException", "One or more parameter values were invalid")
    stubber.add_client_error("put_item", *refused, expected_params=versioned_put(0))
    stubber.add_client_error("put_item", "ConditionalCheckFailedException", expected_params=PROBE)  # no value: passes
    stubber.add_client_error("put_item", *refused, expected_params=PROBE)  # wrapupCode back: refused
    stubber.add_client_error("put_item", "ConditionalCheckFailedException", expected_params=PROBE)  # queueId: passes
    stubber.add_response("put_item", {}, versioned_put(0))
    mine, handed_over = state(queueId=(10, "Q1"), wrapupCode=(12, "a longer value")), []
    refusals = DynamoSink(client, TABLE, derive).write({"c1": mine}, handed_over.extend)
    assert [(r.field, r.dropped) for r in refusals] == [("wrapupCode", (12, "a longer value"))]
    assert handed_over == refusals  # to the dead letters before the item without it is written
    probed = [request["Item"] for request in sent[1:4]]
    assert [("wrapupCode" in item and "S" in item["wrapupCode"], "S" in item["queueId"]) for item in probed] == [
        (False, False), (True, False), (False, True)]
    written = sent[-1]["Item"]
    assert (written["queueId"], written["wrapupCode"]) == ({"S": "Q1"}, {"NULL": True})


def keys_of(*cids: str) -> dict:
    """A BatchGetItem's RequestItems (or UnprocessedKeys) for these conversations."""
    return {TABLE: {"Keys": [key(cid) for cid in cids], "ConsistentRead": True}}


def test_keys_a_batch_get_leaves_unprocessed_are_asked_for_again(client, stubber):
    first = {"Responses": {TABLE: [stored("c1", 1, queueId=(1, "q1"))]}, "UnprocessedKeys": keys_of("c2")}
    stubber.add_response("batch_get_item", first, {"RequestItems": keys_of("c1", "c2")})
    rest = {"Responses": {TABLE: [stored("c2", 1, queueId=(1, "q2"))]}, "UnprocessedKeys": {}}
    stubber.add_response("batch_get_item", rest, {"RequestItems": keys_of("c2")})
    sink = DynamoSink(client, TABLE, derive)
    found = sink.read(["c1", "c2"])
    assert {cid: s.registers["queueId"][1] for cid, s in found.items()} == {"c1": "q1", "c2": "q2"}
    assert (sink.counters.reads, sink.counters.throttles) == (2, 1)


def test_items_a_batch_write_leaves_unprocessed_are_sent_again_and_only_they(client, stubber, sent):
    leftover = {DEAD_LETTERS: [{"PutRequest": {"Item": {"id": {"S": "shardId-000000000001#2"}}}}]}
    stubber.add_response("batch_write_item", {"UnprocessedItems": leftover}, {"RequestItems": {DEAD_LETTERS: ANY}})
    stubber.add_response("batch_write_item", {"UnprocessedItems": {}}, {"RequestItems": leftover})
    letters = DynamoDeadLetters(client, DEAD_LETTERS)
    for n in range(3):
        letters.add(DeadLetter("not JSON", b"{", "shardId-000000000001", str(n), "pk"))
    letters.flush()
    assert [len(request["RequestItems"][DEAD_LETTERS]) for request in sent] == [3, 1]
    assert letters.count == 3
