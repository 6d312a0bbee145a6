"""The embedded local stack: started and stopped by PID, Kinesis resharding as KCL needs it."""
from __future__ import annotations

import os
import socket
from typing import Any, Iterator

import boto3
import pytest
from botocore.exceptions import ClientError

from devstack.emulator import LocalEmulator



def test_it_starts_on_a_free_loopback_port_and_stops_by_pid():
    emulator = LocalEmulator().start()
    pid, port = emulator.pid, emulator.port
    os.kill(pid, 0)  # running
    emulator.stop()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", port))  # the port is free again


def test_a_split_closes_the_parent_and_its_end_names_the_children(emulator):
    kinesis = boto3.client("kinesis", endpoint_url=emulator.endpoint, region_name="us-east-1")
    kinesis.create_stream(StreamName="split", ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName="split", WaiterConfig={"Delay": 0.2})
    for n in range(10):
        kinesis.put_record(StreamName="split", Data=b"before", PartitionKey=f"k{n}")
    kinesis.split_shard(StreamName="split", ShardToSplit="shardId-000000000000", NewStartingHashKey=str(2 ** 127))
    landed = {kinesis.put_record(StreamName="split", Data=b"after", PartitionKey=f"k{n}")["ShardId"]
              for n in range(20)}
    assert landed == {"shardId-000000000001", "shardId-000000000002"}  # never the closed parent
    iterator = kinesis.get_shard_iterator(StreamName="split", ShardId="shardId-000000000000",
                                          ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    page = kinesis.get_records(ShardIterator=iterator, Limit=100)
    assert [r["Data"] for r in page["Records"]] == [b"before"] * 10  # the parent keeps its records
    assert "NextShardIterator" not in page or page["NextShardIterator"] is None
    assert sorted(c["ShardId"] for c in page["ChildShards"]) == ["shardId-000000000001", "shardId-000000000002"]


def test_list_shards_honours_the_shard_filter_kcl_uses(emulator):
    kinesis = boto3.client("kinesis", endpoint_url=emulator.endpoint, region_name="us-east-1")
    kinesis.create_stream(StreamName="filter", ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName="filter", WaiterConfig={"Delay": 0.2})
    kinesis.split_shard(StreamName="filter", ShardToSplit="shardId-000000000001",
                        NewStartingHashKey=str(2 ** 127 + 2 ** 126))

    def listed(**shard_filter):
        extra = {"ShardFilter": shard_filter} if shard_filter else {}
        return [s["ShardId"][-1] for s in kinesis.list_shards(StreamName="filter", **extra)["Shards"]]

    assert listed(Type="AT_TRIM_HORIZON") == ["0", "1"]  # children come later, via ChildShards
    assert listed(Type="AT_LATEST") == ["0", "2", "3"]
    assert listed(Type="FROM_TRIM_HORIZON") == listed() == ["0", "1", "2", "3"]
    assert listed(Type="AFTER_SHARD_ID", ShardId="shardId-000000000001") == ["2", "3"]


def test_injected_throttling_answers_like_dynamodb():
    with LocalEmulator(throttle=1.0) as throttled:
        client = boto3.client("dynamodb", endpoint_url=throttled.endpoint, region_name="us-east-1",
                              config=boto3.session.Config(retries={"max_attempts": 1}))
        with pytest.raises(ClientError) as error:
            client.get_item(TableName="any", Key={"k": {"S": "v"}})
        assert error.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
        client.list_tables()  # control-plane calls are never throttled


@pytest.fixture
def patched_dynamodb(monkeypatch) -> Iterator[Any]:
    """moto in-process with the emulator's transaction patch, as the emulator server runs it."""
    import moto
    import moto.dynamodb.models as dynamodb_models

    from devstack.emulator import dynamodb_patch

    monkeypatch.setattr(dynamodb_models.DynamoDBBackend, "transact_write_items", dynamodb_patch._transact_write_items)
    with moto.mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1", aws_access_key_id="testing",
                              aws_secret_access_key="testing")
        client.create_table(TableName="t", BillingMode="PAY_PER_REQUEST",
                            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}])
        for n in range(150):
            client.put_item(TableName="t", Item={"pk": {"S": f"k{n}"}, "v": {"N": "0"}})
        yield client


def bump(key: str, expected: int) -> dict[str, Any]:
    return {"Put": {"TableName": "t", "Item": {"pk": {"S": key}, "v": {"N": str(expected + 1)}},
                    "ConditionExpression": "v = :v", "ExpressionAttributeValues": {":v": {"N": str(expected)}}}}


def test_a_transaction_copies_each_item_it_names_once_for_its_rollback(patched_dynamodb, monkeypatch):
    """moto asks for the rollback copy once per action: copying every named item each time made a
    100-action transaction cost 10,000 item copies, and stalled the demo's emulator past boto3's read
    timeout once the sink wrote full transactions."""
    from moto.dynamodb.models.dynamo_type import Item

    copies = []
    deepcopy = Item.__deepcopy__
    monkeypatch.setattr(Item, "__deepcopy__", lambda item, memo: copies.append(item) or deepcopy(item, memo))
    patched_dynamodb.transact_write_items(TransactItems=[bump(f"k{n}", 0) for n in range(100)])
    assert len(copies) == 100
    assert patched_dynamodb.get_item(TableName="t", Key={"pk": {"S": "k99"}})["Item"]["v"] == {"N": "1"}


def test_a_cancelled_transaction_leaves_every_item_as_it_was(patched_dynamodb):
    actions = [bump(f"k{n}", 0) for n in range(99)] + [bump("k149", 7)]  # the last condition fails
    with pytest.raises(ClientError) as refused:
        patched_dynamodb.transact_write_items(TransactItems=actions)
    assert refused.value.response["Error"]["Code"] == "TransactionCanceledException"
    stored = patched_dynamodb.scan(TableName="t")["Items"]
    assert len(stored) == 150 and {item["v"]["N"] for item in stored} == {"0"}
