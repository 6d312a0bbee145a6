"""The data-plane client against moto over HTTP, beside boto3's client: each of the six calls,
made by both on the same stored state, gets the same answer or the same error (binary values,
ALL_OLD items of failed conditions, cancellation reasons, validation, missing tables, unprocessed
parts); throttling and a refused connection are retryable. The sink and engine scenarios of this
tier run on it (the `split` fixture of conftest.py), as the processor does."""
from __future__ import annotations

import socket
from typing import Any, Callable

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from devstack.emulator import LocalEmulator
from processor.dynamodb.client import data_plane_client, dynamodb_client
from processor.dynamodb.retry import is_retryable, is_throttling
from tests.conftest import table_items

BLOB = bytes(range(256))
CONDITION = "attribute_not_exists(#id) OR #v = :expected"


def stored(cid: str, version: int = 3) -> dict[str, Any]:
    """An item with binary values at the top, in a set, in a map and in a list."""
    return {"conversationId": {"S": cid}, "version": {"N": str(version)}, "_k": {"B": BLOB},
            "set": {"BS": [b"\x00", b"\xff"]}, "count": {"N": "7"},
            "nested": {"M": {"inner": {"B": b"in a map"}, "list": {"L": [{"B": b"in a list"}, {"N": "1.5"}]}}}}


def versioned(table: str, item: dict[str, Any], expected: int, all_old: bool = True) -> dict[str, Any]:
    """The sink's conditional put."""
    return {"TableName": table, "Item": item, "ConditionExpression": CONDITION,
            "ExpressionAttributeNames": {"#id": "conversationId", "#v": "version"},
            "ExpressionAttributeValues": {":expected": {"N": str(expected)}},
            **({"ReturnValuesOnConditionCheckFailure": "ALL_OLD"} if all_old else {})}


def adds(table: str, cid: str, amount: int) -> dict[str, Any]:
    """A metric partial's ADD, as a transaction holds it."""
    return {"Update": {"TableName": table, "Key": {"conversationId": {"S": cid}}, "UpdateExpression": "ADD #n :n",
                       "ExpressionAttributeNames": {"#n": "count"}, "ExpressionAttributeValues": {":n": {"N": str(amount)}}}}


