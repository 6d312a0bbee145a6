"""DynamoDB clients and tables: botocore's own retries off (`processor.dynamodb.retry` owns the
policy), and the on-demand tables the processor and the local stack create.

Two clients: `dynamodb_client`, boto3's, for the control plane (tables, waiters, scans, exports),
and `data_plane_client` for the six calls a flush makes, boto3-shaped at a fraction of boto3's
CPU (`processor.dynamodb.dataplane`). Anything that takes the data-plane client takes boto3's too.
"""
from __future__ import annotations

import ssl
from typing import Any, Mapping

import boto3
import botocore.session
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.httpsession import get_cert_path
from botocore.utils import get_environ_proxies

from processor.analytics import layout
from processor.deadletters import KEY as DEAD_LETTER_KEY
from processor.dynamodb.dataplane import DataPlaneClient, ModeledErrors
from processor.dynamodb.item import KEY


def dynamodb_client(endpoint_url: str | None = None, region: str | None = None, pool: int = 32,
                    credentials: Mapping[str, str] | None = None) -> Any:
    """A DynamoDB client with botocore's own retries off: `processor.dynamodb.retry` owns the policy.
    Credentials come from the standard provider chain unless given (`aws_access_key_id`, ...)."""
    config = Config(retries={"max_attempts": 1, "mode": "standard"}, max_pool_connections=pool,
                    connect_timeout=5, read_timeout=30)
    return boto3.client("dynamodb", endpoint_url=endpoint_url, region_name=region, config=config, **(credentials or {}))


def data_plane_client(endpoint_url: str | None = None, region: str | None = None, pool: int = 32,
                      credentials: Mapping[str, str] | None = None) -> Any:
    """The client for PutItem, GetItem, BatchGetItem, BatchWriteItem, UpdateItem and
    TransactWriteItems: `DataPlaneClient`, a drop-in for boto3's client in those six calls.

    Endpoint, region and credentials resolve exactly as for `dynamodb_client` (botocore does it:
    `AWS_ENDPOINT_URL_DYNAMODB`, profiles, the standard credential chain with its refreshes, ECS
    container credentials, `AWS_CA_BUNDLE`), once, here. Where an HTTP proxy is configured for the
    endpoint, boto3's own client is returned: the data-plane client speaks to DynamoDB directly."""
    session = botocore.session.get_session()
    if credentials:
        session.set_credentials(credentials["aws_access_key_id"], credentials["aws_secret_access_key"],
                                credentials.get("aws_session_token"))
    resolved = session.create_client("dynamodb", endpoint_url=endpoint_url, region_name=region)
    url = resolved.meta.endpoint_url
    if get_environ_proxies(url):
        return dynamodb_client(endpoint_url, region, pool, credentials)
    tls = None
    if url.startswith("https:"):  # verified against the CA bundle botocore would use
        tls = ssl.create_default_context(cafile=session.get_config_variable("ca_bundle") or get_cert_path(True))
    return DataPlaneClient(url, resolved.meta.region_name, session.get_credentials(), ModeledErrors(resolved),
                           pool=pool, ssl_context=tls)


def data_plane_for(control: Any) -> Any:
    """The data-plane client for the endpoint and region of `control`, a boto3 client, with
    credentials from the standard chain (as `dynamodb_client` gets them unless given). Any other
    client, such as the in-memory twin the tests hand over, is its own data plane."""
    if not isinstance(control, BaseClient):
        return control
    return data_plane_client(control.meta.endpoint_url, region=control.meta.region_name)


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
