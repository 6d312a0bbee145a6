"""The shard engine against real DynamoDB (moto over HTTP): I4 crash/replay, I6 lease moves, I7."""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

import pytest

from processor.adapters.genesys import GenesysAdapter
from processor.deadletters import JsonlDeadLetters
from processor.engine import FlushPolicy, ShardEngine
from processor.model import Record
from processor.dynamodb.sink import DynamoSink
from devstack.storm import StormShape, storm
from processor.store import ShardStore
from tests.conftest import T0, detail_event, projections, records, redeliver, table_items

pytestmark = pytest.mark.server
genesys = GenesysAdapter()


class Crash(Exception):
    """The process died here."""


@dataclass
class Worker:
    """One KCL worker process for one shard: an engine on a state directory."""

    dynamodb: object
    table: str
    state_dir: str
    dead_letters_path: str
    sink: DynamoSink = field(init=False)
    engine: ShardEngine = field(init=False)

    def __post_init__(self):
        self.sink = DynamoSink(self.dynamodb, self.table, genesys.derive)
        self.store = ShardStore(self.state_dir)
        self.engine = ShardEngine("shardId-000000000000", genesys, self.store, self.sink,
                                  JsonlDeadLetters(self.dead_letters_path), FlushPolicy(max_records=10 ** 9))

    def die(self):
        self.store.close()  # the process is gone: RocksDB's lock goes with it


def run_shard(stream: list[Record], batch: int, dynamodb, table, state_dir, dead_letters, crash=None,
              versions_seen=None) -> tuple[str | None, list[Worker]]:
    """Feed `stream` like KCL: batches from the checkpoint, flush + checkpoint after each batch.

    `crash=(flush_number, step)` kills the worker at that step of that flush; a new worker then
    starts from KCL's checkpoint on the same state directory. Batches end where the uninterrupted
    run's end (a replay from a checkpoint held before its last batch re-reads the records it
    already applied, then flushes where that run flushed). Returns the final checkpoint.
    """
    checkpoint: str | None = None
    workers, flushes = [], 0
    while True:
        worker = Worker(dynamodb, table, state_dir, dead_letters)
        workers.append(worker)
        chunks = [stream[start:start + batch] for start in range(0, len(stream), batch)]
        todo = [[r for r in chunk if checkpoint is None or int(r.sequence_number) > int(checkpoint)] for chunk in chunks]
        try:
            for chunk in (chunk for chunk in todo if chunk):
                worker.engine.process(chunk)
                flushes += 1
                step = crash[1] if crash and crash[0] == flushes else None
                _arm(worker, step)
                sequence = worker.engine.flush()
                if step == "before-checkpoint":
                    raise Crash
                checkpoint = sequence or checkpoint  # KCL checkpoint: only after the flush returned
                if versions_seen is not None:
                    for cid, item in table_items(dynamodb, table).items():
                        versions_seen.setdefault(cid, []).append(item["version"])
            checkpoint = worker.engine.flush(final=True)  # the end: a graceful hand-off
            worker.die()
            return checkpoint, workers
        except Crash:
            worker.die()


def _arm(worker: Worker, step: str | None) -> None:
    """Make the next flush die at `step`."""
    if step == "mid-writes":
        real = worker.sink._write_one
        calls = iter(range(10 ** 9))

        def write_some(*args):
            if next(calls) >= 3:
                raise Crash
            return real(*args)
        worker.sink._write_one = write_some
    elif step == "after-writes":  # the next step, dead letters, never happens
        def die_after_writes():
            raise Crash
        worker.engine._dead_letters.flush = die_after_writes
    elif step == "after-commit":
        real_commit = worker.store.commit

        def commit_then_die(*args):
            real_commit(*args)
            raise Crash
        worker.store.commit = commit_then_die


def storm_records(conversations=60, seed=3) -> list[Record]:
    lines = list(storm(StormShape(conversations=conversations, seed=seed)))
    return [Record(line, str(1000 + i), "pk") for i, line in enumerate(lines)]


@pytest.fixture(scope="module")
def stream():
    return storm_records()


@pytest.fixture(scope="module")
def uninterrupted(stream, dynamodb, tmp_path_factory):
    from processor.dynamodb.client import ensure_table
    table = "uninterrupted"
    ensure_table(dynamodb, table)
    root = tmp_path_factory.mktemp("uninterrupted")
    run_shard(stream, 97, dynamodb, table, str(root / "state"), str(root / "dl.jsonl"))
    return table_items(dynamodb, table)


@pytest.mark.parametrize("step", ["mid-writes", "after-writes", "after-commit", "before-checkpoint"])
@pytest.mark.parametrize("flush_number", [1, 4])
def test_a_crash_at_any_step_of_a_flush_loses_nothing_and_duplicates_nothing(
        step, flush_number, stream, uninterrupted, dynamodb, table, tmp_path):
    """I4: crash, restart from the last checkpoint: the table equals the uninterrupted run's."""
    seen: dict[str, list[int]] = {}
    checkpoint, workers = run_shard(stream, 97, dynamodb, table, str(tmp_path / "state"),
                                    str(tmp_path / "dl.jsonl"), crash=(flush_number, step), versions_seen=seen)
    assert len(workers) == 2  # it did crash, and a second worker finished the shard
    assert checkpoint == stream[-1].sequence_number
    final = table_items(dynamodb, table)
    assert final == uninterrupted  # same projection, bookkeeping and versions: no duplicate write
    assert all(v == sorted(v) for v in seen.values())  # no version ever went down


