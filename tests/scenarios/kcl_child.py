"""The KCL child (`processor kcl`) driven over the MultiLang protocol, as the daemon drives it, scenario
by scenario: checkpoints after flushes, shard end, graceful hand-off, an unexpected error, the lease
moving between workers (I14), what DynamoDB refuses (I15), no PII in the child's logs (I10).

Each takes (start, DynamoDB client, settings file): `start(config)` gives a child speaking the
protocol, a real process in tests/server and amazon_kclpy's KCLProcess over in-memory streams in
tests/unit. A child's `send` reads every line it writes on stdout as a protocol message: anything
else there breaks the protocol (I11).
"""
from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from pathlib import Path
from typing import Any, Callable, Protocol

from processor.config import Settings, load_settings
from processor.dynamodb.client import ensure_tables
from tests.conftest import T0, detail_event, table_items
from tests.scenarios import Scenarios

scenarios = Scenarios()
SHARD = "shardId-000000000009"


class Child(Protocol):
    checkpoints: list[str | None]  # every checkpoint the child asked for, in order

    def send(self, message: dict) -> dict:
        """Send an action; answer the child's checkpoints; return its status message."""

    def exit_after(self, message: dict) -> tuple[int | None, str, str]:
        """Send an action the child must die of: its exit status (None: it lives on), what it
        wrote on stdout meanwhile, and its stderr."""

    def close(self) -> tuple[int, str]:
        """End of input: the child's exit status and its stderr."""


Start = Callable[[Path], Child]


def write_settings(path: Path, settings: Settings) -> Path:
    path.write_text(settings.to_toml())
    return path


def child_config(root: Path, client: Any, endpoint: str | None = None) -> Path:
    """A child's settings: fresh tables in `client`'s DynamoDB, a state directory under `root`,
    a flush every 3 records and never on time (so the checkpoints are known in advance)."""
    settings = Settings(state_dir=str(root / "state"), flush_records=3, flush_seconds=3600, endpoint=endpoint,
                        table=f"c-{uuid.uuid4().hex[:8]}", dead_letter_table=f"d-{uuid.uuid4().hex[:8]}",
                        metrics_table=f"m-{uuid.uuid4().hex[:8]}")
    ensure_tables(client, settings.table, settings.dead_letter_table, settings.metrics_table)
    return write_settings(root / "child.toml", settings)


def variant(config: Path, name: str, **changes: Any) -> Path:
    """`config` with `changes`, as another file beside it."""
    return write_settings(config.parent / f"{name}.toml", dataclasses.replace(load_settings(str(config)), **changes))


def initialize(shard: str, checkpoint: str = "TRIM_HORIZON") -> dict:
    return {"action": "initialize", "shardId": shard, "sequenceNumber": checkpoint, "subSequenceNumber": 0}


def process(envelopes: list, first: int) -> dict:
    """A processRecords action: the envelopes (bytes as they are) with sequence numbers from `first`."""
    return {"action": "processRecords", "millisBehindLatest": 0, "records": [
        {"action": "record", "data": base64.b64encode(e if isinstance(e, bytes) else json.dumps(e).encode()).decode(),
         "partitionKey": "c1", "sequenceNumber": str(first + i), "subSequenceNumber": 0,
         "approximateArrivalTimestamp": T0 + 3_600_000} for i, e in enumerate(envelopes)]}


def tables(config: Path) -> tuple[str, str]:
    settings = load_settings(str(config))
    return settings.table, settings.dead_letter_table


def dead_letters(client: Any, config: Path) -> list[dict]:
    return client.scan(TableName=tables(config)[1])["Items"]


@scenarios.add
def a_shard_lifecycle_over_the_protocol(start, client, config):
    child = start(config)
    child.send(initialize("shardId-000000000007"))
    batch = [detail_event("c1", "customer.start", 1000), b"{not json",
             detail_event("c1", "acd.start", 2000, queueId="q1", ani="tel:+15555550100")]
    child.send(process(batch, 100))
    assert child.checkpoints == ["102"]  # three records reached flush_records: flushed, then checkpointed
    child.send(process([detail_event("c1", "user.start", 3000, userId="a")], 103))
    assert child.checkpoints == ["102"]  # below the flush threshold: buffered, not checkpointed
    child.send({"action": "shutdownRequested"})
    assert child.checkpoints == ["102", "103"]  # graceful hand-off: flushed and checkpointed
    child.send({"action": "leaseLost"})
    code, stderr = child.close()
    assert code == 0
    item = table_items(client, tables(config)[0])["c1"]
    assert (item["queueId"], item["agentUserId"], item["startTime"]) == ("q1", "a", T0 + 1000)
    (letter,) = dead_letters(client, config)
    assert letter["id"]["S"] == "shardId-000000000007#101" and letter["reason"]["S"].startswith("not JSON")
    assert "tel:+1555" not in stderr  # I10: no PII in logs


