"""The benchmark's input and its truth.

A delivery is one line of the storm as a consumer receives it, labelled with what the benchmark
needs to judge systems: its conversation, its event key (equal for an exact repeat and a source
re-emit) and whether an equal event was delivered before (a duplicate). The truth is every
distinct event applied in event-time order: the final registers per conversation, and how often
a conversation's projection changes on the way (the floor of writes for a live consumer).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping

from processor.analytics.sessions import is_session
from processor.adapters import Adapter
from processor.decode import decode
from processor.model import ConversationEvent, Register
from processor.reduce import ConversationState, Outcome, apply


@dataclass(frozen=True, slots=True)
class Delivery:
    index: int  # arrival position
    data: bytes
    envelope: dict[str, Any]
    conversation_id: str
    key: int
    time_ms: int
    sets: Mapping[str, Register]
    duplicate: bool = False  # an exact repeat or a re-emit of an event delivered earlier (`label`)

    @property
    def event(self) -> ConversationEvent:
        return ConversationEvent(self.conversation_id, self.key, "bench", self.time_ms, self.sets)


def parse(index: int, data: bytes, adapter: Adapter) -> Delivery:
    """One line as a consumer parses it (the storm has no poison lines)."""
    envelope = decode(data)
    event = adapter.normalize(envelope)
    projected = {name: register for name, register in event.sets.items() if not is_session(name)}  # what peers write
    return Delivery(index, data, envelope, event.conversation_id, event.key, event.time_ms, projected)


def label(lines: Iterable[bytes], adapter: Adapter) -> list[Delivery]:
    """Every line parsed and marked duplicate when an equal event came before it."""
    seen: set[int] = set()
    deliveries = []
    for index, data in enumerate(lines):
        delivery = parse(index, data, adapter)
        if delivery.key in seen:
            delivery = replace(delivery, duplicate=True)
        deliveries.append(delivery)
        seen.add(delivery.key)
    return deliveries


def in_event_time_order(deliveries: list[Delivery]) -> list[Delivery]:
    return sorted(deliveries, key=lambda delivery: (delivery.time_ms, delivery.index))


@dataclass
class Truth:
    states: dict[str, ConversationState]
    projection_changes: int  # in event-time order: the fewest writes a correct live consumer makes
    events: int

    @property
    def floor_writes_per_1k(self) -> float:
        return 1000 * self.projection_changes / self.events

    def winner(self, conversation_id: str, name: str) -> Register | None:
        return self.states[conversation_id].registers.get(name)


def truth(deliveries: list[Delivery]) -> Truth:
    """Apply every delivery in event-time order (the reduce is order-independent, I3, and proven
    against an independent oracle in the tests); count the projection changes on the way."""
    states: dict[str, ConversationState] = {}
    changes = 0
    for delivery in in_event_time_order(deliveries):
        state = states.setdefault(delivery.conversation_id, ConversationState())
        if apply(state, delivery.event)[0] is Outcome.CHANGE:
            changes += 1
    return Truth(states, changes, len(deliveries))
