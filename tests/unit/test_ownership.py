"""I14: ownership changes are invisible. One shard, several workers (each with its own disk), the
lease moving between them by crash, graceful hand-off, lease loss and return, as KCL moves it;
DynamoDB is the in-memory twin. Whatever the schedule, the stored state of every conversation
equals the state computed from every event it ever received.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from processor.adapters.genesys import GenesysAdapter
from processor.deadletters import JsonlDeadLetters
from processor.engine import FlushPolicy, ShardEngine
from processor.dynamodb.item import from_item
from processor.model import Record
from processor.reduce import ConversationState, apply, wins
from processor.dynamodb.sink import DynamoSink
from processor.store import ShardStore
from tests.conftest import T0, detail_event
from tests.oracle import genesys_projection
from tests.twins import MemoryDynamoDB

genesys = GenesysAdapter()
TABLE = "conversations"
ENDINGS = ("crash", "crash_before_checkpoint", "graceful", "lease_lost")


@st.composite
def shard_streams(draw):
    """Distinct events of a few conversations, with few values so that re-sets and late older
    events are common, delivered shuffled and with repeats."""
    distinct: dict[bytes, tuple[str, str, dict]] = {}
    for _ in range(draw(st.integers(1, 14))):
        cid = draw(st.sampled_from(["c1", "c2"]))
        subtopic, name = draw(st.sampled_from([("acd.start", "queueId"), ("attributes", "attributes"),
                                               ("user.start", "userId")]))
        value = draw(st.sampled_from(["A", "B"]))
        body_value = {"k": value} if name == "attributes" else value
        envelope = detail_event(cid, subtopic, draw(st.integers(0, 9)) * 1000, **{name: body_value})
        body = envelope["detail"]["eventBody"]
        distinct[orjson.dumps([cid, subtopic, body], option=orjson.OPT_SORT_KEYS)] = (cid, subtopic, envelope)
    events = list(distinct.values())
    order = draw(st.permutations(range(len(events))))
    delivered = [events[i][2] for i in order]
    for index, position in draw(st.lists(st.tuples(st.integers(0, len(events) - 1), st.integers(0, 99)), max_size=4)):
        delivered.insert(position % (len(delivered) + 1), events[index][2])  # EventBridge redeliveries
    records = [Record(orjson.dumps(e), str(100 + i), "pk") for i, e in enumerate(delivered)]
    return events, records


periods = st.lists(st.tuples(st.integers(0, 2), st.integers(1, 3), st.integers(1, 4), st.sampled_from(ENDINGS)),
                   max_size=6)


@dataclass
class Clock:
    now: float = T0 / 1000 + 3600  # an hour after the test events: they arrived on time

    def __call__(self) -> float:
        return self.now


@dataclass
class Fleet:
    """KCL's view of one shard: the lease's checkpoint, and the workers' disks."""

    root: Path
    hold_seconds: float
    dynamodb: MemoryDynamoDB = field(default_factory=MemoryDynamoDB)
    checkpoint: str = "TRIM_HORIZON"
    clock: Clock = field(default_factory=Clock)

    def own(self, worker: int) -> ShardEngine:
        """What `processor kcl`'s initialize does for a lease handed over at the checkpoint."""
        store = ShardStore(str(self.root / f"worker-{worker}"))
        if not store.is_current_for(self.checkpoint):
            store.reset()
        return ShardEngine("shardId-000000000000", genesys, store, DynamoSink(self.dynamodb, TABLE, genesys.derive),
                           JsonlDeadLetters(str(self.root / "dead-letters.jsonl")),
                           FlushPolicy(max_records=10 ** 9, max_seconds=float("inf"), max_hold_seconds=self.hold_seconds),
                           checkpoint=self.checkpoint, clock=self.clock)

    def run(self, records: list[Record], worker: int, batches: int, size: int, ending: str) -> None:
        engine = self.own(worker)
        todo = [r for r in records if not self.checkpoint.isdigit() or int(r.sequence_number) > int(self.checkpoint)]
        chunks = [todo[i:i + size] for i in range(0, len(todo), size)][:batches]
        delivered = self.checkpoint
        for number, chunk in enumerate(chunks, 1):
            engine.process(chunk)
            delivered = chunk[-1].sequence_number
            self.clock.now += 1
            if number == len(chunks) and ending == "crash":
                break  # died before this batch's flush
            sequence = engine.flush()
            self.check_current(records, chunk[-1].sequence_number)
            if number == len(chunks) and ending == "crash_before_checkpoint":
                break
            self.checkpoint_to(sequence, delivered)
        if ending == "graceful":
            self.checkpoint_to(engine.flush(final=True), delivered)
        elif ending == "lease_lost":
            engine.discard()
        engine.close()

    def checkpoint_to(self, sequence: str | None, delivered: str) -> None:
        """KCL's checkpointer: it refuses a sequence behind the lease's checkpoint or past the last
        record it delivered (IllegalArgumentException, which would exit the child)."""
        if sequence is None:
            return
        if self.checkpoint.isdigit():
            assert int(sequence) >= int(self.checkpoint), f"checkpoint {sequence} behind the lease's {self.checkpoint}"
        assert delivered.isdigit() and int(sequence) <= int(delivered), f"checkpoint {sequence} past delivered {delivered}"
        self.checkpoint = sequence

    def check_current(self, records: list[Record], last: str) -> None:
        """Right after a flush, DynamoDB holds at least what every record up to `last` says: each
        field's stored register is no older than the truth's, or has its value (a stamp that is
        still held, by design). A worker acting on stale local state fails this."""
        expected = truth_of(r for r in records if int(r.sequence_number) <= int(last))
        stored = self.stored()
        for cid, state in expected.items():
            for name, register in state.registers.items():
                mine = stored[cid].registers.get(name)
                assert mine is not None and (mine[1] == register[1] or not wins(register, mine)), (
                    f"after the flush up to record {last}, {cid}.{name} is {mine}, truth {register}")

    def finish(self, records: list[Record], worker: int) -> None:
        self.run(records, worker, 10 ** 6, 3, "graceful")

    def stored(self) -> dict[str, ConversationState]:
        return dict(from_item(item) for item in self.dynamodb.items(TABLE).values())


