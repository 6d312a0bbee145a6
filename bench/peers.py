"""The patterns contact centers run today, written as their users write them.

Each peer handles one delivery at a time and writes the fields the event carries with an
UpdateItem (`SET`, `if_not_exists` for fields that keep their first value), as the threads and
tutorials do. Two consumers take deliveries in arrival order, as two concurrent Lambda
invocations would, so a duplicate can meet its original in flight.

`add_per_event` is the metrics Lambda of the same pipelines: no conversation state, one UpdateItem
`ADD` per delivery on one item per queue, media type and interval (the seeds' pattern): every
duplicate counts again, and a busy queue's item is one hot partition key.
"""
from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import deque
from typing import Any, Callable, Iterable, NamedTuple

import orjson
from botocore.exceptions import ClientError

from processor.adapters import Adapter, parse_time_ms
from bench.workload import Delivery, parse
from processor.analytics.contribution import QUEUE, AnalyticsSettings, interval_text
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
    for i, (name, (stamp, value)) in enumerate(sorted(delivery.sets.items())):
        names[f"#f{i}"], values[f":v{i}"] = name, serialize(value)
        keeps_first = stamp < 0
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


_DETAIL_TOPIC = re.compile(r"^v2\.detail\.events\.conversation\.[^.]+\.(.+)$")
#: the queue metrics `add_per_event` keeps (no answer or abandon times: it pairs no events)
ADD_PER_EVENT_METRICS = ("nOffered", "nAnswered", "nAbandon", "nFlowOut", "tTalk", "tHeld", "nTransferred",
                         "nHandled", "nAcw", "tAcw")
_OUTCOME_COUNTS = {"ANSWERED": "nAnswered", "ABANDON": "nAbandon", "FLOW_OUT": "nFlowOut"}


def event_amounts(subtopic: str, body: dict[str, Any]) -> dict[str, int]:
    """What one detail event adds to its queue's cell, read as a metrics Lambda reads it."""
    if subtopic == "acd.start":
        return {"nOffered": 1}
    if subtopic == "acd.end":
        counted = _OUTCOME_COUNTS.get(body.get("acdOutcome"))
        return {counted: 1} if counted else {}
    if subtopic == "user.end":
        amounts = {"tTalk": _whole(body.get("interactingDurationMs")), "tHeld": _whole(body.get("heldDurationMs")),
                   "nHandled": 1}
        if body.get("disconnectType") == "TRANSFER":
            amounts["nTransferred"] = 1
        return amounts
    if subtopic == "acw":
        return {"nAcw": 1, "tAcw": _whole(body.get("wrapupDurationMs"))}
    return {}


def _whole(value: Any) -> int:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


class AddPerEvent:
    """Per delivery, duplicates included: UpdateItem `ADD` on `queueId#mediaType#interval` (the
    interval of the event's own eventTime). Keeps no conversation state: no writes to justify, no
    pairing of a start with its end."""

    def __init__(self, client: Any, table: str, analytics: AnalyticsSettings | None = None):
        self.client, self.table = client, table
        self.analytics = analytics or AnalyticsSettings()
        self.writes: list[tuple[int, list[str]]] = []  # (delivery index, metrics added)

    def setup(self) -> None:
        ensure_table(self.client, self.table, key="pk")

    def handle(self, delivery: Delivery) -> None:
        detail = delivery.envelope.get("detail") or {}
        body = detail.get("eventBody") or {}
        match = _DETAIL_TOPIC.match(str(detail.get("topicName", "")))
        amounts = {name: amount for name, amount in event_amounts(match.group(1), body).items() if amount} \
            if match else {}
        queue_id, media_type = body.get("queueId"), body.get("mediaType")
        time_ms = parse_time_ms(body.get("eventTime"))
        if time_ms is None:
            time_ms = parse_time_ms(delivery.envelope.get("time"))
        if not amounts or not isinstance(queue_id, str) or time_ms is None:
            return
        interval = interval_text(self.analytics.interval_of(time_ms))
        names = {"#kind": "kind", "#queue": "queueId", "#media": "mediaType", "#interval": "interval"}
        values = {":kind": {"S": QUEUE}, ":queue": {"S": queue_id}, ":media": {"S": str(media_type)},
                  ":interval": {"S": interval}}
        adds = []
        for n, (metric, amount) in enumerate(sorted(amounts.items())):
            names[f"#m{n}"], values[f":m{n}"] = metric, {"N": str(amount)}
            adds.append(f"#m{n} :m{n}")
        self.client.update_item(
            TableName=self.table, Key={"pk": {"S": f"{queue_id}#{media_type}#{interval}"}},
            UpdateExpression="SET #kind = :kind, #queue = :queue, #media = :media, #interval = :interval ADD "
                             + ", ".join(adds), ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        self.writes.append((delivery.index, sorted(amounts)))


PEER_CLASSES: dict[str, Callable[..., Any]] = {
    "naive": Naive, "check_then_write": CheckThenWrite,
    "timestamp_condition": TimestampCondition, "powertools": Powertools, "add_per_event": AddPerEvent}


def consume(peer: Any, lines: Iterable[bytes], adapter: Adapter, consumers: int = CONSUMERS) -> int:
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
