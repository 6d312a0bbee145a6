"""Exactly-once metrics (ANALYTICS.md I12, I13) against moto over HTTP, under the faults a KCL fleet
meets: a crash at every step of a flush then replay from the checkpoint, a zombie that lost its
lease and still writes, a reshard that splits conversations between a parent and a child shard,
late events that correct past intervals.

Every run is held to two truths computed independently of it (tests/scenarios/metrics.py):
- the metrics a clean run of the same events leaves (one worker alone, never crashing);
- I12 on the final tables: the sum over the stored conversation items of their contributions.

The emulator is slow with transactions (about 10 ms per action), so the storms are small. The crash
grid packs transactions of at most 40 actions (`MAX_ACTIONS` patched for those tests only) so a
small storm still gives flushes of two transactions, and a crash can land between them.
"""
from __future__ import annotations

import copy
import uuid

import pytest

from processor.analytics import layout
from processor.dynamodb import metrics as packing
from tests.conftest import detail_event, records
from tests.twins import invalid
from tests.scenarios.metrics import (CHILD, LATE_STEPS, PARENT, CrashPoint, Recorder, Worker, as_records,
                                     assert_exact, chunks, clean, contribution_rows, conversation,
                                     directory_writes, envelopes, fresh_tables, key_violations, metric_rows,
                                     row_diff, run_shard, scan, scanned_rows, storm_records, subtopic, truth)

#: the crash grid's storm: 20 conversations (219 records) in two flushes of two transactions each
CRASH_STORM = dict(conversations=20, seed=5)
CRASH_BATCH = 110
CRASH_ACTIONS = 40
#: the other scenarios' storm
STORM = dict(conversations=24, seed=11)


@pytest.fixture
def small_transactions(monkeypatch):
    monkeypatch.setattr(packing, "MAX_ACTIONS", CRASH_ACTIONS)


# ---- 1. a crash at every step of a flush, then replay from the checkpoint --------------------------

CRASHES = [
    CrashPoint("batch_get_item", 1, 0),  # in `process`: before anything was written
    CrashPoint("update_item", 1, 0),  # the registry: before any metrics write
    CrashPoint("update_item", 1, 4),  # between directory items
    CrashPoint("transact_write_items", 1, 0),  # directory listed, before any transaction
    CrashPoint("transact_write_items", 1, 1),  # between the transactions of one flush
    CrashPoint("transact_write_items", 2, 1),  # same, a flush later (the first one committed)
    CrashPoint("put_item", 2, 0),  # a plain put (no metric delta) of flush 2
    CrashPoint("dead-letters", 1),  # after all transactions, before the RocksDB commit
    CrashPoint("dead-letters", 2),
    CrashPoint("commit", 1),  # after the RocksDB commit, before the KCL checkpoint
    CrashPoint("checkpoint", 2),  # the flush returned; KCL never stored its checkpoint
]
NEW_OWNER_CRASHES = [CrashPoint("transact_write_items", 1, 1), CrashPoint("dead-letters", 2), CrashPoint("commit", 1)]


@pytest.mark.parametrize("crash, new_owner", [pytest.param(c, False, id=f"{c}-same-disk") for c in CRASHES]
                         + [pytest.param(c, True, id=f"{c}-new-owner") for c in NEW_OWNER_CRASHES])
def test_a_crash_at_any_step_of_a_flush_then_replay_gives_the_clean_metrics(
        crash, new_owner, dynamodb, tmp_path, small_transactions):
    stream = storm_records(**CRASH_STORM)
    expected = clean(dynamodb, stream, CRASH_BATCH)
    assert [flush.get("transact_write_items", 0) for flush in expected.profile[:2]] == [2, 2], expected.profile
    tables = fresh_tables(dynamodb, "crash")
    recorder = Recorder(dynamodb, tables.metrics)
    run = run_shard(tables, stream, tmp_path, batch=CRASH_BATCH, crash=crash, profile=expected.profile,
                    new_owner=new_owner, recorder=recorder)
    assert run.workers == 2 and run.crashed_in_flush == crash.flush, run  # it died where it was told to
    assert run.checkpoint == stream[-1].sequence_number
    assert_exact(tables, expected.rows)
    assert not key_violations(recorder)


def test_the_crash_grid_covers_every_step():
    """The steps the brief asks for: before any transaction, between two of one flush, after all of
    them before the RocksDB commit, after the commit before the checkpoint."""
    steps = {crash.step for crash in CRASHES}
    assert {"transact_write_items", *LATE_STEPS} <= steps
    assert CrashPoint("transact_write_items", 1, 0) in CRASHES and CrashPoint("transact_write_items", 1, 1) in CRASHES