@scenarios.add
def shard_end_checkpoints_with_no_sequence(start, client, config):
    child = start(config)
    child.send(initialize("shardId-000000000001"))
    child.send(process([detail_event("c2", "acw", 5, wrapupCode="X")], 1))
    child.send({"action": "shardEnded"})
    assert child.checkpoints == [None]  # checkpoint() with no argument: SHARD_END
    assert child.close()[0] == 0


@scenarios.add
def an_unexpected_error_exits_the_child_loudly(start, client, config):
    """amazon_kclpy would swallow it and report the batch done; the child must die instead."""
    child = start(variant(config, "broken", table="no-such-table", flush_records=1))
    child.send(initialize("shardId-000000000002"))
    code, stdout, stderr = child.exit_after(process([detail_event("c3", "acw", 5, wrapupCode="X")], 1))
    assert code == 1
    assert stdout.strip() == ""  # no status for the failed batch: KCL will not skip it
    assert "exiting so KCL retries from the last checkpoint" in stderr


class Lease:
    """The daemon's side of one shard lease: its checkpoint, and the records after it."""

    def __init__(self, start: Start, stream: list[dict]):
        self.start = start
        self.stream = stream  # envelopes, sequence numbers 1..N
        self.checkpoint = "TRIM_HORIZON"

    def take(self, config: Path) -> Child:
        child = self.start(config)
        child.send(initialize(SHARD, self.checkpoint))
        return child

    def deliver(self, child: Child, count: int) -> None:
        """The next `count` records after the checkpoint (KCL re-delivers from there), one batch each."""
        first = int(self.checkpoint) + 1 if self.checkpoint.isdigit() else 1
        for seq in range(first, min(first + count, len(self.stream) + 1)):
            child.send(process([self.stream[seq - 1]], seq))
        if child.checkpoints:
            self.checkpoint = child.checkpoints[-1]

    def lose(self, child: Child) -> None:
        """The lease is taken away (stolen or expired): no flush, no checkpoint."""
        child.send({"action": "leaseLost"})
        assert child.close()[0] == 0


def two_workers(config: Path) -> tuple[Path, Path]:
    """Two workers' settings: one DynamoDB and its tables, a state directory each; a flush each record."""
    return tuple(variant(config, f"worker-{name}", state_dir=str(config.parent / f"state-{name}"), flush_records=1)
                 for name in "ab")


def transfers(*times_and_queues: tuple[int, str]) -> list[dict]:
    """One conversation's acd.start events, in this order."""
    return [detail_event("c1", "acd.start", t, queueId=q) for t, q in times_and_queues]


def queue_of(client: Any, config: Path) -> str:
    return table_items(client, tables(config)[0])["c1"]["queueId"]


@scenarios.add
def a_lease_that_comes_back_to_a_worker_does_not_trust_its_old_state(start, client, config):
    """A applies Q1@t1; B applies Q2@t2 and checkpoints; the lease returns to A (same disk) with Q1@t3.
    A's RocksDB still says Q1: trusted, Q1@t3 would be a no-op and DynamoDB would keep Q2."""
    a, b = two_workers(config)
    lease = Lease(start, transfers((1000, "Q1"), (2000, "Q2"), (3000, "Q1")))
    for worker in (a, b):
        child = lease.take(worker)
        lease.deliver(child, 1)
        lease.lose(child)
    assert lease.checkpoint == "2" and queue_of(client, a) == "Q2"
    child = lease.take(a)
    lease.deliver(child, 1)
    assert queue_of(client, a) == "Q1"  # right after the flush, not only after a hand-off
    lease.lose(child)


@scenarios.add
def a_stamp_advanced_only_locally_survives_a_lease_move_and_a_late_event(start, client, config):
    """A writes Q1@t1, then Q1@t3 re-sets the same value (no write); the lease moves; B rehydrates
    and then gets the late Q2@t2 (EventBridge retries for 24 h). Truth: Q1."""
    a, b = two_workers(config)
    lease = Lease(start, transfers((1000, "Q1"), (3000, "Q1"), (2000, "Q2")))
    child = lease.take(a)
    lease.deliver(child, 2)
    lease.lose(child)
    child = lease.take(b)
    lease.deliver(child, 3)
    assert queue_of(client, a) == "Q1"
    child.send({"action": "shutdownRequested"})
    assert child.checkpoints[-1] == "3"  # a graceful hand-off writes what was held and checkpoints it all
    lease.lose(child)


