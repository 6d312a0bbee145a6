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

from processor.sink import ensure_table
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