# ---- 2. a zombie: the worker that lost the lease keeps writing -------------------------------------

ZOMBIE_ORDERS = ("interleaved", "zombie-first", "zombie-last")


@pytest.mark.parametrize("order", ZOMBIE_ORDERS)
def test_a_zombie_writing_the_same_conversations_changes_no_metric(order, dynamodb, tmp_path):
    """Two workers of one shard id, two disks: the zombie applied the first two batches (KCL stored
    its checkpoint), lost the lease, and keeps flushing batches the new owner also applies."""
    stream = storm_records(**STORM)
    pieces = chunks(stream, 60)
    tables = fresh_tables(dynamodb, "zombie")
    recorder = Recorder(dynamodb, tables.metrics)
    zombie = Worker(tables, tmp_path / "zombie", PARENT, client=recorder)
    checkpoint = None
    for piece in pieces[:2]:
        recorder.begin(f"{PARENT}/zombie/flush{zombie.flushes + 1}")
        checkpoint = zombie.apply(piece) or checkpoint
    owner = Worker(tables, tmp_path / "owner", PARENT, checkpoint, client=recorder)
    owned = chunks([r for r in stream if checkpoint is None or int(r.sequence_number) > int(checkpoint)], 60)
    stale = pieces[2:5]  # the zombie still flushes three more batches

    def zombie_flush(piece):
        recorder.begin(f"{PARENT}/zombie/flush{zombie.flushes + 1}")
        zombie.apply(piece)

    def owner_flush(piece):
        recorder.begin(f"{PARENT}/owner/flush{owner.flushes + 1}")
        owner.apply(piece)

    try:
        if order == "zombie-first":
            for piece in stale:
                zombie_flush(piece)
        for n, piece in enumerate(owned):
            owner_flush(piece)
            if order == "interleaved" and n < len(stale):
                zombie_flush(stale[n])
        if order == "zombie-last":
            for piece in stale:
                zombie_flush(piece)
        recorder.begin(f"{PARENT}/owner/final")
        owner.finish()
    finally:
        zombie.die()
        owner.die()
    assert_exact(tables, truth(dynamodb, stream))
    assert not key_violations(recorder)
    if order != "zombie-first":
        assert zombie.sink.counters.conflicts + owner.sink.counters.conflicts > 0  # they did race
    written = {worker: {key for label, calls in recorder.segments if f"/{worker}/" in label for c in calls
                        if c.operation == "transact_write_items" for key in c.metric_keys}
               for worker in ("zombie", "owner")}
    assert written["zombie"] and not written["zombie"] & written["owner"]  # I13: never a key of two workers


# ---- 3. a reshard: a conversation's events split between parent and child ---------------------------

@pytest.mark.parametrize("racing", [False, True], ids=["parent-then-child", "parent-racing-child"])
def test_conversations_split_between_parent_and_child_shards_sum_to_the_clean_metrics(racing, dynamodb, tmp_path):
    stream = storm_records(**STORM)
    half = len(stream) // 2
    tables = fresh_tables(dynamodb, "split")
    recorder = Recorder(dynamodb, tables.metrics)
    parent = Worker(tables, tmp_path / "parent", PARENT, client=recorder)
    child = Worker(tables, tmp_path / "child", CHILD, client=recorder)  # a fresh disk: rehydrates
    mine, theirs = chunks(stream[:half], 60), chunks(stream[half:], 60)
    try:
        if racing:  # the child starts while the parent still flushes
            order = [(worker, pieces, name, n) for n in range(max(len(mine), len(theirs)))
                     for worker, pieces, name in ((parent, mine, PARENT), (child, theirs, CHILD)) if n < len(pieces)]
        else:  # KCL's order: the child after the parent's end
            order = [(worker, pieces, name, n) for worker, pieces, name in ((parent, mine, PARENT), (child, theirs, CHILD))
                     for n in range(len(pieces))]
        for worker, pieces, name, n in order:
            recorder.begin(f"{name}/flush{n + 1}")
            worker.apply(pieces[n])
            if n == len(pieces) - 1:
                recorder.begin(f"{name}/final")
                worker.finish()
    finally:
        parent.die()
        child.die()
    split = {conversation(e) for e in envelopes(stream[:half])} & {conversation(e) for e in envelopes(stream[half:])}
    assert split and child.engine.counters.rehydrated > 0  # conversations really span the split
    keys = [item[layout.KEY]["S"] for item in scan(dynamodb, tables.metrics) if "kind" in item]
    assert any(f"#{PARENT}#" in key for key in keys) and any(f"#{CHILD}#" in key for key in keys)
    assert_exact(tables, truth(dynamodb, stream))
    assert not key_violations(recorder)


