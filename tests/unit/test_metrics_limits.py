"""What a conversation's metrics may not do to a shard: a delta too big for one transaction, or a
transaction DynamoDB refuses as a whole (I12, I15), on the in-memory twin."""
from __future__ import annotations

import orjson
import pytest

from processor import codec
from processor.adapters.genesys import GenesysAdapter
from processor.analytics import layout
from processor.analytics.contribution import QUEUE, Cell, contribution
from processor.analytics.reader import QUEUE_VIEW_KINDS, MetricsReader, rows_of
from processor.analytics.sessions import is_session, participant_key as participants_key_of, participants
from processor.config import Settings
from processor.deadletters import JsonlDeadLetters
from processor.dynamodb.item import from_item
from processor.dynamodb.sink import RefusedItem
from processor.engine import FlushPolicy, ShardEngine
from processor.limits import MAX_SESSION_PARTICIPANTS, MAX_SESSION_TEXT
from processor.store import ShardStore
from tests.conftest import detail_event, records
from tests.metrics_oracle import expected_rows
from tests.twins import Faults, MemoryDynamoDB, client_error

pytestmark = pytest.mark.usefixtures("no_backoff")
HOUR = 3_600_000


def engine(client, tmp_path) -> ShardEngine:
    settings, adapter = Settings(), GenesysAdapter()
    return ShardEngine("shardId-000000000000", adapter, ShardStore(str(tmp_path / "state")),
                       settings.build_sink(client, adapter), JsonlDeadLetters(str(tmp_path / "dead.jsonl")),
                       FlushPolicy(max_records=10 ** 9))


def agent_segment(cid: str, n: int) -> list[dict]:
    """One participant's visit to its own queue and agent, each step in another interval: 6 cells, the
    most one participant's sessions touch."""
    at, queue, user, pid = n * 10 * HOUR, f"q{n}", f"u{n}", f"p{n}"
    return [detail_event(cid, "acd.start", at, participantId=pid, queueId=queue),
            detail_event(cid, "acd.end", at + HOUR, participantId=pid, queueId=queue, acdOutcome="ANSWERED"),
            detail_event(cid, "user.start", at + HOUR, participantId=pid, queueId=queue, userId=user),
            detail_event(cid, "user.end", at + 2 * HOUR, participantId=pid, queueId=queue, userId=user,
                         interactingDurationMs=60_000, heldDurationMs=0, disconnectType="PEER"),
            detail_event(cid, "acw", at + 3 * HOUR, participantId=pid, queueId=queue, userId=user,
                         wrapupDurationMs=5_000)]


def test_a_delta_too_big_for_one_transaction_is_written_in_stages_and_stays_exact(tmp_path):
    """30 participants, 6 cells each, in one flush: no transaction holds the delta (100 actions).
    The conversation is written in stages, each a state it really passes through with a delta that
    fits, and the metrics equal the independent oracle's (I12)."""
    client = MemoryDynamoDB()
    shard = engine(client, tmp_path)
    events = [event for n in range(30) for event in agent_segment("big", n)]
    shard.process(records(events))
    shard.flush(final=True)
    _, state = from_item(client.items("conversations")["big"])
    assert len(participants(state.registers)) == 30 and state.version >= 2  # stages: several versions
    assert MetricsReader(client, "conversation-metrics", 30).rows() == expected_rows(events)


def test_sessions_beyond_the_participant_limit_are_dead_lettered_and_the_rest_is_exact(tmp_path):
    """Sessions are bookkeeping no size limit trims: a conversation keeps those of 64 participants;
    the others' are dead-lettered, and the stored metrics equal the stored conversation's
    contribution (I12)."""
    client = MemoryDynamoDB()
    shard = engine(client, tmp_path)
    events = [event for n in range(MAX_SESSION_PARTICIPANTS + 3) for event in agent_segment("big", n)]
    shard.process(records(events))
    shard.flush(final=True)
    _, state = from_item(client.items("conversations")["big"])
    assert len(participants(state.registers)) == MAX_SESSION_PARTICIPANTS
    assert shard.counters.refused_fields == 3 * 5
    rows = MetricsReader(client, "conversation-metrics", 30).rows()
    expected = rows_of([contribution(state.registers, Settings().analytics)])
    assert rows == expected and len(rows) == MAX_SESSION_PARTICIPANTS * 6


def test_ids_too_long_for_a_metrics_key_and_absurd_durations_are_dead_lettered_not_poison(tmp_path):
    client = MemoryDynamoDB()
    shard = engine(client, tmp_path)
    events = [detail_event("c1", "acd.start", 0, participantId="a", queueId="q" * 2100),
              detail_event("c1", "user.end", HOUR, participantId="b", queueId="q1", userId="u1",
                           interactingDurationMs=10 ** 17, heldDurationMs=0, disconnectType="PEER"),
              detail_event("c1", "acd.start", 0, participantId="c", queueId="q2")]
    shard.process(records(events))
    shard.flush(final=True)
    assert shard.counters.refused_fields == 2
    assert [row["queueId"] for row in MetricsReader(client, "conversation-metrics", 30).rows()
            if row["kind"] == "queue"] == ["q2"]


