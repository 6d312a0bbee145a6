"""The metrics side of a flush: each conversation's delta, packed into transactions with its
version change (I12), on partial keys written at most once per flush of one shard (I13).

A transaction holds up to 100 actions: conversation Puts, each conditional on the stored version,
and one ADD per cell their deltas touch, of the deltas summed. Conversations are packed in order
of the cells they touch, so those of one queue and interval share a transaction and its partial;
every transaction that touches a cell in one flush gets its own slot (a new partial key), and the
directory lists each partial before a transaction can create it.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping

from botocore.exceptions import ClientError

from processor.analytics import layout
from processor.analytics.contribution import AnalyticsSettings, Cell, Contribution, contribution, delta, metrics_of
from processor.reduce import ConversationState

#: DynamoDB's limits for one TransactWriteItems, with room to spare on the size
MAX_ACTIONS = 100
MAX_TRANSACTION_BYTES = 3_500_000
DAY_SECONDS = 86_400


@dataclass(frozen=True)
class MetricsTarget:
    """Where and how the metrics are kept: the table, the analytics settings, how long an
    interval's partials live."""

    table: str
    settings: AnalyticsSettings
    retention_seconds: int


@dataclass
class Transaction:
    """Conversations written together, and the partial (cell, slot) each of their cells goes to."""

    conversations: list[str] = field(default_factory=list)
    cells: dict[Cell, str] = field(default_factory=dict)  # cell -> its slot, `<writer>.<n>`
    size: int = 0


class Slots:
    """The partial slots of one flush: a cell's next slot, and the slots of cancelled transactions,
    which wrote nothing and are already listed in the directory (taken again first)."""

    def __init__(self, writer: str) -> None:
        self._writer = writer
        self._next: dict[Cell, int] = {}
        self._free: dict[Cell, list[str]] = {}

    def take(self, cell: Cell) -> str:
        free = self._free.get(cell)
        if free:
            return free.pop()
        slot = self._next.get(cell, 0)
        self._next[cell] = slot + 1
        return f"{self._writer}.{slot}"

    def give_back(self, transaction: Transaction) -> None:
        for cell, slot in transaction.cells.items():
            self._free.setdefault(cell, []).append(slot)