def test_a_child_shard_that_only_moves_gauges_is_read(dynamodb, tmp_path):
    """The parent sees a call enter a queue (oWaiting +1), the child sees only its customer.end
    (oWaiting -1 on a gauge partial of the child: its only partial, so the child has no days):
    readers take shards from the registry, not from their days."""
    cid = f"conv-{uuid.uuid4().hex[:8]}"
    entered = [detail_event(cid, "customer.start", 1000, participantId="customer"),
               detail_event(cid, "acd.start", 2000, participantId="acd", queueId="queue-gauge")]
    ended = [detail_event(cid, "customer.end", 9000, participantId="customer")]
    tables = fresh_tables(dynamodb, "gauge")
    for shard, events, start in ((PARENT, entered, 1), (CHILD, ended, 100)):
        worker = Worker(tables, tmp_path / shard, shard)
        try:
            worker.apply(records(events, start=start))
            worker.finish()
        finally:
            worker.die()
    expected = truth(dynamodb, records(entered + ended, start=1))
    assert not [row for row in expected if row["kind"] == "gauge"]  # an ended call waits nowhere
    assert scanned_rows(tables) == expected == contribution_rows(tables)  # the partials themselves are right
    rows = metric_rows(tables)
    assert rows == expected, row_diff(rows, expected)  # fails: the child's gauge partial is never read


# ---- 4. late events correct past intervals --------------------------------------------------------

def late_events(stream) -> list[dict]:
    """Late acd.end / acw copies of some conversations' events (new envelope ids): newer times that
    move the figure to another interval or change the outcome, older times that lose, and a queue
    visit of a new participant an hour in the past."""
    late = []
    events = envelopes(stream)
    acws = list({conversation(e): e for e in events if subtopic(e) == "acw"}.values())  # one per conversation
    ends = list({conversation(e): e for e in events
                 if subtopic(e) == "acd.end" and e["detail"]["eventBody"].get("acdOutcome") == "ANSWERED"}.values())

    def again(envelope: dict, shift_ms: int, **fields) -> dict:
        copy_ = copy.deepcopy(envelope)
        copy_["id"] = str(uuid.uuid4())
        body = copy_["detail"]["eventBody"]
        body["eventTime"] += shift_ms
        body.update(fields)
        return copy_

    for e in acws[:3]:
        late.append(again(e, 2 * 3_600_000, wrapupDurationMs=12_345))  # newer: tAcw and handle move 2 h on
    for e in acws[3:5]:
        late.append(again(e, -5_000, wrapupDurationMs=99_999))  # older: loses to the stored acw
    for e in ends[:2]:
        late.append(again(e, 3_600_000, acdOutcome="ABANDON"))  # newer: answered becomes abandoned, 1 h on
    for e in ends[2:4]:
        late.append(again(e, -1_000, acdOutcome="FLOW_OUT"))  # older: loses
    for e in ends[4:6]:  # a new ACD visit an hour earlier (a new participant): a past interval's figures
        visit = str(uuid.uuid4())
        late.append(again(e, -3_600_000, participantId=visit, acdOutcome="ABANDON"))
        start = again(e, -3_600_000 - 20_000, participantId=visit)
        start["detail"]["topicName"] = start["detail"]["topicName"].rsplit(".", 2)[0] + ".acd.start"
        start["detail-type"] = start["detail-type"].rsplit(".", 2)[0] + ".acd.start"
        start["detail"]["eventBody"].pop("acdOutcome")
        late.append(start)
    assert len(late) == 13
    return late


@pytest.mark.parametrize("new_owner", [False, True], ids=["same-worker", "new-owner"])
def test_late_events_after_everything_was_flushed_give_the_clean_metrics_of_all_events(new_owner, dynamodb, tmp_path):
    stream = storm_records(**STORM)
    late = as_records(late_events(stream), first=int(stream[-1].sequence_number) + 1)
    tables = fresh_tables(dynamodb, "late")
    worker = Worker(tables, tmp_path / "first", PARENT)
    try:
        for piece in chunks(stream, 120):
            checkpoint = worker.apply(piece)
        checkpoint = worker.finish() or checkpoint
        if new_owner:
            worker.die()
            worker = Worker(tables, tmp_path / "second", PARENT, checkpoint)
        worker.apply(late)
        worker.finish()
    finally:
        worker.die()
    before, after = truth(dynamodb, stream), truth(dynamodb, stream + late)
    assert before != after  # the late events do change the metrics
    assert {row.get("interval") for row in after} - {row.get("interval") for row in before}  # past/future intervals
    assert_exact(tables, after)