def truth(events: list[tuple[str, str, dict]]) -> dict[str, ConversationState]:
    return truth_of(Record(orjson.dumps(envelope), "0") for _, _, envelope in events)


def truth_of(records: Iterable[Record]) -> dict[str, ConversationState]:
    states: dict[str, ConversationState] = {}
    for record in records:
        event = genesys.normalize(orjson.loads(record.data))
        apply(states.setdefault(event.conversation_id, ConversationState()), event)
    return states


def wrong_conversations(events, records, schedule, last_worker, hold_seconds, root: Path) -> list[str]:
    fleet = Fleet(root, hold_seconds)
    try:
        for period in schedule:
            fleet.run(records, *period)
        fleet.finish(records, last_worker)
    except AssertionError as stale:
        return [str(stale)]
    expected, stored = truth(events), fleet.stored()
    wrong = [cid for cid in expected if cid not in stored or stored[cid].registers != expected[cid].registers]
    for cid, state in stored.items():  # and the projection is the independent oracle's
        oracle = genesys_projection([(subtopic, e["detail"]["eventBody"]) for c, subtopic, e in events if c == cid])
        if state.projection(genesys.derive) != oracle:
            wrong.append(cid)
    return wrong


_runs = itertools.count()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shard_streams(), periods, st.integers(0, 2), st.sampled_from([0.0, 2.0, 10 ** 6]))
def test_any_schedule_of_owners_stores_the_state_of_every_event(tmp_path, case, schedule, last_worker, hold):
    events, records = case
    assert wrong_conversations(events, records, schedule, last_worker, hold, tmp_path / str(next(_runs))) == []


def transfer(times_and_queues: list[tuple[int, str]]) -> tuple[list, list[Record]]:
    """One conversation's acd.start events, delivered in this order."""
    envelopes = [detail_event("c1", "acd.start", t, queueId=q) for t, q in times_and_queues]
    return ([("c1", "acd.start", e) for e in envelopes],
            [Record(orjson.dumps(e), str(seq), "c1") for seq, e in enumerate(envelopes, 1)])


