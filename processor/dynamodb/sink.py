"""The sink: conversation states to DynamoDB with versioned, convergent writes (I5), and the
read-through that lets state follow a conversation to a new owner (I6).

Every write is a PutItem conditional on the version this process last saw. When another writer
got there first (a replay finding its own write, a zombie that lost its lease, a parent shard
racing its child), DynamoDB hands back the stored item; its state is joined into ours (always
safe, it is a semilattice) and we write again only if that join changed the projection.
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Protocol

from botocore.exceptions import ClientError

from processor.analytics.contribution import Contribution
from processor.analytics.sessions import is_session, participant_of
from processor.dynamodb.item import KEY, VERSION, Retention, fitted_item, from_item, to_item
from processor.dynamodb.metrics import MetricsTarget, MetricsWriter, Transaction
from processor.dynamodb.retry import GaveUp, full_jitter, until_processed, with_retries
from processor.model import Refusal
from processor.reduce import ConversationState, Derive, adds_to, canonical, merge, tombstone

BATCH_GET_LIMIT = 100
#: merges after failed conditions before giving up on a conversation's write (a race settles in 2)
MAX_CONFLICT_ROUNDS = 16
#: rounds of cancelled transactions (conflicts with other transactions, throttling) before giving up
MAX_TRANSACTION_ROUNDS = 200
#: cancellation reasons of a transaction's actions that a later round may clear
THROTTLED_REASONS = frozenset({"ThrottlingError", "ProvisionedThroughputExceeded"})
RETRY_REASONS = THROTTLED_REASONS | {"None", "TransactionConflict"}


class RefusedItem(RuntimeError):
    """DynamoDB refuses a conversation's item for a reason no field explains: a table problem."""


#: makes refused values durable; called from writer threads, before the item without them is written
OnRefused = Callable[[list[Refusal]], None]


class Sink(Protocol):
    counters: SinkCounters
    #: whether `read` can find anything (False: a dry run's sink, which keeps nothing)
    keeps_states: bool

    def read(self, conversation_ids: Iterable[str]) -> dict[str, ConversationState]:
        """Stored states of these conversations (absent ones are left out)."""

    def baseline(self, states: Iterable[ConversationState]) -> None:
        """Record what each state, as stored, contributes to the metrics (before events change it)."""

    def write(self, states: Mapping[str, ConversationState], on_refused: OnRefused | None = None,
              shard_id: str = "") -> list[Refusal]:
        """Make the store hold (at least) these states; bumps each state's version as written, and
        moves the metrics of `shard_id` by the same versions' deltas (I12).

        Fields DynamoDB cannot store are tombstoned in the state, handed to `on_refused` before
        the item without them is written, and returned (I15)."""


@dataclass
class SinkCounters:
    writes: int = 0  # write requests issued (PutItem, TransactWriteItems, UpdateItem), retries included
    reads: int = 0  # BatchGetItem requests issued
    transactions: int = 0  # of those, TransactWriteItems (conversations with metric deltas, first attempts)
    conflicts: int = 0  # conditional checks that failed and were merged
    throttles: int = 0  # retryable failures (throttling, 5xx, connection)
    refused: int = 0  # fields left out of an item because DynamoDB cannot store them
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)


class NullSink:
    """Writes nothing and knows nothing: the engine alone, for dry runs and benchmarks."""

    keeps_states = False

    def __init__(self) -> None:
        self.counters = SinkCounters()

    def read(self, conversation_ids: Iterable[str]) -> dict[str, ConversationState]:
        return {}

    def baseline(self, states: Iterable[ConversationState]) -> None:
        pass

    def write(self, states: Mapping[str, ConversationState], on_refused: OnRefused | None = None,
              shard_id: str = "") -> list[Refusal]:
        for state in states.values():
            state.version += 1
        return []


