"""How a system's writes and final table compare with the truth.

- leaked duplicate: a successful state write caused only by exact repeats or re-emits;
- stale overwrite: a successful write that replaced a field's value with an older event's;
- lost update: a distinct event whose winning value (per the truth) is missing from the final table;
- mismatch: a conversation whose final item differs from the truth in any field;
- wrong cell: a metrics cell (queue interval, agent interval or gauge) whose stored sums differ
  from the truth's in any metric compared, or that one side has and the other has not.

The peers report their writes themselves (which delivery each acknowledged write carried). Ours are read back from the metered emulator's PutItem history: each item carries
its field stamps (`_t`) and recent event keys (`_k`), so the same two questions can be asked of
writes made in another process (the KCL children).
"""
from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from bench.workload import Delivery, Truth
from processor.analytics.contribution import METRICS
from processor.analytics.reader import IDENTITY
from processor.dynamodb.item import from_item
from processor.reduce import same_value


@dataclass
class WriteCounts:
    leaked_duplicates: int = 0
    stale_overwrites: int = 0


def ledger_checks(deliveries: list[Delivery], writes: Iterable[tuple[int, list[str]]]) -> WriteCounts:
    """Leaks and stale overwrites among the peers' successful writes, in the order they were
    acknowledged: (delivery index, the fields the write set)."""
    counts = WriteCounts()
    held: dict[tuple[str, str], int] = {}
    for index, names in writes:
        delivery = deliveries[index]
        counts.leaked_duplicates += delivery.duplicate
        stale = False
        for name in names:
            incoming, _ = delivery.sets[name]
            field_key = (delivery.conversation_id, name)
            stale |= field_key in held and incoming < held[field_key]
            held[field_key] = incoming
        counts.stale_overwrites += stale
    return counts


def history_checks(puts: Iterable[Mapping[str, Any]]) -> WriteCounts:
    """Leaks and stale overwrites in a PutItem history of conversation items (ours)."""
    counts = WriteCounts()
    previous: dict[str, tuple[dict[str, int], set[int]]] = {}
    for wire_item in puts:
        conversation_id, state = from_item(_from_wire(wire_item))
        stamps = {name: stamp for name, (stamp, _) in state.registers.items()}
        keys = set(state.recent_keys)
        before = previous.get(conversation_id)
        if before is not None:
            old_stamps, old_keys = before
            counts.stale_overwrites += any(stamps.get(name, stamp) < stamp for name, stamp in old_stamps.items())
            counts.leaked_duplicates += not (keys - old_keys)
        previous[conversation_id] = (stamps, keys)
    return counts


def table_checks(truth: Truth, distinct: Iterable[Delivery], table: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """Mismatches and lost updates of a final table (conversation id → field values)."""
    mismatches = 0
    for conversation_id, state in truth.states.items():
        values = table.get(conversation_id, {})
        if any(name not in values or not same_value(values[name], value)
               for name, (_, value) in state.registers.items()):
            mismatches += 1
    lost = 0
    for delivery in distinct:
        values = table.get(delivery.conversation_id, {})
        for name, (stamp, value) in delivery.sets.items():
            winner = truth.winner(delivery.conversation_id, name)
            if (winner is not None and winner[0] == stamp and same_value(winner[1], value)
                    and not (name in values and same_value(values[name], value))):
                lost += 1
                break
    return {"mismatches": mismatches, "lost_updates": lost}


def cells_wrong(truth: Iterable[Mapping[str, Any]], rows: Iterable[Mapping[str, Any]],
                metrics: Mapping[str, Iterable[str]] = METRICS) -> int:
    """How many cells of `rows` (export form: kind, identity fields, metrics) differ from the
    truth's over `metrics` (kind -> the metrics compared; kinds not named are not compared). A cell
    only one side has counts as wrong unless its compared metrics are all zero; an absent metric
    reads as zero."""
    compared = {kind: tuple(names) for kind, names in metrics.items()}

    def by_cell(source: Iterable[Mapping[str, Any]]) -> dict[tuple, tuple[int, ...]]:
        cells: dict[tuple, tuple[int, ...]] = {}
        for row in source:
            kind = row.get("kind")
            if kind not in compared:
                continue
            identity = (kind, *(row.get(name) for name in IDENTITY[kind]))
            vector = tuple(int(row.get(name) or 0) for name in compared[kind])
            previous = cells.get(identity)
            cells[identity] = vector if previous is None else tuple(a + b for a, b in zip(previous, vector))
        return cells

    expected, found = by_cell(truth), by_cell(rows)
    zero = {kind: (0,) * len(names) for kind, names in compared.items()}
    return sum(expected.get(cell, zero[cell[0]]) != found.get(cell, zero[cell[0]])
               for cell in expected.keys() | found.keys())


def _from_wire(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item as the DynamoDB wire carries it (binary base64) in boto3's form (binary bytes)."""
    return {name: _value_from_wire(value) for name, value in item.items()}


def _value_from_wire(value: Mapping[str, Any]) -> Mapping[str, Any]:
    (kind, inner), = value.items()
    if kind == "B":
        return {"B": base64.b64decode(inner)}
    if kind == "M":
        return {"M": {name: _value_from_wire(v) for name, v in inner.items()}}
    if kind == "L":
        return {"L": [_value_from_wire(v) for v in inner]}
    return value
