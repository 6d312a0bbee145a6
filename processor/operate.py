"""Operating a deployment: where each shard stands, moving checkpoints back to reprocess, and what
the processor knows of one conversation. Read-mostly, against the stream and KCL's lease table.

Reprocessing is safe by design: a replayed event is an exact repeat (no write), and a state
rebuilt from DynamoDB plus the replayed events converges to the same table (I3, I5).
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import AbstractSet, Any, Iterable, Iterator, Mapping

from processor.adapters import parse_time_ms
from processor.dynamodb.item import KEY, KEYS, STAMPS, TTL, VERSION, deserialize
from processor.store import ShardStore, shard_directory

MASK = "•••"


class OperateError(RuntimeError):
    """A refusal or a precondition the operator must fix (printed without a traceback)."""


@dataclass(frozen=True)
class ShardStatus:
    shard_id: str
    parents: tuple[str, ...]
    children: tuple[str, ...]
    is_open: bool
    owner: str | None
    checkpoint: str | None  # None: no lease (not yet discovered, or cleaned up after its children)
    lag_ms: int | None  # MillisBehindLatest from the checkpoint; None when ended or unknown


def leases(dynamodb: Any, application: str) -> dict[str, dict[str, Any]]:
    """KCL's lease table, shard id → plain lease attributes ({} before the first start)."""
    try:
        pages = dynamodb.get_paginator("scan").paginate(TableName=application, ConsistentRead=True)
        return {item["leaseKey"]["S"]: {k: deserialize(v) for k, v in item.items()}
                for page in pages for item in page.get("Items", [])}
    except dynamodb.exceptions.ResourceNotFoundException:
        return {}


def shard_status(kinesis: Any, dynamodb: Any, stream: str, application: str) -> list[ShardStatus]:
    held = leases(dynamodb, application)
    shards = list_shards(kinesis, stream)
    children: dict[str, list[str]] = {}
    for shard in shards:
        for parent in _parents(shard):
            children.setdefault(parent, []).append(shard["ShardId"])
    statuses = []
    for shard in shards:
        shard_id = shard["ShardId"]
        lease = held.get(shard_id, {})
        checkpoint = lease.get("checkpoint")
        statuses.append(ShardStatus(shard_id, _parents(shard), tuple(sorted(children.get(shard_id, []))), is_open(shard),
                                    lease.get("leaseOwner"), checkpoint,
                                    lag_ms(kinesis, stream, shard_id, checkpoint) if lease else None))
    return statuses


def list_shards(kinesis: Any, stream: str) -> list[dict[str, Any]]:
    shards, token = [], None
    while True:
        page = kinesis.list_shards(NextToken=token) if token else kinesis.list_shards(StreamName=stream)
        shards.extend(page["Shards"])
        token = page.get("NextToken")
        if not token:
            return shards


