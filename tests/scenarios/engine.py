"""The shard engine, scenario by scenario: I4 crash and replay, I6 lease moves, I7 bad records,
I1/I2 across flushes, I9 coalescing. Each takes (DynamoDB client, table, tmp_path).

A crash is injected through wrappers around the engine's public parts (tests.twins): a client
that dies in the middle of the writes, a dead-letter destination that dies when flushed, a store
that dies right after its commit; the last step, between the flush and the KCL checkpoint, is
the caller never checkpointing.
"""
from __future__ import annotations

import base64
import functools
import json
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from devstack.storm import StormShape, storm
from processor.adapters import Adapter
from processor.adapters.genesys import GenesysAdapter
from processor.deadletters import JsonlDeadLetters
from processor.dynamodb.client import ensure_table
from processor.dynamodb.sink import DynamoSink
from processor.engine import FlushPolicy, ShardEngine
from processor.model import Record
from tests.conftest import T0, detail_event, projections, records, redeliver, table_items
from tests.scenarios import Scenarios
from tests.twins import Crash, CrashingStore, DyingDeadLetters, Faults, crash_after

genesys = GenesysAdapter()
scenarios = Scenarios()
SHARD = "shardId-000000000000"
#: where a flush can die: among the DynamoDB writes, after them (before the dead letters), after
#: the local commit, and after the flush returned but before KCL got the checkpoint
STEPS = ("mid-writes", "after-writes", "after-commit", "before-checkpoint")
BATCH = 97


@dataclass
class Worker:
    """One KCL worker process for one shard: an engine on a state directory. While `dies_at` names
    a step of STEPS, a flush dies there."""

    client: Any
    table: str
    root: Path
    adapter: Adapter = genesys
    dies_at: str | None = None
    sink: DynamoSink = field(init=False)
    engine: ShardEngine = field(init=False)

    def __post_init__(self) -> None:
        self.dead_letters = self.root / "dead-letters.jsonl"
        self.sink = DynamoSink(Faults(self.client, crash_after(3, "put_item", self.dying("mid-writes"))), self.table,
                               self.adapter.derive)
        self.store = CrashingStore(str(self.root / "state"), armed=self.dying("after-commit"))
        letters = DyingDeadLetters(JsonlDeadLetters(str(self.dead_letters)), self.dying("after-writes"))
        self.engine = ShardEngine(SHARD, self.adapter, self.store, self.sink, letters, FlushPolicy(max_records=10 ** 9))

    def dying(self, step: str) -> Callable[[], bool]:
        """What a fault wrapper asks: is this worker to die at `step` now?"""
        return lambda: self.dies_at == step

    def apply(self, batch: list[Record]) -> str | None:
        """Process a batch and flush it; the sequence number safe to checkpoint."""
        self.engine.process(batch)
        return self.engine.flush()

    def die(self) -> None:
        """The process is gone: its writes in flight end with it, RocksDB's lock goes with it."""
        self.sink.close()
        self.store.close()


def run_shard(stream: list[Record], client: Any, table: str, root: Path, crash: tuple[int, str] | None = None,
              versions: dict[str, list[int]] | None = None) -> tuple[str | None, int]:
    """Feed `stream` like KCL: batches from the checkpoint, flush + checkpoint after each batch.

    `crash=(flush_number, step)` kills the worker at that step of that flush; a new worker then
    starts from KCL's checkpoint on the same state directory. Batches end where the uninterrupted
    run's end (a replay from a checkpoint held before its last batch re-reads the records it
    already applied, then flushes where that run flushed). `versions` collects each item's version
    after every flush. Returns the final checkpoint and how many workers it took.
    """
    chunks = [stream[start:start + BATCH] for start in range(0, len(stream), BATCH)]
    checkpoint: str | None = None
    workers = flushes = 0
    while True:
        worker = Worker(client, table, root)
        workers += 1
        try:
            for chunk in chunks:
                todo = [r for r in chunk if checkpoint is None or int(r.sequence_number) > int(checkpoint)]
                if not todo:
                    continue
                flushes += 1
                worker.dies_at = crash[1] if crash and crash[0] == flushes else None
                sequence = worker.apply(todo)
                if worker.dies_at == "before-checkpoint":
                    raise Crash("died before the KCL checkpoint")
                checkpoint = sequence or checkpoint  # KCL checkpoint: only after the flush returned
                if versions is not None:
                    for cid, item in table_items(client, table).items():
                        versions.setdefault(cid, []).append(item["version"])
            return worker.engine.flush(final=True), workers  # the end: a graceful hand-off
        except Crash:
            continue
        finally:
            worker.die()


