"""The patterns contact centers run today, written as their users write them.

Each peer handles one delivery at a time and writes the fields the event carries with an
UpdateItem (`SET`, `if_not_exists` for fields that keep their first value), as the threads and
tutorials do. Two consumers take deliveries in arrival order, as two concurrent Lambda
invocations would, so a duplicate can meet its original in flight.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable, NamedTuple

import orjson
from botocore.exceptions import ClientError

from processor.adapters import Adapter
from bench.workload import Delivery, parse
from processor.dynamodb.item import KEY, serialize
from processor.dynamodb.client import ensure_table

CONSUMERS = 2
DEDUP_TTL_SECONDS = 24 * 3600


class RetryLater(Exception):
    """The delivery cannot be handled now (another invocation holds it); it comes back later."""


class Guard(NamedTuple):
    """A condition on the update, with the bookkeeping field it sets."""

    set_clause: str
    expression: str
    names: dict[str, str]
    values: dict[str, Any]


def update_fields(client: Any, table: str, delivery: Delivery, guard: Guard | None = None) -> list[str]:
    """UpdateItem setting the event's fields on its conversation; returns the names written."""
    names, values, clauses = {}, {}, []
    written = []
    for i, (name, register) in enumerate(sorted(delivery.sets.items())):
        names[f"#f{i}"], values[f":v{i}"] = name, serialize(register.value)
        keeps_first = register.stamp < 0
        clauses.append(f"#f{i} = if_not_exists(#f{i}, :v{i})" if keeps_first else f"#f{i} = :v{i}")
        if not keeps_first:
            written.append(name)
    request: dict[str, Any] = {}
    if guard is not None:
        clauses.append(guard.set_clause)
        names.update(guard.names)
        values.update(guard.values)
        request["ConditionExpression"] = guard.expression
    client.update_item(TableName=table, Key={KEY: {"S": delivery.conversation_id}},
                       UpdateExpression="SET " + ", ".join(clauses), ExpressionAttributeNames=names,
                       ExpressionAttributeValues=values, **request)
    return written


class Naive:
    """Writes every delivery's fields: no dedup at all."""

    def __init__(self, client: Any, table: str):
        self.client, self.table = client, table
        self.writes: list[tuple[int, list[str]]] = []  # acknowledged state writes: (delivery index, fields)

    def setup(self) -> None:
        ensure_table(self.client, self.table)

    def handle(self, delivery: Delivery) -> None:
        self.wrote(delivery, update_fields(self.client, self.table, delivery))

    def wrote(self, delivery: Delivery, names: list[str]) -> None:
        self.writes.append((delivery.index, names))  # list.append is atomic: safe across consumers


class CheckThenWrite(Naive):
    """The tutorial pattern: GetItem on a hash of `detail`; if absent, PutItem it with a TTL, then
    write the state. Not atomic: two consumers can both miss and both write."""

    def setup(self) -> None:
        super().setup()
        ensure_table(self.client, self.dedup_table, key="hash")

    @property
    def dedup_table(self) -> str:
        return self.table + "-seen"

    def handle(self, delivery: Delivery) -> None:
        digest = hashlib.sha256(orjson.dumps(delivery.envelope["detail"], option=orjson.OPT_SORT_KEYS)).hexdigest()
        key = {"hash": {"S": digest}}
        if "Item" in self.client.get_item(TableName=self.dedup_table, Key=key):
            return
        self.client.put_item(TableName=self.dedup_table,
                             Item={**key, "ttl": {"N": str(int(time.time()) + DEDUP_TTL_SECONDS)}})
        super().handle(delivery)


class TimestampCondition(Naive):
    """UpdateItem only if the item's `updated_at` is older than the event: drops late events and
    every event after the first in a millisecond."""

    def handle(self, delivery: Delivery) -> None:
        guard = Guard("#u = :t", "attribute_not_exists(#u) OR #u < :t", {"#u": "updated_at"},
                      {":t": {"N": str(delivery.time_ms)}})
        try:
            written = update_fields(self.client, self.table, delivery, guard)
        except ClientError as error:
            if error.response["Error"]["Code"] == "ConditionalCheckFailedException":
                return
            raise
        self.wrote(delivery, written)


class Powertools(Naive):
    """aws-lambda-powertools idempotency, keyed on the EventBridge `id` as its users key it, around
    the state write."""

    def setup(self) -> None:
        from aws_lambda_powertools.utilities.idempotency import (
            DynamoDBPersistenceLayer, IdempotencyConfig, idempotent_function)

        super().setup()
        self._current = threading.local()  # the delivery each consumer is handling
        ensure_table(self.client, self.idempotency_table, key="id")
        persistence = DynamoDBPersistenceLayer(table_name=self.idempotency_table, boto3_client=self.client)
        config = IdempotencyConfig(event_key_jmespath="id", expires_after_seconds=3600)
        self._handle = idempotent_function(self._write, data_keyword_argument="event",
                                           persistence_store=persistence, config=config)

    @property
    def idempotency_table(self) -> str:
        return self.table + "-idempotency"

    def _write(self, event: dict[str, Any]) -> dict[str, bool]:
        super().handle(self._current.delivery)
        return {"written": True}

    def handle(self, delivery: Delivery) -> None:
        from aws_lambda_powertools.utilities.idempotency.exceptions import IdempotencyAlreadyInProgressError

        self._current.delivery = delivery
        try:
            self._handle(event=delivery.envelope)
        except IdempotencyAlreadyInProgressError:
            raise RetryLater from None


PEER_CLASSES: dict[str, Callable[..., Naive]] = {
    "naive": Naive, "check_then_write": CheckThenWrite,
    "timestamp_condition": TimestampCondition, "powertools": Powertools}


def consume(peer: Naive, lines: Iterable[bytes], adapter: Adapter, consumers: int = CONSUMERS) -> int:
    """Hand the lines, in arrival order, to `consumers` concurrent workers, each parsing and handling
    its own; returns how many deliveries had to come back later (Lambda's async retry of a
    duplicate whose original was still in progress)."""
    source = enumerate(lines)
    retries: deque[Delivery] = deque()
    retried = [0]
    lock = threading.Lock()
    errors: list[BaseException] = []

    def next_delivery() -> Delivery | None:
        with lock:
            if retries:
                return retries.popleft()
            line = next(source, None)
        return None if line is None else parse(*line, adapter)

    def work() -> None:
        while not errors:
            delivery = next_delivery()
            if delivery is None:
                return
            try:
                peer.handle(delivery)
            except RetryLater:
                time.sleep(0.05)
                with lock:
                    retries.append(delivery)
                    retried[0] += 1
            except BaseException as error:  # noqa: BLE001 - surfaced after the threads stop
                errors.append(error)

    threads = [threading.Thread(target=work, name=f"consumer-{i}") for i in range(consumers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return retried[0]