@scenarios.add
def a_graceful_hand_off_writes_held_stamps_so_the_next_owner_needs_no_replay(start, client, config):
    a, b = two_workers(config)
    lease = Lease(start, transfers((1000, "Q1"), (3000, "Q1"), (2000, "Q2")))
    child = lease.take(a)
    lease.deliver(child, 2)
    child.send({"action": "shutdownRequested"})
    lease.checkpoint = child.checkpoints[-1]
    lease.lose(child)
    assert lease.checkpoint == "2"
    child = lease.take(b)
    lease.deliver(child, 1)  # only the late Q2@t2 is left to deliver
    assert queue_of(client, a) == "Q1"
    lease.lose(child)


def nested(depth: int) -> dict:
    value: dict = {"leaf": "x"}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


@scenarios.add
def a_conversation_dynamodb_refuses_never_stalls_the_shard(start, client, config):
    """Two events under EventBridge's 256 KB make an item over DynamoDB's 400 KB; numbers out of
    range, nesting too deep for DynamoDB (32) and for botocore (~164), an id over 2,048 bytes and an
    event time of 1e20 each used to fail every flush (or poison RocksDB) and crash-loop the shard."""
    config = variant(config, "each-record", flush_records=1)
    big = "x" * 230_000
    stream = [detail_event("c1", "customer.start", 1000),
              detail_event("c1", "attributes", 2000, attributes={"notes": big}),
              detail_event("c1", "acw", 3000, wrapupCode=big),
              detail_event("c1", "acd.start", 4000, queueId="Q1"),
              detail_event("c2", "attributes", 5000, attributes={"n": 1e300}),
              detail_event("c3", "attributes", 5000, attributes=nested(40)),
              detail_event("c4", "attributes", 5000, attributes=nested(200)),
              detail_event("k" * 3000, "acd.start", 5000, queueId="Q1"),
              detail_event("c5", "acd.start", 10 ** 20 - T0, queueId="Q1"),
              detail_event("c1", "user.start", 6000, userId="agent-1")]
    lease = Lease(start, stream)
    child = lease.take(config)
    lease.deliver(child, len(stream))
    assert lease.checkpoint == str(len(stream))  # every flush completed and the checkpoint moved on
    child.send({"action": "shutdownRequested"})
    code, stderr = child.close()
    assert code == 0, stderr[-3000:]
    items = table_items(client, tables(config)[0])
    c1 = items["c1"]
    assert (c1["queueId"], c1["agentUserId"], c1["startTime"]) == ("Q1", "agent-1", T0 + 1000)  # the rest is stored
    assert [c1["attributes"], c1["wrapupCode"]].count(None) == 1  # the larger field dropped, the other kept
    assert items["c2"]["attributes"] is None and items["c3"]["attributes"] is None and items["c4"]["attributes"] is None
    assert "c5" not in items and not any(len(cid) > 2048 for cid in items)
    reasons: dict[str, list[str]] = {}
    for letter in dead_letters(client, config):
        reasons.setdefault(letter["conversationId"]["S"][:10], []).append(letter["reason"]["S"])
    assert any("400 KB" in reason for reason in reasons["c1"])
    assert reasons["c2"] == ["field attributes: number beyond DynamoDB's range (1E+126)"]
    assert reasons["c3"] == reasons["c4"] == ["field attributes: nested deeper than DynamoDB's 32 levels"]
    assert reasons["k" * 10] == ["conversation id longer than 2048 bytes"]
    assert reasons["c5"] == ["event time more than a day after the record arrived"]
    assert big not in stderr and '"notes"' not in stderr  # I10


@scenarios.add
def an_event_time_of_1e20_is_dead_lettered_not_stored_then_poisoning_local_state(start, client, config):
    """Stored in DynamoDB, then refused by the RocksDB encoder: the conversation was poisoned for good."""
    config = variant(config, "each-record", flush_records=1)
    lease = Lease(start, transfers((10 ** 20 - T0, "Q9"), (1000, "Q1")))
    child = lease.take(config)
    lease.deliver(child, 2)
    assert lease.checkpoint == "2"
    lease.lose(child)
    assert queue_of(client, config) == "Q1"
    (letter,) = dead_letters(client, config)
    assert letter["id"]["S"] == f"{SHARD}#1" and letter["conversationId"]["S"] == "c1"
    assert letter["reason"]["S"] == "event time more than a day after the record arrived"