@functools.lru_cache(maxsize=None)
def storm_records(conversations: int = 60, seed: int = 3) -> tuple[Record, ...]:
    lines = storm(StormShape(conversations=conversations, seed=seed))
    return tuple(Record(line, str(1000 + i), "pk") for i, line in enumerate(lines))


@functools.lru_cache(maxsize=None)
def uninterrupted(client: Any) -> dict[str, dict]:
    """The table the storm gives with no crash and one worker (once per DynamoDB)."""
    table = f"uninterrupted-{uuid.uuid4().hex[:8]}"
    ensure_table(client, table)
    with tempfile.TemporaryDirectory() as root:
        run_shard(list(storm_records()), client, table, Path(root))
    return table_items(client, table)


def plain(items: dict[str, dict]) -> dict[str, dict]:
    """The projections of items (attributes not starting with `_`, without the version)."""
    return {cid: {k: v for k, v in item.items() if not k.startswith("_") and k != "version"}
            for cid, item in items.items()}


@scenarios.grid(step=STEPS, flush_number=(1, 4))
def a_crash_at_any_step_of_a_flush_loses_nothing_and_duplicates_nothing(client, table, tmp_path, step, flush_number):
    """I4: crash, restart from the last checkpoint: the table equals the uninterrupted run's."""
    stream, seen = list(storm_records()), {}
    checkpoint, workers = run_shard(stream, client, table, tmp_path, crash=(flush_number, step), versions=seen)
    assert workers == 2  # it did crash, and a second worker finished the shard
    assert checkpoint == stream[-1].sequence_number
    assert table_items(client, table) == uninterrupted(client)  # same projection, bookkeeping, versions
    assert all(v == sorted(v) for v in seen.values())  # no version ever went down


@scenarios.add
def records_at_or_below_the_committed_sequence_are_skipped(client, table, tmp_path):
    stream = list(storm_records())
    run_shard(stream[:200], client, table, tmp_path)
    worker = Worker(client, table, tmp_path)
    worker.engine.process(stream[:250])  # KCL redelivers from an older checkpoint
    worker.die()
    assert (worker.engine.counters.skipped, worker.engine.counters.events) == (200, 50)


@scenarios.add
def a_redelivery_of_committed_records_alone_still_gets_its_checkpoint(client, table, tmp_path):
    """A worker committed locally and died before KCL's checkpoint: its successor on the same disk is
    handed the same records and nothing more (the stream is quiet). It applies none of them, yet a
    flush comes due and returns the last of them to checkpoint; without it KCL's checkpoint stayed
    behind for ever (the e2e kill -9 scenario, stuck at 1,356 of 2,018)."""
    stream = list(storm_records())
    run_shard(stream[:200], client, table, tmp_path)
    worker = Worker(client, table, tmp_path)
    worker.engine.process(stream[:200])
    assert worker.engine.flush_due(now=float("inf"))
    assert worker.engine.flush() == stream[199].sequence_number
    worker.die()


