"""What a conversation's metrics may not do to a shard: a delta too big for one transaction, or a
transaction DynamoDB refuses as a whole (I12, I15), on the in-memory twin."""
from __future__ import annotations

import pytest

from processor.adapters.genesys import GenesysAdapter
from processor.analytics.contribution import contribution
from processor.analytics.reader import MetricsReader, rows_of
from processor.analytics.sessions import participants
from processor.config import Settings
from processor.deadletters import JsonlDeadLetters
from processor.dynamodb.item import from_item
from processor.dynamodb.sink import RefusedItem
from processor.engine import FlushPolicy, ShardEngine
from processor.limits import MAX_SESSION_PARTICIPANTS
from processor.store import ShardStore
from tests.conftest import detail_event, records
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


def test_sessions_beyond_the_participant_limit_are_dead_lettered_and_the_rest_is_exact(tmp_path):
    """25 participants, 6 cells each, in one flush: one transaction could not hold the delta. The
    first 16 participants count, the others' sessions are dead-lettered, and the stored metrics
    equal the stored conversation's contribution (I12)."""
    client = MemoryDynamoDB()
    shard = engine(client, tmp_path)
    events = [event for n in range(25) for event in agent_segment("big", n)]
    shard.process(records(events))
    shard.flush(final=True)
    _, state = from_item(client.items("conversations")["big"])
    assert len(participants(state.registers)) == MAX_SESSION_PARTICIPANTS
    assert shard.counters.refused_fields == (25 - MAX_SESSION_PARTICIPANTS) * 5
    rows = MetricsReader(client, "conversation-metrics", 30).rows()
    expected = rows_of([contribution(state.registers, Settings().analytics)])
    assert rows == expected and len(rows) == MAX_SESSION_PARTICIPANTS * 6


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