# ---- 5. I13: every partial key carries the shard suffix, written once per flush of a shard ----------

def test_every_partial_is_written_at_most_once_per_flush_of_one_shard(dynamodb, tmp_path):
    """A storm in many flushes, every metrics-table write recorded: partial keys end in
    `#<shard>#<slot>` of the writing shard, none written twice in one flush, no other key but the
    shard's directory, its days and registry buckets; one directory write per key and flush."""
    stream = storm_records(**STORM)
    tables = fresh_tables(dynamodb, "keys")
    recorder = Recorder(dynamodb, tables.metrics)
    run = run_shard(tables, stream, tmp_path, batch=50, recorder=recorder)
    assert run.workers == 1
    written = [key for _, calls in recorder.segments for c in calls for key in c.metric_keys]
    assert any(key.startswith("q|") for key in written) and any(key.startswith("g|") for key in written)
    assert not key_violations(recorder)
    assert set(directory_writes(recorder).values()) == {1}
    assert_exact(tables, truth(dynamodb, stream))


def test_a_cancelled_transaction_does_not_write_a_directory_key_twice_in_one_flush(dynamodb, tmp_path):
    """Shard B reads a conversation (absent), shard A then writes it, B flushes: B's transaction
    fails its version condition, B merges and retries in the same flush on the slots the cancelled
    transaction had, already listed: no second directory write."""
    cid = f"conv-{uuid.uuid4().hex[:8]}"
    late = [detail_event(cid, "acd.start", 2000, participantId="acd", queueId="q-dirs")]
    early = [detail_event(cid, "customer.start", 1000, participantId="customer"),
             detail_event(cid, "acd.end", 30_000, participantId="acd", queueId="q-dirs", acdOutcome="ANSWERED")]
    tables = fresh_tables(dynamodb, "dirs")
    recorder = Recorder(dynamodb, tables.metrics)
    parent = Worker(tables, tmp_path / "parent", PARENT)
    child = Worker(tables, tmp_path / "child", CHILD, client=recorder)
    try:
        child.engine.process(records(late, start=100))
        parent.apply(records(early, start=1))
        recorder.begin(f"{CHILD}/flush1")
        child.engine.flush()
    finally:
        parent.die()
        child.die()
    assert child.sink.counters.conflicts == 1  # the race happened
    assert_exact(tables, truth(dynamodb, records(early + late, start=1)))
    assert not key_violations(recorder)  # partial keys: once each
    assert directory_writes(recorder) == {f"{CHILD}/flush1": 1}  # fails: 2


def test_a_value_dynamodb_refuses_that_moves_a_cell_still_reaches_the_metrics(dynamodb, tmp_path):
    """I12 with I15: DynamoDB refuses `ended: true` (a rule no check of the processor knows), so the
    value is tombstoned, and the conversation, no longer ended, has an agent interacting: the gauge
    must count them. The state had no delta before the refusal, so it went as a plain put, which
    used to take the new contribution as its base without writing the delta (a hostile review)."""
    tables = fresh_tables(dynamodb, "refused")

    def refuse_ended(operation: str, kwargs: dict) -> None:
        if operation == "put_item":
            items = [kwargs["Item"]] if kwargs["TableName"] == tables.table else []
        elif operation == "transact_write_items":
            items = [action["Put"]["Item"] for action in kwargs["TransactItems"]
                     if "Put" in action and action["Put"]["TableName"] == tables.table]
        else:
            return
        if any(item.get("ended") == {"BOOL": True} for item in items):
            raise invalid(operation, "One or more parameter values were invalid: a rule of this table")

    cid = f"conv-{uuid.uuid4().hex[:8]}"
    worker = Worker(tables, tmp_path / "worker", before=refuse_ended)
    try:
        worker.apply(records([detail_event(cid, "customer.end", 9000, participantId="customer"),
                              detail_event(cid, "user.start", 2000, participantId="agent", queueId="q-refused",
                                           userId="u1")]))
        worker.finish()
    finally:
        worker.die()
    assert worker.sink.counters.refused == 1
    rows, stored = metric_rows(tables), contribution_rows(tables)
    assert rows == stored, "I12: " + row_diff(rows, stored)
    assert [(row["queueId"], row["oInteracting"]) for row in rows if row["kind"] == "gauge"] == [("q-refused", 1)]
