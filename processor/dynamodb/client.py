"""DynamoDB clients and tables: botocore's own retries off (`processor.dynamodb.retry` owns the
policy), and the on-demand tables the processor and the local stack create."""
from __future__ import annotations

from typing import Any, Mapping

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from processor.analytics import layout
from processor.deadletters import KEY as DEAD_LETTER_KEY
from processor.dynamodb.item import KEY


def dynamodb_client(endpoint_url: str | None = None, region: str | None = None, pool: int = 32,
                    credentials: Mapping[str, str] | None = None) -> Any:
    """A DynamoDB client with botocore's own retries off: `processor.dynamodb.retry` owns the policy.
    Credentials come from the standard provider chain unless given (`aws_access_key_id`, ...)."""
    config = Config(retries={"max_attempts": 1, "mode": "standard"}, max_pool_connections=pool,
                    connect_timeout=5, read_timeout=30)
    return boto3.client("dynamodb", endpoint_url=endpoint_url, region_name=region, config=config, **(credentials or {}))


def table_exists(client: Any, table: str) -> bool:
    try:
        client.describe_table(TableName=table)
        return True
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        return False


def ensure_table(client: Any, table: str, key: str = KEY) -> None:
    """Create an on-demand table keyed by `key` (string) if it does not exist, and wait for it."""
    if table_exists(client, table):
        return
    client.create_table(TableName=table, BillingMode="PAY_PER_REQUEST",
                        AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
                        KeySchema=[{"AttributeName": key, "KeyType": "HASH"}])
    client.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})


def ensure_tables(client: Any, table: str, dead_letter_table: str | None = None, metrics_table: str | None = None) -> None:
    """The processor's tables, each keyed as its items are: conversations by conversation id, dead
    letters by id, metrics by their partition key (write-sharded partials and the directory)."""
    ensure_table(client, table)
    if dead_letter_table:
        ensure_table(client, dead_letter_table, key=DEAD_LETTER_KEY)
    if metrics_table:
        ensure_table(client, metrics_table, key=layout.KEY)