def test_records_at_or_below_the_committed_sequence_are_skipped(stream, dynamodb, table, tmp_path):
    state_dir = str(tmp_path / "state")
    run_shard(stream[:200], 50, dynamodb, table, state_dir, str(tmp_path / "dl"))
    worker = Worker(dynamodb, table, state_dir, str(tmp_path / "dl"))
    worker.engine.process(stream[:250])  # KCL redelivers from an older checkpoint
    assert worker.engine.counters.skipped == 200
    assert worker.engine.counters.events == 50
    worker.die()


def test_a_lease_moved_to_a_fresh_worker_rehydrates_and_keeps_deduplicating(dynamodb, table, tmp_path):
    """I6: the new owner has no local state; it reads the item and still knows the old keys."""
    cid = "conv-moves"
    start = detail_event(cid, "customer.start", 1000)
    queued = detail_event(cid, "acd.start", 2000, queueId="q1")
    answered = detail_event(cid, "user.start", 3000, userId="agent-1")
    first = Worker(dynamodb, table, str(tmp_path / "a"), str(tmp_path / "dl"))
    first.engine.process(records([start, queued], start=1))
    first.engine.flush()
    first.die()

    second = Worker(dynamodb, table, str(tmp_path / "b"), str(tmp_path / "dl"))  # a fresh disk
    second.engine.process(records([redeliver(queued), queued, answered], start=10))
    second.engine.flush()
    counters = second.engine.counters
    assert (counters.conversations, counters.rehydrated) == (1, 1)
    assert counters.exact_repeats == 2 and counters.changes == 1
    assert second.sink.counters.writes == 1
    second.die()
    item = table_items(dynamodb, table)[cid]
    assert (item["queueId"], item["agentUserId"], item["startTime"], item["version"]) == ("q1", "agent-1", T0 + 1000, 2)


def test_a_lease_moved_mid_stream_gives_the_same_table(stream, uninterrupted, dynamodb, table, tmp_path):
    half = len(stream) // 2
    run_shard(stream[:half], 97, dynamodb, table, str(tmp_path / "a"), str(tmp_path / "dl"))
    run_shard(stream[half:], 97, dynamodb, table, str(tmp_path / "b"), str(tmp_path / "dl"))
    assert projections(dynamodb, table) == {cid: {k: v for k, v in item.items()
                                                  if not k.startswith("_") and k != "version"}
                                            for cid, item in uninterrupted.items()}


def test_poison_records_are_dead_lettered_and_the_shard_keeps_flowing(dynamodb, table, tmp_path):
    """I7: reason, raw bytes (base64), shard id and sequence number; counted; the rest applied."""
    good = detail_event("conv-ok", "acd.start", 1000, queueId="q1")
    no_id = detail_event("x", "acd.start", 1000, queueId="q1")
    del no_id["detail"]["eventBody"]["conversationId"]
    poison = [b"\xff\xfe not utf-8", b"{truncated", b"[1,2,3]", b"x" * (1024 * 1024 + 1), json.dumps(no_id).encode()]
    worker = Worker(dynamodb, table, str(tmp_path / "s"), str(tmp_path / "dead.jsonl"))
    batch = records(poison[:2] + [good] + poison[2:], start=500)
    worker.engine.process(batch)
    assert worker.engine.flush() == batch[-1].sequence_number  # the shard moved past them
    worker.die()
    letters = [json.loads(line) for line in open(tmp_path / "dead.jsonl")]
    assert [letter["reason"].split(":")[0] for letter in letters] == [
        "not UTF-8", "not JSON", "not a JSON object", "oversized", "missing conversation id at detail.eventBody.conversationId"]
    assert letters[0]["shardId"] == "shardId-000000000000" and letters[0]["sequenceNumber"] == "500"
    assert base64.b64decode(letters[0]["data"]) == poison[0]
    assert worker.engine.counters.rejected == 5
    assert projections(dynamodb, table)["conv-ok"]["queueId"] == "q1"


def test_an_adapter_bug_is_a_dead_letter_not_a_crash(dynamodb, table, tmp_path):
    worker = Worker(dynamodb, table, str(tmp_path / "s"), str(tmp_path / "dead.jsonl"))
    worker.engine._adapter = type("Broken", (), {"normalize": lambda self, e: {}["boom"], "derive": genesys.derive})()
    worker.engine.process(records([detail_event("c", "acd.start", 1, queueId="q")]))
    worker.engine.flush()
    worker.die()
    assert json.loads(open(tmp_path / "dead.jsonl").readline())["reason"] == "adapter error: KeyError"


def test_many_updates_to_one_conversation_in_a_flush_are_one_write(dynamodb, table, tmp_path):
    """I9: coalescing: a flush writes each changed conversation once."""
    events = [detail_event("busy", "attributes", 1000 + i, attributes={"step": str(i)}) for i in range(50)]
    worker = Worker(dynamodb, table, str(tmp_path / "s"), str(tmp_path / "dl"))
    worker.engine.process(records(events))
    worker.engine.flush()
    worker.die()
    assert worker.engine.counters.changes == 50
    assert worker.sink.counters.writes == 1
    assert table_items(dynamodb, table)["busy"]["attributes"] == {"step": "49"}


def test_a_noop_after_a_flush_writes_nothing(dynamodb, table, tmp_path):
    """I2 across flushes: a re-fire of the same attributes later in time is collapsed."""
    worker = Worker(dynamodb, table, str(tmp_path / "s"), str(tmp_path / "dl"))
    worker.engine.process(records([detail_event("c", "attributes", 1000, attributes={"a": "1"})]))
    worker.engine.flush()
    worker.engine.process(records([detail_event("c", "attributes", 2000, attributes={"a": "1"})]))
    worker.engine.flush()
    worker.die()
    assert worker.engine.counters.noop_collapsed == 1
    assert worker.sink.counters.writes == 1