#: Issue 9, case 1: A applies Q1@t1; B applies Q2@t2 and checkpoints; A gets the lease back and
#: Q1@t3. A's disk still says Q1, but it is not current for B's checkpoint: Q1@t3 is a change.
LEASE_RETURNS = (transfer([(1000, "Q1"), (2000, "Q2"), (3000, "Q1")]),
                 [(0, 1, 1, "lease_lost"), (1, 1, 1, "lease_lost")], 0)
#: Issue 9, case 2: Q1@t1 written; Q1@t3 re-sets it (no write); the lease moves; the late Q2@t2
#: must not win: the checkpoint stayed before Q1@t3, so the new owner replays it.
LATE_AFTER_MOVE = (transfer([(1000, "Q1"), (3000, "Q1"), (2000, "Q2")]), [(0, 2, 1, "lease_lost")], 1)


@pytest.mark.parametrize("scenario", [LEASE_RETURNS, LATE_AFTER_MOVE], ids=["lease returns", "late after move"])
def test_the_issue_scenarios_store_the_truth(scenario, tmp_path):
    (events, records), schedule, last = scenario
    assert wrong_conversations(events, records, schedule, last, 60, tmp_path) == []


@pytest.mark.parametrize("scenario, safeguard", [(LEASE_RETURNS, "current local state"),
                                                 (LATE_AFTER_MOVE, "held stamps")], ids=["case 1", "case 2"])
def test_without_its_safeguard_each_scenario_goes_wrong(scenario, safeguard, tmp_path, monkeypatch):
    """The checks have teeth: switch the safeguard off and the same scenario stores a wrong value."""
    if safeguard == "current local state":
        monkeypatch.setattr(ShardStore, "is_current_for", lambda self, checkpoint: True)
    else:
        monkeypatch.setattr(ShardEngine, "checkpoint_sequence", property(lambda self: self.committed_sequence))
    (events, records), schedule, last = scenario
    assert wrong_conversations(events, records, schedule, last, 60, tmp_path) != []


def test_a_held_stamp_is_written_once_the_hold_expires_and_the_checkpoint_moves_on(tmp_path):
    stream = [Record(orjson.dumps(detail_event("c1", "acd.start", t, queueId="Q1")), str(seq), "c1")
              for seq, t in enumerate([1000, 3000], 1)]
    fleet = Fleet(tmp_path, hold_seconds=5)
    engine = fleet.own(0)
    engine.process(stream[:1])
    assert engine.flush() == "1"
    engine.process(stream[1:])  # the same value, newer: no write due, a stamp only known here
    assert engine.flush() == "1" and engine.held == 1
    fleet.clock.now += 4
    assert not engine.flush_due()
    assert engine.flush() == "1"  # within the hold: no write yet
    fleet.clock.now += 2
    assert engine.flush_due()  # with no record pending: a quiet shard still writes what it holds
    assert engine.flush() == "2" and engine.held == 0  # written: nothing only local any more
    assert engine.counters.held_writes == 1
    engine.close()
    assert fleet.stored()["c1"].registers["queueId"][0] == T0 + 3000


def test_a_hold_runs_from_the_earliest_conversation_still_held(tmp_path):
    """Once the first held conversation is written, the hold's deadline is the next one's."""
    def event(cid, seq, t, queue):
        return Record(orjson.dumps(detail_event(cid, "acd.start", t, queueId=queue)), str(seq), cid)

    fleet = Fleet(tmp_path, hold_seconds=5)
    engine = fleet.own(0)
    engine.process([event("c1", 1, 1000, "Q1"), event("c2", 2, 1000, "Q1")])
    engine.flush()
    engine.process([event("c1", 3, 2000, "Q1")])  # c1 held from now
    engine.flush()
    fleet.clock.now += 3
    engine.process([event("c2", 4, 2000, "Q1")])  # c2 held from now + 3
    engine.flush()
    fleet.clock.now += 1
    engine.process([event("c1", 5, 3000, "Q2")])  # a real change: c1 written, no longer held
    engine.flush()
    assert engine.held == 1
    fleet.clock.now += 3  # past c1's deadline (now + 5), before c2's (now + 8)
    assert not engine.flush_due()
    fleet.clock.now += 1
    assert engine.flush_due()
    engine.close()