def test_a_metrics_table_of_another_interval_width_is_refused_clearly(tmp_path):
    client = MemoryDynamoDB()
    first = engine(client, tmp_path / "a")
    first.process(records(agent_segment("c1", 0)))
    first.flush(final=True)
    settings, adapter = Settings(interval_minutes=5), GenesysAdapter()
    other = ShardEngine("shardId-000000000000", adapter, ShardStore(str(tmp_path / "b")),
                        settings.build_sink(client, adapter), JsonlDeadLetters(str(tmp_path / "dead.jsonl")))
    other.process(records(agent_segment("c2", 1)))
    with pytest.raises(ValueError, match="another width than interval_minutes = 5"):
        other.flush(final=True)


def test_a_transaction_refused_as_a_whole_with_no_field_to_blame_fails_loudly(tmp_path):
    """A ValidationException for the whole transaction (no cancellation reasons): each conversation
    is probed; when no field explains it, the flush fails with a clear error instead of spinning."""
    def refuse_transactions(operation, kwargs):
        if operation == "transact_write_items":
            raise client_error("ValidationException", "TransactWriteItems", "One or more parameter values were invalid")

    shard = engine(Faults(MemoryDynamoDB(), refuse_transactions), tmp_path)
    shard.process(records(agent_segment("c1", 0)))
    with pytest.raises(RefusedItem, match="no conversation field explains"):
        shard.flush(final=True)



def test_the_queue_views_read_no_agent_partials_and_the_same_queue_and_gauge_rows(tmp_path):
    """`processor queues` and the wallboard read with `QUEUE_VIEW_KINDS`: the agent partials, most
    of an interval's, are never fetched, and every queue and gauge row is the full read's."""
    client = MemoryDynamoDB()
    shard = engine(client, tmp_path)
    shard.process(records([event for n in range(4) for event in agent_segment(f"c{n}", n)]))
    shard.flush(final=True)
    fetched: list[str] = []
    read = client.batch_get_item

    def recording(RequestItems: dict) -> dict:
        fetched.extend(next(iter(key.values()))["S"] for request in RequestItems.values() for key in request["Keys"])
        return read(RequestItems=RequestItems)

    client.batch_get_item = recording
    everything = MetricsReader(client, "conversation-metrics", 30).rows()
    assert any(key.startswith("a|") for key in fetched)
    fetched.clear()
    queue_view = MetricsReader(client, "conversation-metrics", 30, kinds=QUEUE_VIEW_KINDS).rows()
    assert fetched and not any(key.startswith("a|") for key in fetched)
    assert queue_view == [row for row in everything if row["kind"] != "agent"] and len(queue_view) < len(everything)


def test_a_session_dynamodb_cannot_store_is_dead_lettered_once_not_a_crash(tmp_path):
    """A session whose value DynamoDB would refuse (a queue id of 131 digits, a duration of 39) was
    made a tombstone by the admission and then crashed the session check, so a KCL child would
    crash-loop on the record. Each refused field is dead-lettered once, the sessions are left out of
    the metrics, in any order."""
    events = [detail_event("c1", "acd.start", 0, participantId="a", queueId=10 ** 130),
              detail_event("c1", "user.end", HOUR, participantId="b", queueId="q1", userId="u1",
                           interactingDurationMs=10 ** 38 + 1, heldDurationMs=0, disconnectType="PEER"),
              detail_event("c1", "acd.start", 0, participantId="c", queueId="q2")]
    for order, batch in enumerate((events, events[::-1])):
        client = MemoryDynamoDB()
        shard = engine(client, tmp_path / str(order))
        shard.process(records([codec.dumps(event) for event in batch]))  # orjson writes no such integer
        shard.flush(final=True)
        letters = [orjson.loads(line) for line in (tmp_path / str(order) / "dead.jsonl").read_bytes().splitlines()]
        fields = sorted(letter["field"] for letter in letters)
        assert len(fields) == shard.counters.refused_fields == 3  # the queue id is also the item's queueId
        assert fields[0] == "queueId" and all(map(is_session, fields[1:]))
        _, state = from_item(client.items("conversations")["c1"])
        assert list(participants(state.registers)) == [participants_key_of("c")]
        assert [row["queueId"] for row in MetricsReader(client, "conversation-metrics", 30).rows()
                if row["kind"] == "queue"] == ["q2"]


def test_ids_whose_bytes_would_overflow_a_metrics_key_are_dead_lettered_not_a_stalled_flush(tmp_path):
    """A session's ids were limited to 256 characters, but a metrics key holds 2,048 bytes: 256
    four-byte characters in the queue id and in the media type made a key of 2,098 bytes, the
    metrics transaction was refused with no field to blame, and the flush raised (a KCL child would
    crash-loop). Ids are limited in UTF-8 bytes; the longest allowed, escaped, fit with room."""
    emoji = "\U0001F600"
    events = [detail_event("c1", "acd.start", 0, participantId="a", queueId=emoji * 256, mediaType=emoji * 256),
              detail_event("c1", "acd.start", 0, participantId="b", queueId=emoji * 64, mediaType="%" * 256),
              detail_event("c1", "acd.start", 0, participantId="c", queueId="q2")]
    client = MemoryDynamoDB()
    shard = engine(client, tmp_path)
    shard.process(records(events))
    shard.flush(final=True)
    assert shard.counters.refused_fields == 1
    assert sorted(row["queueId"] for row in MetricsReader(client, "conversation-metrics", 30).rows()
                  if row["kind"] == "queue") == sorted([emoji * 64, "q2"])
    widest = "%" * MAX_SESSION_TEXT  # one byte, escaped to three
    key = layout.partial_key(Cell(QUEUE, widest, widest, 0), "shardId-000000000000", f"w{layout.WRITERS}.99999")
    assert len(key.encode("utf-8")) <= 1_700  # of 2,048
