"""The KCL child (`processor kcl`) driven over the MultiLang protocol, as the daemon drives it.

stdout is the protocol channel (I11): every line the child writes there must be a protocol message.
"""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from processor.dynamodb.client import ensure_table
from tests.conftest import T0, detail_event, table_items

pytestmark = pytest.mark.server


class Child:
    """A `processor kcl` process and the daemon's side of the conversation."""

    def __init__(self, config: Path):
        self.process = subprocess.Popen([sys.executable, "-m", "processor.cli", "kcl", "--config", str(config)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True)
        self.checkpoints: list[str | None] = []

    def send(self, message: dict) -> dict:
        """Send an action; answer the child's checkpoints; return its final status message."""
        self.process.stdin.write(json.dumps(message) + "\n")
        self.process.stdin.flush()
        while True:
            line = self.process.stdout.readline()
            assert line, f"child closed stdout; stderr: {self.process.stderr.read()[-6000:]}"
            if not line.strip():
                continue  # amazon_kclpy frames each message with blank lines; the daemon skips them
            reply = json.loads(line)  # anything else on stdout breaks the protocol (I11)
            if reply["action"] == "checkpoint":
                self.checkpoints.append(reply["sequenceNumber"])
                self.process.stdin.write(json.dumps({"action": "checkpoint", "sequenceNumber": reply["sequenceNumber"],
                                                     "subSequenceNumber": reply.get("subSequenceNumber"),
                                                     "error": None}) + "\n")
                self.process.stdin.flush()
                continue
            assert reply == {"action": "status", "responseFor": message["action"]}
            return reply

    def close(self) -> tuple[int, str]:
        self.process.stdin.close()
        code = self.process.wait(timeout=30)
        return code, self.process.stderr.read()


def records(envelopes: list, first: int) -> list[dict]:
    return [{"action": "record", "data": base64.b64encode(e if isinstance(e, bytes) else json.dumps(e).encode()).decode(),
             "partitionKey": "c1", "sequenceNumber": str(first + i), "subSequenceNumber": 0,
             "approximateArrivalTimestamp": T0 + 3_600_000} for i, e in enumerate(envelopes)]


@pytest.fixture
def config(tmp_path, emulator, dynamodb) -> Path:
    table, dead = f"c-{uuid.uuid4().hex[:8]}", f"d-{uuid.uuid4().hex[:8]}"
    ensure_table(dynamodb, table)
    ensure_table(dynamodb, dead, key="id")
    path = tmp_path / "child.toml"
    path.write_text(f'[processor]\nstate_dir = "{tmp_path / "state"}"\nflush_records = 3\nflush_seconds = 3600\n'
                    f'[dynamodb]\nendpoint = "{emulator.endpoint}"\ntable = "{table}"\ndead_letter_table = "{dead}"\n')
    return path


def tables(config: Path) -> tuple[str, str]:
    text = config.read_text()
    return text.split('table = "')[1].split('"')[0], text.split('dead_letter_table = "')[1].split('"')[0]


def test_a_shard_lifecycle_over_the_protocol(config, dynamodb):
    table, dead = tables(config)
    child = Child(config)
    child.send({"action": "initialize", "shardId": "shardId-000000000007", "sequenceNumber": "TRIM_HORIZON",
                "subSequenceNumber": 0})
    batch = [detail_event("c1", "customer.start", 1000), b"{not json",
             detail_event("c1", "acd.start", 2000, queueId="q1", ani="tel:+15555550100")]
    child.send({"action": "processRecords", "records": records(batch, 100), "millisBehindLatest": 0})
    assert child.checkpoints == ["102"]  # three records reached flush_records: flushed, then checkpointed
    child.send({"action": "processRecords", "records": records([detail_event("c1", "user.start", 3000, userId="a")], 103),
                "millisBehindLatest": 0})
    assert child.checkpoints == ["102"]  # below the flush threshold: buffered, not checkpointed
    child.send({"action": "shutdownRequested"})
    assert child.checkpoints == ["102", "103"]  # graceful hand-off: flushed and checkpointed
    child.send({"action": "leaseLost"})
    code, stderr = child.close()
    assert code == 0
    item = table_items(dynamodb, table)["c1"]
    assert (item["queueId"], item["agentUserId"], item["startTime"]) == ("q1", "a", T0 + 1000)
    (letter,) = dynamodb.scan(TableName=dead)["Items"]
    assert letter["id"]["S"] == "shardId-000000000007#101" and letter["reason"]["S"].startswith("not JSON")
    assert "tel:+1555" not in stderr  # I10: no PII in logs


def test_shard_end_checkpoints_with_no_sequence(config):
    child = Child(config)
    child.send({"action": "initialize", "shardId": "shardId-000000000001", "sequenceNumber": "TRIM_HORIZON",
                "subSequenceNumber": 0})
    child.send({"action": "processRecords", "records": records([detail_event("c2", "acw", 5, wrapupCode="X")], 1),
                "millisBehindLatest": 0})
    child.send({"action": "shardEnded"})
    assert child.checkpoints == [None]  # checkpoint() with no argument: SHARD_END
    assert child.close()[0] == 0


def test_an_unexpected_error_exits_the_child_loudly(tmp_path, emulator):
    """amazon_kclpy would swallow it and report the batch done; the child must die instead."""
    path = tmp_path / "broken.toml"
    path.write_text(f'[processor]\nstate_dir = "{tmp_path / "state"}"\nflush_records = 1\n'
                    f'[dynamodb]\nendpoint = "{emulator.endpoint}"\ntable = "no-such-table"\n')
    child = Child(path)
    child.send({"action": "initialize", "shardId": "shardId-000000000002", "sequenceNumber": "TRIM_HORIZON",
                "subSequenceNumber": 0})
    child.process.stdin.write(json.dumps({"action": "processRecords", "millisBehindLatest": 0,
                                          "records": records([detail_event("c3", "acw", 5, wrapupCode="X")], 1)}) + "\n")
    child.process.stdin.flush()
    assert child.process.wait(timeout=60) == 1
    assert child.process.stdout.read().strip() == ""  # no status for the failed batch: KCL will not skip it
    assert "exiting so KCL retries from the last checkpoint" in child.process.stderr.read()


class StubCheckpointer:
    """Raises the given CheckpointError values in turn, then accepts."""

    def __init__(self, *errors: str):
        self.errors = list(errors)
        self.calls: list[str | None] = []

    def checkpoint(self, sequence_number=None, sub_sequence_number=None):
        from amazon_kclpy.checkpoint_error import CheckpointError

        self.calls.append(sequence_number)
        if self.errors:
            raise CheckpointError(self.errors.pop(0))


def test_checkpoint_errors_are_handled_as_kcl_documents(monkeypatch):
    from amazon_kclpy.checkpoint_error import CheckpointError

    from processor import kcl
    from processor.config import Settings

    monkeypatch.setattr(kcl.time, "sleep", lambda _: None)
    shard = kcl.ShardProcessor(Settings())
    throttled = StubCheckpointer("ThrottlingException", "ThrottlingException")
    shard._checkpoint(throttled, "42")
    assert throttled.calls == ["42", "42", "42"]  # retried until accepted
    shutting_down = StubCheckpointer("ShutdownException")
    shard._checkpoint(shutting_down, "43")  # accepted quietly: another worker takes over
    assert shutting_down.calls == ["43"]
    with pytest.raises(CheckpointError):
        shard._checkpoint(StubCheckpointer("InvalidStateException"), "44")
    with pytest.raises(CheckpointError):
        shard._checkpoint(StubCheckpointer(*["ThrottlingException"] * kcl.CHECKPOINT_ATTEMPTS), "45")


# --- Issue 9: two workers, one DynamoDB, the lease moving between them (I14), and poison (I15) ---

SHARD = "shardId-000000000009"


class Lease:
    """The daemon's side of one shard lease: its checkpoint, and the records after it."""

    def __init__(self, stream: list[dict]):
        self.stream = stream  # envelopes, sequence numbers 1..N
        self.checkpoint = "TRIM_HORIZON"

    def take(self, config: Path) -> Child:
        child = Child(config)
        child.send({"action": "initialize", "shardId": SHARD, "sequenceNumber": self.checkpoint,
                    "subSequenceNumber": 0})
        return child

    def deliver(self, child: Child, count: int) -> None:
        """The next `count` records after the checkpoint (KCL re-delivers from there), one batch each."""
        start = 0 if not self.checkpoint.isdigit() else int(self.checkpoint)
        for seq in range(start + 1, min(start + count, len(self.stream)) + 1):
            child.send({"action": "processRecords", "records": records([self.stream[seq - 1]], seq),
                        "millisBehindLatest": 0})
        if child.checkpoints:
            self.checkpoint = child.checkpoints[-1]

    def lose(self, child: Child) -> None:
        """The lease is taken away (stolen or expired): no flush, no checkpoint."""
        child.send({"action": "leaseLost"})
        assert child.close()[0] == 0


@pytest.fixture
def two_workers(config, tmp_path) -> tuple[Path, Path]:
    """Two workers' settings: one DynamoDB and its tables, a state directory each; a flush each record."""
    text = config.read_text().replace("flush_records = 3", "flush_records = 1")
    paths = []
    for name in ("a", "b"):
        path = tmp_path / f"worker-{name}.toml"
        path.write_text(text.replace(str(tmp_path / "state"), str(tmp_path / f"state-{name}")))
        paths.append(path)
    return paths[0], paths[1]


def queue_of(dynamodb, config: Path) -> str:
    return table_items(dynamodb, tables(config)[0])["c1"]["queueId"]


def test_a_lease_that_comes_back_to_a_worker_does_not_trust_its_old_state(two_workers, dynamodb):
    """A applies Q1@t1; B applies Q2@t2 and checkpoints; the lease returns to A (same disk) with Q1@t3.
    A's RocksDB still says Q1: trusted, Q1@t3 would be a no-op and DynamoDB would keep Q2."""
    a, b = two_workers
    lease = Lease([detail_event("c1", "acd.start", t, queueId=q) for t, q in [(1000, "Q1"), (2000, "Q2"), (3000, "Q1")]])
    worker = lease.take(a)
    lease.deliver(worker, 1)
    lease.lose(worker)
    worker = lease.take(b)
    lease.deliver(worker, 1)
    lease.lose(worker)
    assert lease.checkpoint == "2" and queue_of(dynamodb, a) == "Q2"
    worker = lease.take(a)
    lease.deliver(worker, 1)
    assert queue_of(dynamodb, a) == "Q1"  # right after the flush, not only after a hand-off
    lease.lose(worker)


def test_a_stamp_advanced_only_locally_survives_a_lease_move_and_a_late_event(two_workers, dynamodb):
    """A writes Q1@t1, then Q1@t3 re-sets the same value (no write); the lease moves; B rehydrates
    and then gets the late Q2@t2 (EventBridge retries for 24 h). Truth: Q1."""
    a, b = two_workers
    lease = Lease([detail_event("c1", "acd.start", t, queueId=q) for t, q in [(1000, "Q1"), (3000, "Q1"), (2000, "Q2")]])
    worker = lease.take(a)
    lease.deliver(worker, 2)
    lease.lose(worker)
    worker = lease.take(b)
    lease.deliver(worker, 3)
    assert queue_of(dynamodb, a) == "Q1"
    worker.send({"action": "shutdownRequested"})
    assert worker.checkpoints[-1] == "3"  # a graceful hand-off writes what was held and checkpoints it all
    lease.lose(worker)


def test_a_graceful_hand_off_writes_held_stamps_so_the_next_owner_needs_no_replay(two_workers, dynamodb):
    a, b = two_workers
    lease = Lease([detail_event("c1", "acd.start", t, queueId=q) for t, q in [(1000, "Q1"), (3000, "Q1"), (2000, "Q2")]])
    worker = lease.take(a)
    lease.deliver(worker, 2)
    worker.send({"action": "shutdownRequested"})
    lease.checkpoint = worker.checkpoints[-1]
    lease.lose(worker)
    assert lease.checkpoint == "2"
    worker = lease.take(b)
    lease.deliver(worker, 1)  # only the late Q2@t2 is left to deliver
    assert queue_of(dynamodb, a) == "Q1"
    lease.lose(worker)


def nested(depth: int) -> dict:
    value: dict = {"leaf": "x"}
    for _ in range(depth - 1):
        value = {"n": value}
    return value


def test_a_conversation_dynamodb_refuses_never_stalls_the_shard(config, dynamodb):
    """Two events under EventBridge's 256 KB make an item over DynamoDB's 400 KB; numbers out of
    range, nesting too deep for DynamoDB (32) and for botocore (~164), an id over 2,048 bytes and an
    event time of 1e20 each used to fail every flush (or poison RocksDB) and crash-loop the shard."""
    config.write_text(config.read_text().replace("flush_records = 3", "flush_records = 1"))
    table, dead = tables(config)
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
    lease = Lease(stream)
    worker = lease.take(config)
    lease.deliver(worker, len(stream))
    assert lease.checkpoint == str(len(stream))  # every flush completed and the checkpoint moved on
    worker.send({"action": "shutdownRequested"})
    code, stderr = worker.close()
    assert code == 0, stderr[-3000:]
    items = table_items(dynamodb, table)
    c1 = items["c1"]
    assert (c1["queueId"], c1["agentUserId"], c1["startTime"]) == ("Q1", "agent-1", T0 + 1000)  # the rest is stored
    assert [c1["attributes"], c1["wrapupCode"]].count(None) == 1  # the larger field dropped, the other kept
    assert items["c2"]["attributes"] is None and items["c3"]["attributes"] is None and items["c4"]["attributes"] is None
    assert "c5" not in items and not any(len(cid) > 2048 for cid in items)
    letters = {item["id"]["S"]: {k: v.get("S", v.get("N")) for k, v in item.items()}
               for item in dynamodb.scan(TableName=dead)["Items"]}
    by_conversation = {}
    for letter in letters.values():
        by_conversation.setdefault(letter["conversationId"][:10], []).append(letter["reason"])
    assert any("400 KB" in reason for reason in by_conversation["c1"])
    assert by_conversation["c2"] == ["field attributes: number beyond DynamoDB's range (1E+126)"]
    assert by_conversation["c3"] == by_conversation["c4"] == ["field attributes: nested deeper than DynamoDB's 32 levels"]
    assert by_conversation["k" * 10] == ["conversation id longer than 2048 bytes"]
    assert by_conversation["c5"] == ["event time more than a day after the record arrived"]
    assert big not in stderr and '"notes"' not in stderr  # I10


def test_an_event_time_of_1e20_is_dead_lettered_not_stored_then_poisoning_local_state(config, dynamodb):
    """Stored in DynamoDB, then refused by the RocksDB encoder: the conversation was poisoned for good."""
    config.write_text(config.read_text().replace("flush_records = 3", "flush_records = 1"))
    table, dead = tables(config)
    lease = Lease([detail_event("c1", "acd.start", 10 ** 20 - T0, queueId="Q9"),
                   detail_event("c1", "acd.start", 1000, queueId="Q1")])
    worker = lease.take(config)
    lease.deliver(worker, 2)
    assert lease.checkpoint == "2"
    lease.lose(worker)
    assert table_items(dynamodb, table)["c1"]["queueId"] == "Q1"
    (letter,) = dynamodb.scan(TableName=dead)["Items"]
    assert letter["id"]["S"] == f"{SHARD}#1" and letter["conversationId"]["S"] == "c1"
    assert letter["reason"]["S"] == "event time more than a day after the record arrived"