class DynamoSink:
    keeps_states = True

    def __init__(self, client: Any, table: str, derive: Derive | None = None,
                 retention: Retention | None = None, concurrency: int = 16, metrics: MetricsTarget | None = None):
        """`metrics`: keep the queue and agent metrics there too (None: conversation states only)."""
        self._client = client
        self._table = table
        self._metrics = MetricsWriter(client, metrics, self._call) if metrics is not None else None
        self._derive = derive
        self._retention = retention
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="ddb-write")
        self.counters = SinkCounters()

    def read(self, conversation_ids: Iterable[str]) -> dict[str, ConversationState]:
        ids = list(dict.fromkeys(conversation_ids))
        found: dict[str, ConversationState] = {}
        for start in range(0, len(ids), BATCH_GET_LIMIT):
            request = {self._table: {"Keys": [{KEY: {"S": cid}} for cid in ids[start:start + BATCH_GET_LIMIT]],
                                     "ConsistentRead": True}}
            send = lambda pending: self._call(self._client.batch_get_item, counter="reads", RequestItems=pending)  # noqa: E731
            for response in until_processed(send, request, "UnprocessedKeys",
                                            on_leftover=lambda: self.counters.add("throttles")):
                for item in response.get("Responses", {}).get(self._table, []):
                    conversation_id, state = from_item(item)
                    found[conversation_id] = state
        return found

    def baseline(self, states: Iterable[ConversationState]) -> None:
        if self._metrics is not None:
            for state in states:
                self._metrics.baseline(state)

    def write(self, states: Mapping[str, ConversationState], on_refused: OnRefused | None = None,
              shard_id: str = "") -> list[Refusal]:
        """Conversations whose metrics do not move are plain conditional puts; the others go in
        transactions with their metric deltas (so are those a merge gave a delta on the way)."""
        metrics = self._metrics
        now = {cid: metrics.contribution(state) for cid, state in states.items()} if metrics is not None else {}
        moving = {cid: state for cid, state in states.items() if cid in now and metrics.delta(state, now[cid])}
        futures = {cid: self._pool.submit(self._write_one, cid, state, on_refused)
                   for cid, state in states.items() if cid not in moving}
        refusals: list[Refusal] = []
        for cid, future in futures.items():
            written, refused = future.result()
            refusals += refused
            if not written:
                moving[cid] = states[cid]
                del now[cid]  # a merge changed what it contributes
        if moving:
            refusals += self._write_transactions(moving, on_refused, shard_id, now)
        return refusals

    def _write_one(self, conversation_id: str, state: ConversationState,
                   on_refused: OnRefused | None) -> tuple[bool, list[Refusal]]:
        """Write until the store holds `state` (merging what others wrote meanwhile, I5). False
        when a merge gave the state a metric delta: it must go in a transaction (I12)."""
        refusals: list[Refusal] = []
        for conflict in range(MAX_CONFLICT_ROUNDS):
            item, _, dropped = fitted_item(conversation_id, state, state.version + 1, self._derive, self._retention)
            refusals += self._refuse([Refusal(conversation_id, name, register, "item over DynamoDB's 400 KB limit")
                                      for name, register in dropped], on_refused)
            try:
                self._put(item, state.version)
            except ClientError as error:
                code = error.response["Error"]["Code"]
                if code == "ValidationException":
                    refusals += self._refuse(self._refused_fields(conversation_id, state, code), on_refused)
                    if self._metrics is not None and self._metrics.delta(state):
                        return False, refusals  # a refused value moved a cell: a transaction, then
                    continue
                if code != "ConditionalCheckFailedException":
                    raise
                self.counters.add("conflicts")
                stored = error.response.get("Item") or self._get(conversation_id)
                if not self._adopt_stored(state, stored):
                    break
                if self._metrics is not None and self._metrics.delta(state):
                    return False, refusals
                if conflict:  # another writer keeps winning: let it finish
                    time.sleep(full_jitter(conflict, 0.05, 1.0))
                continue
            state.version += 1  # no delta, so what it contributes is its base already
            break
        else:
            raise GaveUp(f"a conversation's write still conflicted after {MAX_CONFLICT_ROUNDS} merges")
        return True, refusals

    def _write_transactions(self, states: Mapping[str, ConversationState], on_refused: OnRefused | None,
                            shard_id: str, now: Mapping[str, Contribution]) -> list[Refusal]:
        """Write these conversations with their metric deltas until each is stored (I5, I12).
        `now`: what some of them contribute as they are (a contribution is computed once per round,
        not again for the delta and the new base: it is a large part of a write's CPU)."""
        metrics = self._metrics
        assert metrics is not None
        slots = metrics.slots(shard_id)
        pending = dict(states)
        stored: dict[str, ConversationState] = {}  # conversations written in stages: the state stored
        refusals: list[Refusal] = []
        merges = rounds = 0
        known = dict(now)  # contributions of registers as they are; a round that changes them drops them
        while pending:
            items, sizes, deltas, written = {}, {}, {}, {}
            for cid, state in pending.items():
                contributes = known.pop(cid, None)
                if contributes is None:
                    contributes = metrics.contribution(state)
                change = metrics.delta(state, contributes)
                written[cid] = state if metrics.fits(change) else self._stage(cid, state, stored)
                items[cid], sizes[cid], dropped = fitted_item(cid, written[cid], state.version + 1, self._derive,
                                                              self._retention)
                refusals += self._refuse([Refusal(cid, name, register, "item over DynamoDB's 400 KB limit")
                                          for name, register in dropped], on_refused)
                # a stage, or a field given way to the size limit, has a delta of its own
                fitted_as_is = written[cid] is state and not dropped
                deltas[cid] = change if fitted_as_is else metrics.delta_of(written[cid], state.base)
                if fitted_as_is:
                    known[cid] = contributes
            transactions = metrics.pack(deltas, sizes, slots)
            metrics.announce(transactions, shard_id)
            outcomes = list(self._pool.map(lambda t: self._transact(t, items, deltas, shard_id), transactions))
            merged = refused_any = validation = False
            for transaction, failures in zip(transactions, outcomes):
                if failures:  # cancelled: it wrote no partial
                    slots.give_back(transaction)
                for cid in transaction.conversations:
                    state, failure = pending[cid], failures.get(cid)
                    if failure is not None:
                        known.pop(cid, None)  # a merge or a refusal changes what it contributes
                    if failure is None:
                        state.version += 1
                        if cid in known:  # written as it is: what it contributes is the new base
                            state.base = known.pop(cid)
                        else:
                            metrics.baseline(written[cid])
                            state.base = written[cid].base
                        if written[cid] is state:
                            del pending[cid]
                        else:  # a stage: the next round writes the next one
                            stored[cid] = written[cid]
                            written[cid].version = state.version
                    elif failure[0] == "ConditionalCheckFailed":
                        self.counters.add("conflicts")
                        merged = True
                        stored.pop(cid, None)
                        if not self._adopt_stored(state, failure[1] or self._get(cid)):
                            del pending[cid]
                    elif failure[0] == "ValidationError":
                        validation = True
                        refused = self._refused_fields(cid, state, "ValidationException")
                        refused_any |= bool(refused)
                        refusals += self._refuse(refused, on_refused)
            if validation and not refused_any:
                raise RefusedItem("DynamoDB refused a transaction that no conversation field explains: check the "
                                  "metrics table's key schema")
            merges += merged
            rounds += 1
            if pending and (merges > MAX_CONFLICT_ROUNDS or rounds > MAX_TRANSACTION_ROUNDS):
                raise GaveUp(f"conversations' transactions still cancelled after {rounds} rounds")
            if pending and not merged:
                time.sleep(full_jitter(rounds, 0.05, 2.0))  # cancelled by contention or throttling
        return refusals

    def _stage(self, cid: str, state: ConversationState, stored: dict[str, ConversationState]) -> ConversationState:
        """A state between the stored one and `state` whose metric delta fits one transaction (I12):
        the stored state joined with the new sessions of as many participants as fit, in participant
        order, then the other fields. Every stage is a state the conversation really passes through
        (nothing stored is taken away), with the stored event keys, so a new owner that finds a stage
        replays the events it lacks. One participant moves at most 16 cells: each stage progresses."""
        metrics = self._metrics
        assert metrics is not None
        if cid not in stored:
            item = self._get(cid)
            stored[cid] = from_item(item)[1] if item is not None else ConversationState()
            if stored[cid].version != state.version:  # written meanwhile (or expired): join it first
                self._adopt_stored(state, item)
        stage = ConversationState(dict(stored[cid].registers), list(stored[cid].recent_keys), state.version)
        news = [name for name, register in state.registers.items() if stage.registers.get(name) != register]
        groups: dict[str, list[str]] = {}
        for name in news:
            groups.setdefault(participant_of(name) if is_session(name) else "~other", []).append(name)
        for group in sorted(groups, key=lambda key: (key == "~other", key)):
            trial = ConversationState({**stage.registers, **{name: state.registers[name] for name in groups[group]}},
                                      stage.recent_keys, stage.version)
            if not metrics.fits(metrics.delta_of(trial, state.base)):
                break
            stage = trial
        return stage

    def _transact(self, transaction: Transaction, items: Mapping[str, dict[str, Any]],
                  deltas: Mapping[str, Any], shard_id: str) -> dict[str, tuple[str, Any]]:
        """Run one transaction; the conversations it did not write, with the reason and, for a
        failed condition, the stored item. Empty: all written."""
        assert self._metrics is not None
        puts = [{"Put": self._versioned_put(items[cid], int(items[cid][VERSION]["N"]) - 1)}
                for cid in transaction.conversations]
        try:
            self.counters.add("transactions")
            self._call(self._client.transact_write_items, counter="writes",
                       TransactItems=puts + self._metrics.updates(transaction, deltas, shard_id))
        except ClientError as error:
            code = error.response["Error"]["Code"]
            if code == "ValidationException":  # the request as a whole: each conversation is probed
                return {cid: ("ValidationError", None) for cid in transaction.conversations}
            if code != "TransactionCanceledException":
                raise
            reasons = error.response.get("CancellationReasons") or []
            codes = [reason.get("Code") or "None" for reason in reasons]
            refused = [code for code in codes[len(puts):] if code not in RETRY_REASONS]
            if refused:
                raise RefusedItem(f"the metrics table refused a partial ({refused[0]}): check its key schema") from None
            if THROTTLED_REASONS.intersection(codes):
                self.counters.add("throttles")
            return {cid: (codes[n], reasons[n].get("Item")) if n < len(reasons) else ("None", None)
                    for n, cid in enumerate(transaction.conversations)}
        return {}

    def _refuse(self, refusals: list[Refusal], on_refused: OnRefused | None) -> list[Refusal]:
        """Hand refused values over (to the dead letters, durably) before an item without them is
        written: once it is, a replay finds it stored and would never see them again."""
        if refusals:
            self.counters.add("refused", len(refusals))
            if on_refused is not None:
                on_refused(refusals)
        return refusals

    def _put(self, item: dict[str, Any], expected_version: int) -> None:
        self._call(self._client.put_item, counter="writes", **self._versioned_put(item, expected_version))

    def _versioned_put(self, item: dict[str, Any], expected_version: int) -> dict[str, Any]:
        """A Put of `item` conditional on the stored version (I5), alone or in a transaction."""
        return {"TableName": self._table, "Item": item,
                "ConditionExpression": "attribute_not_exists(#id) OR #v = :expected",
                "ExpressionAttributeNames": {"#id": KEY, "#v": VERSION},
                "ExpressionAttributeValues": {":expected": {"N": str(expected_version)}},
                "ReturnValuesOnConditionCheckFailure": "ALL_OLD"}

    def _acceptable(self, item: dict[str, Any]) -> bool:
        """Whether DynamoDB accepts `item`, without writing it: a put whose condition never holds
        is validated first (ValidationException) and then refused on its condition."""
        try:
            self._call(self._client.put_item, counter="writes", TableName=self._table, Item=item,
                       ConditionExpression="#v = :never", ExpressionAttributeNames={"#v": VERSION},
                       ExpressionAttributeValues={":never": {"N": "-1"}})
        except ClientError as error:
            code = error.response["Error"]["Code"]
            if code == "ConditionalCheckFailedException":
                return True
            if code == "ValidationException":
                return False
            raise
        raise RefusedItem("a put conditional on version -1 was written: the table is not this processor's")

    def _get(self, conversation_id: str) -> Mapping[str, Any] | None:
        """The stored item, strongly consistent: for a failed condition that did not return it."""
        response = self._call(self._client.get_item, counter="reads", TableName=self._table,
                              Key={KEY: {"S": conversation_id}}, ConsistentRead=True)
        return response.get("Item")

    def _refused_fields(self, conversation_id: str, state: ConversationState, code: str) -> list[Refusal]:
        """DynamoDB refused an item the checks before the write let through (a rule they do not
        know): find every field it refuses, tombstone them in `state`, and return them.

        Probes, which write nothing: the item with no projected value must pass (else the table
        itself refuses our items: a loud error, not silent loss); then each value is put back,
        largest first, and kept only if the item still passes."""
        values = sorted((name for name, (_, value) in state.registers.items()
                         if value is not None and not is_session(name)),
                        key=lambda name: (-len(canonical(state.registers[name][1])), name))
        trial = ConversationState(dict(state.registers), state.recent_keys, state.version)
        for name in values:
            tombstone(trial, name)
        if not self._acceptable(to_item(conversation_id, trial, state.version + 1, self._derive, self._retention)):
            raise RefusedItem(f"DynamoDB refuses a conversation's item with no projected value ({code}): "
                              "check the table's key schema and the [adapter.state] names")
        refused = []
        for name in values:
            trial.registers[name] = state.registers[name]
            if not self._acceptable(to_item(conversation_id, trial, state.version + 1, self._derive, self._retention)):
                tombstone(trial, name)
                refused.append(Refusal(conversation_id, name, tombstone(state, name),
                                       f"DynamoDB refused the item ({code})"))
        return refused

    def _adopt_stored(self, state: ConversationState, stored_item: Mapping[str, Any] | None) -> bool:
        """Join the stored item into `state`; True when ours still adds to it (write again)."""
        if stored_item is None:  # deleted under us (TTL): the next attempt creates it anew, and
            state.version = 0  # the metrics keep what it contributed (its base stays)
            return True
        _, stored = from_item(stored_item)
        if self._metrics is not None:
            self._metrics.baseline(stored)
            state.base = stored.base
        merge(state, stored)
        state.version = stored.version
        return adds_to(state, stored)

    def _call(self, method: Any, counter: str, **kwargs: Any) -> Any:
        def attempt() -> Any:
            self.counters.add(counter)
            return method(**kwargs)

        return with_retries(attempt, on_retry=lambda _: self.counters.add("throttles"))

    def close(self) -> None:
        self._pool.shutdown(wait=True)