def lag_ms(kinesis: Any, stream: str, shard_id: str, checkpoint: str | None) -> int | None:
    """How far the checkpoint is behind the shard's tip, as Kinesis reports it (MillisBehindLatest)."""
    if checkpoint in (None, "SHARD_END", "LATEST", "AT_TIMESTAMP"):
        return None if checkpoint != "SHARD_END" else 0
    position = ({"ShardIteratorType": "TRIM_HORIZON"} if checkpoint == "TRIM_HORIZON" else
                {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": checkpoint})
    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard_id, **position)["ShardIterator"]
    response = kinesis.get_records(ShardIterator=iterator, Limit=1)
    return int(response.get("MillisBehindLatest", 0))


def live_leases(dynamodb: Any, application: str, watch_seconds: float) -> list[str]:
    """Leases some worker is renewing: their counters move within `watch_seconds` (use at least the
    lease failover time)."""
    before = {shard: lease.get("leaseCounter") for shard, lease in leases(dynamodb, application).items()}
    time.sleep(watch_seconds)
    after = {shard: lease.get("leaseCounter") for shard, lease in leases(dynamodb, application).items()}
    return sorted(shard for shard, counter in after.items() if shard in before and before[shard] != counter)


def position_before(kinesis: Any, stream: str, shard_id: str, at_ms: int) -> str | None:
    """The checkpoint that makes KCL resume at the first record arriving at or after `at_ms`: the
    sequence number of the last record before it, or TRIM_HORIZON if there is none. None when the
    shard has no record at or after `at_ms` (nothing to reprocess there).

    Kinesis cannot read backwards, so this reads forward from `at_ms - window`, doubling the window
    until it finds a record before `at_ms` (or passes the stream's retention)."""
    if next(iter(_records_from(kinesis, stream, shard_id, at_ms)), None) is None:
        return None
    oldest = next(iter(_records_from(kinesis, stream, shard_id, None)), None)
    if oldest is None or _arrival_ms(oldest) >= at_ms:
        return "TRIM_HORIZON"
    window_ms = 1_000
    while True:
        last_before = None
        for record in _records_from(kinesis, stream, shard_id, at_ms - window_ms):
            if _arrival_ms(record) >= at_ms:
                break
            last_before = record["SequenceNumber"]
        if last_before is not None:
            return last_before
        window_ms *= 2  # ends: the oldest record lies before `at_ms`


def reprocess(kinesis: Any, dynamodb: Any, stream: str, application: str, start: str,
              shard: str | None = None) -> dict[str, str]:
    """Move checkpoints back so the next start replays from `start` (TRIM_HORIZON or an ISO-8601
    time); returns shard id → new checkpoint. The application must be stopped (see `live_leases`)."""
    held = leases(dynamodb, application)
    if not held:
        raise OperateError(f"no leases in table {application!r}: nothing to move (the next start reads "
                           "from the configured initial position)")
    targets = [shard] if shard else sorted(held)
    missing = [s for s in targets if s not in held]
    if missing:
        raise OperateError(f"no lease for {', '.join(missing)} in {application!r}")
    at_ms = None if start == "TRIM_HORIZON" else parse_time(start)
    moved = {}
    for shard_id in targets:
        checkpoint = "TRIM_HORIZON" if at_ms is None else position_before(kinesis, stream, shard_id, at_ms)
        if checkpoint is None:
            continue
        dynamodb.update_item(TableName=application, Key={"leaseKey": {"S": shard_id}},
                             UpdateExpression="SET checkpoint = :c, checkpointSubSequenceNumber = :zero "
                                              "REMOVE pendingCheckpoint, pendingCheckpointSubSequenceNumber, "
                                              "pendingCheckpointState, childShardIds",
                             ExpressionAttributeValues={":c": {"S": checkpoint}, ":zero": {"N": "0"}})
        moved[shard_id] = checkpoint
    return moved


def clear_local_state(state_dir: str, shard_ids: Iterable[str]) -> list[str]:
    """Delete these shards' RocksDB under `state_dir`, so no record is skipped as applied."""
    cleared = []
    for root in [Path(state_dir), *Path(state_dir).glob("*/")]:
        for shard_id in shard_ids:
            directory = Path(shard_directory(str(root), shard_id))
            if directory.is_dir():
                shutil.rmtree(directory)
                cleared.append(str(directory))
    return cleared


def shown_fields(public: Iterable[str], show: Iterable[str], masked: Iterable[str]) -> frozenset[str]:
    """The projection fields `inspect` prints in clear: the adapter's known non-PII fields and the
    operator's `[inspect] show`, less `[inspect] mask` (which wins, even over the adapter)."""
    return frozenset((set(public) | set(show)) - set(masked))


def inspect(conversation_id: str, dynamodb: Any, table: str, state_dir: str | None,
            retention_seconds: int | None = None, *, shown: AbstractSet[str] = frozenset()) -> dict[str, Any]:
    """The DynamoDB item and any local state of one conversation, bookkeeping decoded, every
    projection value masked unless its field is in `shown` (an unknown field may hold PII: I10)."""
    response = dynamodb.get_item(TableName=table, Key={KEY: {"S": conversation_id}}, ConsistentRead=True)
    found: dict[str, Any] = {"conversationId": conversation_id}
    if "Item" in response:
        plain = {name: deserialize(value) for name, value in response["Item"].items()}
        raw_keys = plain.pop(KEYS, b"")
        found["dynamodb"] = {
            "version": plain.pop(VERSION, None), "ttl": plain.pop(TTL, None),
            "stamps": plain.pop(STAMPS, {}), "recent_event_keys": len(raw_keys) // 8,
            "projection": mask({k: v for k, v in plain.items() if k != KEY}, shown)}
    found["local"] = _local_state(conversation_id, state_dir, retention_seconds, shown) if state_dir else {}
    return found


def mask(values: Mapping[str, Any], shown: AbstractSet[str] = frozenset()) -> dict[str, Any]:
    """Values of fields not in `shown` replaced by a mask; a map keeps its keys (which attributes
    are set, useful when debugging) and loses its values."""
    return {name: value if name in shown else _masked(value) for name, value in values.items()}


def _masked(value: Any) -> Any:
    return {key: MASK for key in value} if isinstance(value, dict) else MASK


def _local_state(conversation_id: str, state_dir: str, retention_seconds: int | None,
                 shown: AbstractSet[str]) -> dict[str, Any]:
    """Look the conversation up in every shard store under `state_dir` (one worker's disk), read-only:
    the shard's own process may hold it open."""
    found = {}
    for directory in sorted(p for p in Path(state_dir).rglob("shardId-*") if p.is_dir()):
        store = ShardStore(str(directory), retention_seconds, read_only=True)
        try:
            state = store.get(conversation_id)
        finally:
            store.close()
        if state is not None:
            found[directory.name] = {"version": state.version, "recent_event_keys": len(state.recent_keys),
                                     "projection": mask(state.projection(), shown)}
    return found


def parse_time(text: str) -> int:
    millis = parse_time_ms(text)
    if millis is None:
        raise OperateError(f"--from takes TRIM_HORIZON or an ISO-8601 time, not {text!r}")
    return millis


def is_open(shard: Mapping[str, Any]) -> bool:
    """Whether a ListShards entry is still open (a reshard closes it: it gets an ending sequence)."""
    return "EndingSequenceNumber" not in shard["SequenceNumberRange"]


def _parents(shard: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(p for p in (shard.get("ParentShardId"), shard.get("AdjacentParentShardId")) if p)


def _records_from(kinesis: Any, stream: str, shard_id: str, at_ms: int | None) -> Iterator[dict[str, Any]]:
    """Records from the first arriving at or after `at_ms` (None: the oldest) to the shard's tip."""
    position = ({"ShardIteratorType": "TRIM_HORIZON"} if at_ms is None else
                {"ShardIteratorType": "AT_TIMESTAMP",
                 "Timestamp": datetime.fromtimestamp(max(at_ms, 0) / 1000, tz=timezone.utc)})
    iterator = kinesis.get_shard_iterator(StreamName=stream, ShardId=shard_id, **position)["ShardIterator"]
    while iterator:
        response = kinesis.get_records(ShardIterator=iterator, Limit=1000)
        yield from response["Records"]
        if not response["Records"] and response.get("MillisBehindLatest", 0) == 0:
            return
        iterator = response.get("NextShardIterator")


def _arrival_ms(record: Mapping[str, Any]) -> int:
    return int(record["ApproximateArrivalTimestamp"].timestamp() * 1000)