#: name -> (operation, its arguments for a table, the items stored before it)
CASES: dict[str, tuple[str, Callable[[str], dict[str, Any]], list[dict[str, Any]]]] = {
    "put written, ALL_OLD returned": ("put_item", lambda t: {"TableName": t, "Item": stored("c1", 4),
                                                             "ReturnValues": "ALL_OLD"}, [stored("c1")]),
    "put over the expected version": ("put_item", lambda t: versioned(t, stored("c1", 4), 3), [stored("c1")]),
    "put, condition failed, ALL_OLD item": ("put_item", lambda t: versioned(t, stored("c1", 4), 2), [stored("c1")]),
    "put, condition failed, no item asked": ("put_item", lambda t: versioned(t, stored("c1", 4), 2, all_old=False),
                                             [stored("c1")]),
    "put refused (ValidationException)": ("put_item", lambda t: {"TableName": t, "Item": {"conversationId": {"S": ""}}},
                                          []),
    "put to a missing table": ("put_item", lambda t: {"TableName": "absent-table", "Item": stored("c1")}, []),
    "get a binary item": ("get_item", lambda t: {"TableName": t, "Key": {"conversationId": {"S": "c1"}},
                                                 "ConsistentRead": True}, [stored("c1")]),
    "get an absent item": ("get_item", lambda t: {"TableName": t, "Key": {"conversationId": {"S": "none"}}}, []),
    "get from a missing table": ("get_item", lambda t: {"TableName": "absent-table",
                                                        "Key": {"conversationId": {"S": "c1"}}}, []),
    "batch get of 100 keys, half stored": ("batch_get_item", lambda t: {"RequestItems": {t: {
        "Keys": [{"conversationId": {"S": f"c{i}"}} for i in range(100)], "ConsistentRead": True}}},
        [stored(f"c{i}") for i in range(0, 100, 2)]),
    "batch get from a missing table": ("batch_get_item", lambda t: {"RequestItems": {"absent-table": {
        "Keys": [{"conversationId": {"S": "c1"}}]}}}, []),
    "batch write of 25 binary items": ("batch_write_item", lambda t: {"RequestItems": {t: [
        {"PutRequest": {"Item": stored(f"w{i}")}} for i in range(25)]}}, []),
    "batch write refused (twin keys)": ("batch_write_item", lambda t: {"RequestItems": {t: [
        {"PutRequest": {"Item": stored("w1")}}, {"PutRequest": {"Item": stored("w1")}}]}}, []),
    "update ADD, UPDATED_NEW": ("update_item", lambda t: {"TableName": t, "Key": {"conversationId": {"S": "c1"}},
                                                          "UpdateExpression": "ADD #n :one",
                                                          "ExpressionAttributeNames": {"#n": "count"},
                                                          "ExpressionAttributeValues": {":one": {"N": "1"}},
                                                          "ReturnValues": "UPDATED_NEW"}, [stored("c1")]),
    "update, condition failed, ALL_OLD item": ("update_item", lambda t: {
        "TableName": t, "Key": {"conversationId": {"S": "c1"}}, "UpdateExpression": "ADD #n :one",
        "ConditionExpression": "#v = :never", "ExpressionAttributeNames": {"#n": "count", "#v": "version"},
        "ExpressionAttributeValues": {":one": {"N": "1"}, ":never": {"N": "-1"}},
        "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}, [stored("c1")]),
    "transaction: a put and ADDs": ("transact_write_items", lambda t: {"TransactItems": [
        {"Put": versioned(t, stored("c1", 4), 3)}, adds(t, "p1", 2), adds(t, "p2", 3), adds(t, "p3", -1)]},
        [stored("c1")]),
    "transaction cancelled, stored item in the reasons": ("transact_write_items", lambda t: {"TransactItems": [
        {"Put": versioned(t, stored("c1", 4), 2)}, adds(t, "p1", 2)]}, [stored("c1")]),
    "transaction refused (two actions on one item)": ("transact_write_items", lambda t: {"TransactItems": [
        {"Put": versioned(t, stored("c1", 4), 3)}, adds(t, "c1", 1)]}, [stored("c1")]),
}


def outcome(call: Callable[[], Any]) -> Any:
    try:
        return call()
    except ClientError as error:
        return error


def comparable(result: Any) -> tuple[Any, ...]:
    """An answer or error, less what differs between two requests (ids, dates, boto3's retry
    bookkeeping); a batch's items in key order (DynamoDB promises no order)."""
    response = dict(result.response if isinstance(result, ClientError) else result)
    metadata = response.pop("ResponseMetadata")
    for items in response.get("Responses", {}).values():
        items.sort(key=lambda item: item["conversationId"]["S"])
    return type(result).__name__, response, metadata["HTTPStatusCode"], sorted(metadata["HTTPHeaders"])


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_call_answers_as_boto3_does(case, dynamodb, data_plane, table):
    operation, arguments, seeds = CASES[case]
    params = arguments(table)
    results = []
    for client in (dynamodb, data_plane):
        for item in table_items(dynamodb, table):  # the same stored state for both
            dynamodb.delete_item(TableName=table, Key={"conversationId": {"S": item}})
        for item in seeds:
            dynamodb.put_item(TableName=table, Item=item)
        results.append(outcome(lambda: getattr(client, operation)(**params)))
    theirs, ours = results
    assert comparable(ours) == comparable(theirs)


def test_binary_values_come_back_as_bytes(dynamodb, data_plane, table):
    data_plane.put_item(TableName=table, Item=stored("c1"))
    assert data_plane.get_item(TableName=table, Key={"conversationId": {"S": "c1"}})["Item"] == stored("c1")
    assert dynamodb.get_item(TableName=table, Key={"conversationId": {"S": "c1"}})["Item"] == stored("c1")
    with pytest.raises(data_plane.exceptions.ConditionalCheckFailedException) as raised:
        data_plane.put_item(**versioned(table, stored("c1", 9), 8))
    assert raised.value.response["Item"] == stored("c1")


def test_a_throttled_endpoint_is_retryable():
    with LocalEmulator(throttle=1.0) as throttled:
        theirs = dynamodb_client(throttled.endpoint, region="us-east-1")
        ours = data_plane_client(throttled.endpoint, region="us-east-1")
        errors = [outcome(lambda: client.put_item(TableName="any", Item=stored("c1"))) for client in (theirs, ours)]
    assert comparable(errors[1]) == comparable(errors[0])
    assert is_retryable(errors[1]) and is_throttling(errors[1])


def test_a_refused_connection_is_retryable():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with pytest.raises(EndpointConnectionError) as raised:
        data_plane_client(endpoint, region="us-east-1").get_item(TableName="t", Key={"conversationId": {"S": "c"}})
    assert is_retryable(raised.value)