@scenarios.add
def a_lease_moved_to_a_fresh_worker_rehydrates_and_keeps_deduplicating(client, table, tmp_path):
    """I6: the new owner has no local state; it reads the item and still knows the old keys."""
    cid = "conv-moves"
    start = detail_event(cid, "customer.start", 1000)
    queued = detail_event(cid, "acd.start", 2000, queueId="q1")
    answered = detail_event(cid, "user.start", 3000, userId="agent-1")
    first = Worker(client, table, tmp_path / "a")
    first.apply(records([start, queued], start=1))
    first.die()

    second = Worker(client, table, tmp_path / "b")  # a fresh disk
    second.apply(records([redeliver(queued), queued, answered], start=10))
    second.die()
    counters = second.engine.counters
    assert (counters.conversations, counters.rehydrated) == (1, 1)
    assert counters.exact_repeats == 2 and counters.changes == 1
    assert second.sink.counters.writes == 1
    item = table_items(client, table)[cid]
    assert (item["queueId"], item["agentUserId"], item["startTime"], item["version"]) == ("q1", "agent-1", T0 + 1000, 2)


@scenarios.add
def a_lease_moved_mid_stream_gives_the_same_table(client, table, tmp_path):
    stream = list(storm_records())
    half = len(stream) // 2
    run_shard(stream[:half], client, table, tmp_path / "a")
    run_shard(stream[half:], client, table, tmp_path / "b")
    assert projections(client, table) == plain(uninterrupted(client))


@scenarios.add
def poison_records_are_dead_lettered_and_the_shard_keeps_flowing(client, table, tmp_path):
    """I7: reason, raw bytes (base64), shard id and sequence number; counted; the rest applied."""
    good = detail_event("conv-ok", "acd.start", 1000, queueId="q1")
    no_id = detail_event("x", "acd.start", 1000, queueId="q1")
    del no_id["detail"]["eventBody"]["conversationId"]
    poison = [b"\xff\xfe not utf-8", b"{truncated", b"[1,2,3]", b"x" * (1024 * 1024 + 1), json.dumps(no_id).encode()]
    worker = Worker(client, table, tmp_path)
    batch = records(poison[:2] + [good] + poison[2:], start=500)
    assert worker.apply(batch) == batch[-1].sequence_number  # the shard moved past them
    worker.die()
    letters = [json.loads(line) for line in worker.dead_letters.read_text().splitlines()]
    assert [letter["reason"].split(":")[0] for letter in letters] == [
        "not UTF-8", "not JSON", "not a JSON object", "oversized",
        "missing conversation id at detail.eventBody.conversationId"]
    assert letters[0]["shardId"] == SHARD and letters[0]["sequenceNumber"] == "500"
    assert base64.b64decode(letters[0]["data"]) == poison[0]
    assert worker.engine.counters.rejected == 5
    assert projections(client, table)["conv-ok"]["queueId"] == "q1"


class BrokenAdapter:
    """An adapter with a bug: normalizing any envelope raises."""

    derive = genesys.derive

    def normalize(self, envelope: dict) -> Any:
        return {}["boom"]


@scenarios.add
def an_adapter_bug_is_a_dead_letter_not_a_crash(client, table, tmp_path):
    worker = Worker(client, table, tmp_path, adapter=BrokenAdapter())
    worker.apply(records([detail_event("c", "acd.start", 1, queueId="q")]))
    worker.die()
    assert json.loads(worker.dead_letters.read_text())["reason"] == "adapter error: KeyError"


@scenarios.add
def many_updates_to_one_conversation_in_a_flush_are_one_write(client, table, tmp_path):
    """I9: coalescing: a flush writes each changed conversation once."""
    events = [detail_event("busy", "attributes", 1000 + i, attributes={"step": str(i)}) for i in range(50)]
    worker = Worker(client, table, tmp_path)
    worker.apply(records(events))
    worker.die()
    assert worker.engine.counters.changes == 50
    assert worker.sink.counters.writes == 1
    assert table_items(client, table)["busy"]["attributes"] == {"step": "49"}


@scenarios.add
def a_noop_after_a_flush_writes_nothing(client, table, tmp_path):
    """I2 across flushes: a re-fire of the same attributes later in time is collapsed."""
    worker = Worker(client, table, tmp_path)
    worker.apply(records([detail_event("c", "attributes", 1000, attributes={"a": "1"})]))
    worker.apply(records([detail_event("c", "attributes", 2000, attributes={"a": "1"})]))
    worker.die()
    assert worker.engine.counters.noop_collapsed == 1
    assert worker.sink.counters.writes == 1