class MetricsWriter:
    """Knows the metrics table: deltas, packing, slots, and the directory (one per process)."""

    def __init__(self, client: Any, target: MetricsTarget, call: Callable[..., Any]):
        self.table = target.table
        self.settings = target.settings
        self._client = client
        self._retention_seconds = target.retention_seconds
        self._writers: dict[str, str] = {}  # shard id -> this process's writer name for it
        self._call = call
        self._lock = threading.Lock()
        self._listed: dict[str, set[str]] = {}  # directory key -> partials known to be listed
        self._days: set[tuple[str, str]] = set()
        self._intervals: set[tuple[str, str]] = set()
        self._registered: set[str] = set()

    def baseline(self, state: ConversationState) -> None:
        """Record what the state as stored contributes (before events change it)."""
        state.base = self.contribution(state)

    def contribution(self, state: ConversationState) -> Contribution:
        """What the state contributes to the cells as it is now."""
        return contribution(state.registers, self.settings)

    def delta(self, state: ConversationState, now: Contribution | None = None) -> Contribution:
        """What writing the state adds to the cells (`now`: its contribution, if known already)."""
        return delta(self.contribution(state) if now is None else now, state.base or {})

    @staticmethod
    def fits(cells: Contribution) -> bool:
        """Whether a conversation's delta fits one transaction beside its put."""
        return len(cells) < MAX_ACTIONS

    def delta_of(self, state: ConversationState, base: Contribution | None) -> Contribution:
        """What writing `state` over a stored state that contributes `base` adds to each cell."""
        return delta(contribution(state.registers, self.settings), base or {})

    def slots(self, shard_id: str) -> Slots:
        """The slots of one flush of one shard."""
        return Slots(self.writer(shard_id))

    def writer(self, shard_id: str) -> str:
        """This process's name in the shard's partial keys: `w<epoch mod 4>`, the epoch counted up
        atomically in `w|<shard>` when the process first writes metrics for it. A zombie that
        lost the lease and its successor have consecutive epochs, so they never share a key (I13),
        and a shard has at most four writers' partials per cell however often its process restarts."""
        with self._lock:
            known = self._writers.get(shard_id)
        if known is not None:
            return known
        response = self._call(self._client.update_item, counter="writes", TableName=self.table,
                              Key={layout.KEY: {"S": layout.epoch_key(shard_id)}}, UpdateExpression="ADD #epoch :one",
                              ExpressionAttributeNames={"#epoch": layout.EPOCH},
                              ExpressionAttributeValues={":one": {"N": "1"}}, ReturnValues="UPDATED_NEW")
        epoch = int(response["Attributes"][layout.EPOCH]["N"])
        with self._lock:
            return self._writers.setdefault(shard_id, f"w{epoch % layout.WRITERS}")

    def pack(self, deltas: Mapping[str, Contribution], sizes: Mapping[str, int], slots: Slots) -> list[Transaction]:
        """Transactions for these conversations, each cell on a slot no other transaction of this
        flush writes."""
        order = sorted(deltas, key=lambda cid: (sorted(map(layout.cell_key, deltas[cid]))[:1], cid))
        transactions: list[Transaction] = []
        current = Transaction()
        for cid in order:
            new_cells = [cell for cell in deltas[cid] if cell not in current.cells]
            actions = len(current.conversations) + len(current.cells) + 1 + len(new_cells)
            if current.conversations and (actions > MAX_ACTIONS or current.size + sizes[cid] > MAX_TRANSACTION_BYTES):
                transactions.append(current)
                current, new_cells = Transaction(), list(deltas[cid])
            current.conversations.append(cid)
            current.size += sizes[cid]
            for cell in new_cells:
                current.cells[cell] = slots.take(cell)
        if current.conversations:
            transactions.append(current)
        return transactions

    def updates(self, transaction: Transaction, deltas: Mapping[str, Contribution], shard_id: str) -> list[dict[str, Any]]:
        """The partial ADDs of one transaction: its conversations' deltas summed per cell."""
        sums: dict[Cell, list[int]] = {}
        for cid in transaction.conversations:
            for cell, vector in deltas[cid].items():
                total = sums.setdefault(cell, [0] * len(vector))
                for i, amount in enumerate(vector):
                    total[i] += amount
        return [layout.partial_update(self.table, cell, {k: v for k, v in metrics_of(cell, tuple(total)).items() if v},
                                      shard_id, transaction.cells[cell], self._expires(cell))
                for cell, total in sums.items() if any(total)]

    def announce(self, transactions: Iterable[Transaction], shard_id: str) -> None:
        """List every partial these transactions may create, before they run (readers follow the
        directory; a listed partial that a crash never created reads as zero)."""
        wanted: dict[str, set[str]] = {}
        expiry: dict[str, int | None] = {}
        for transaction in transactions:
            for cell, slot in transaction.cells.items():
                key = layout.directory_of(cell, shard_id)
                wanted.setdefault(key, set()).add(layout.partial_key(cell, shard_id, slot))
                expiry[key] = self._expires(cell)
        with self._lock:
            new = {key: parts - self._listed.get(key, set()) for key, parts in wanted.items()}
            new = {key: parts for key, parts in new.items() if parts}
            intervals = {(shard_id, key.split("|")[1]) for key in new if not key.startswith("d|gauge|")} - self._intervals
            days = {(shard, interval[:10]) for shard, interval in intervals} - self._days
            register = shard_id not in self._registered
        if not new:
            return
        if register:
            self._update(layout.set_addition(layout.registry_key(shard_id), layout.SHARDS, [shard_id]))
        if days:
            try:
                self._update(layout.shard_days(shard_id, [day for _, day in days], self.settings.interval_minutes))
            except ClientError as error:
                if error.response["Error"]["Code"] != "ConditionalCheckFailedException":
                    raise
                raise ValueError(f"the metrics table {self.table} holds intervals of another width than "
                                 f"interval_minutes = {self.settings.interval_minutes}: use its width, or a new "
                                 "metrics table") from None
        for day in sorted({day for _, day in days} | {interval[:10] for _, interval in intervals}):
            of_day = [interval for _, interval in intervals if interval.startswith(day)]
            self._update(layout.set_addition(layout.day_key(shard_id, day), layout.INTERVALS, of_day,
                                             self._expires_day(day)))
        for key, parts in new.items():
            self._update(layout.set_addition(key, layout.PARTS, parts, expiry[key]))
        with self._lock:
            self._registered.add(shard_id)
            self._days |= days
            self._intervals |= intervals
            for key, parts in new.items():
                self._listed.setdefault(key, set()).update(parts)

    def _update(self, arguments: dict[str, Any]) -> None:
        self._call(self._client.update_item, counter="writes", TableName=self.table, **arguments)

    def _expires_day(self, day: str) -> int:
        return int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=timezone.utc).timestamp()) + DAY_SECONDS \
            + self._retention_seconds

    def _expires(self, cell: Cell) -> int | None:
        """Partials of an interval expire `retention` after it; gauges never (they are live sums)."""
        if cell.interval is None:
            return None
        return cell.interval // 1000 + self._retention_seconds
