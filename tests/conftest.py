"""Shared by every tier: Genesys samples, event builders, table helpers, the tier markers, and one
real DynamoDB API server per session (the `emulator` fixture; tests/unit refuses to start it, and
its `dynamodb` is the in-memory twin instead)."""
from __future__ import annotations

import copy
import itertools
import json
import os
import re
import signal
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest

from devstack.emulator import LocalEmulator
from processor.model import Record
from processor.dynamodb.client import dynamodb_client, ensure_table

FIXTURES = Path(__file__).parent / "fixtures"
GENESYS = FIXTURES / "genesys"

os.environ.update(LocalEmulator.environment({}))  # every test process and child talks to the emulator

# The Ctrl-C tests (`processor queues --watch`, `processor wallboard`) send SIGINT to the processes
# they start, which inherit an ignored SIGINT: a suite started as a background job of a shell without
# job control (`./dev test &` in a script) ignores it, and those processes then never stop.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def mark_directory(items: list[pytest.Item], directory: Path, marker: pytest.MarkDecorator) -> None:
    """Mark every test collected below `directory`: a tier is a directory, its marker follows."""
    for item in items:
        if item.path.is_relative_to(directory):
            item.add_marker(marker)


def sample(name: str) -> dict[str, Any]:
    """A Genesys sample envelope (fresh copy)."""
    matches = sorted(p for p in GENESYS.rglob(f"*{name}*") if p.suffix == ".json")
    assert matches, f"no sample matching {name}"
    return json.loads(matches[0].read_text())


def wrap_websocket_frame(frame: dict[str, Any]) -> dict[str, Any]:
    """A WebSocket notification frame as EventBridge would deliver the same topic."""
    template = re.sub(r"\.[^.]+\.conversations$", ".{id}.conversations", frame["topicName"])
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": template,
            "source": "aws.partner/genesys.com/cloud/test", "account": "123456789012",
            "time": "2022-07-04T20:08:26Z", "region": "us-east-1", "resources": [],
            "detail": copy.deepcopy(frame)}


def redeliver(envelope: dict[str, Any]) -> dict[str, Any]:
    """A Genesys re-emit: new EventBridge id, time and CorrelationId, the very same body."""
    again = copy.deepcopy(envelope)
    again["id"] = str(uuid.uuid4())
    again["time"] = "2030-01-01T00:00:00Z"
    again["detail"].setdefault("metadata", {})["CorrelationId"] = str(uuid.uuid4())
    again["detail"]["timestamp"] = "2030-01-01T00:00:00.000Z"
    return again


#: the epoch of test events: event times outside a sane window are refused (I15), so tests give
#: small offsets and `detail_event` places them after this moment (2026-01-01T00:00:00Z)
T0 = 1_767_225_600_000


def detail_event(conversation_id: str, subtopic: str, event_time: int, **fields: Any) -> dict[str, Any]:
    """A minimal Genesys detail event envelope, `event_time` ms after `T0` (any other value as is)."""
    if isinstance(event_time, int):
        event_time += T0
    body = {"eventTime": event_time, "conversationId": conversation_id, "mediaType": "VOICE",
            "direction": "INBOUND", **fields}
    return {"version": "0", "id": str(uuid.uuid4()),
            "detail-type": f"v2.detail.events.conversation.{{id}}.{subtopic}",
            "source": "aws.partner/genesys.com/cloud/test", "account": "123456789012",
            "time": "2025-01-01T00:00:00Z", "region": "us-east-1", "resources": [],
            "detail": {"topicName": f"v2.detail.events.conversation.{conversation_id}.{subtopic}", "version": "2",
                       "eventBody": body, "metadata": {"CorrelationId": str(uuid.uuid4())},
                       "timestamp": "2025-01-01T00:00:00.000Z"}}


_sequence = itertools.count(1)


def records(envelopes: list[Any], start: int | None = None) -> list[Record]:
    """Kinesis records carrying these envelopes (dicts are JSON-encoded; bytes pass as they are)."""
    first = next(_sequence) * 1_000_000 if start is None else start
    return [Record(e if isinstance(e, bytes) else orjson.dumps(e), str(first + i), "pk")
            for i, e in enumerate(envelopes)]


@pytest.fixture(scope="session")
def emulator():
    with LocalEmulator() as running:
        yield running


@pytest.fixture(scope="session")
def dynamodb(emulator):
    """The tier's DynamoDB client: moto over HTTP (tests/unit overrides it with the in-memory twin)."""
    return dynamodb_client(emulator.endpoint, region="us-east-1")


@pytest.fixture
def table(dynamodb) -> str:
    """A fresh conversation table in the tier's DynamoDB."""
    name = f"conversations-{uuid.uuid4().hex[:10]}"
    ensure_table(dynamodb, name)
    return name


def table_items(client: Any, table: str) -> dict[str, dict[str, Any]]:
    from processor.dynamodb.item import unwrap

    items = {}
    for page in client.get_paginator("scan").paginate(TableName=table, ConsistentRead=True):
        for item in page["Items"]:
            plain = unwrap(item)
            items[plain["conversationId"]] = plain
    return items


def projections(client: Any, table: str) -> dict[str, dict[str, Any]]:
    """conversation id -> projection (attributes not starting with `_`, without the version)."""
    return {cid: {k: v for k, v in item.items() if not k.startswith("_") and k != "version"}
            for cid, item in table_items(client, table).items()}
