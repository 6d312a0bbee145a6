"""Dedup, reduce and collapse: pure functions over a conversation's state, no I/O.

A conversation's state is a map of last-writer-wins registers plus a bounded window of recently
applied event keys. Registers merge by "highest (stamp, canonical value) wins", a join-semilattice:
idempotent, commutative and associative. So the projection depends only on the *set* of events
applied (I3), a repeat or a late event can never change it wrongly, and the key window is only a
fast path and a counter: an exact repeat is recognized and changes nothing (I1), an event that
changes no value is collapsed, no write due (I2), and the window is bounded (I8).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from processor import codec
from processor.analytics.contribution import Contribution
from processor.analytics.sessions import is_session
from processor.model import ConversationEvent, Register

#: how many recent event keys a conversation remembers (8 bytes each in the DynamoDB item)
KEY_WINDOW = 32

Derive = Callable[[Mapping[str, Any]], Mapping[str, Any]]


class Outcome(enum.Enum):
    """What applying one event did to its conversation."""

    REPEAT = "exact_repeats"  # its key was already applied
    NOOP = "noop_collapsed"  # changed nothing, and it was the newest so far (a re-fire)
    STALE = "stale"  # changed nothing, and a newer event had already been applied (late arrival)
    CHANGE = "changes"  # the projection changed: a write is due


@dataclass(slots=True)
class ConversationState:
    """Everything the processor knows about one conversation."""

    registers: dict[str, Register] = field(default_factory=dict)
    recent_keys: list[int] = field(default_factory=list)
    version: int = 0  # the DynamoDB item version this state was last written as (0: never)
    #: what the stored item at `version` contributes to the metrics cells (I12): set when the state
    #: is loaded or written, before events change it; None where no analytics are kept
    base: Contribution | None = None

    def projection(self, derive: Derive | None = None) -> dict[str, Any]:
        """The attributes written to DynamoDB: register values (sessions are bookkeeping) plus
        figures derived from them."""
        values = {name: value for name, (_, value) in self.registers.items() if not is_session(name)}
        if derive is not None:
            values.update(derive(values))
        return values


def canonical(value: Any) -> bytes:
    """A total, type-aware order for values: their canonical JSON bytes."""
    return codec.dumps(value, sort_keys=True)


_SCALARS = (str, int, float, bool, type(None))


def same_value(a: Any, b: Any) -> bool:
    """Equality that tells `1` and `true` apart, as DynamoDB does (values are in the form DynamoDB
    stores, `processor.limits.storable`: no integral floats, so `1.0` never meets `1`)."""
    if a is b:
        return True
    if a != b or type(a) is not type(b):
        return False
    return isinstance(a, _SCALARS) or canonical(a) == canonical(b)  # containers may hide 1 vs true


def wins(candidate: Register, incumbent: Register) -> bool:
    """True when `candidate` strictly beats `incumbent` in the register order."""
    (stamp, value), (their_stamp, their_value) = candidate, incumbent
    if stamp != their_stamp:
        return stamp > their_stamp
    if same_value(value, their_value):
        return False
    return canonical(value) > canonical(their_value)


class Join(enum.IntEnum):
    """What joining registers into a state did, in increasing order of consequence."""

    NOTHING = 0
    RESTAMP = 1  # a stamp advanced, no value changed: an effect that exists only in this state
    CHANGE = 2  # a value changed


def _join_into(state: ConversationState, sets: Mapping[str, Register]) -> Join:
    """Join registers into `state`."""
    result = Join.NOTHING
    registers = state.registers
    for name, incoming in sets.items():
        current = registers.get(name)
        if current is None:
            registers[name] = incoming
            result = Join.CHANGE
        elif incoming[0] > current[0] or (incoming[0] == current[0] and wins(incoming, current)):
            if not same_value(incoming[1], current[1]):
                result = Join.CHANGE
            elif result is Join.NOTHING:
                result = Join.RESTAMP
            registers[name] = incoming
    return result


def remember(state: ConversationState, keys: Iterable[int]) -> None:
    """Add event keys to the window, keeping the newest KEY_WINDOW."""
    window = state.recent_keys
    for key in keys:
        if key not in window:
            window.append(key)
    if len(window) > KEY_WINDOW:
        del window[: len(window) - KEY_WINDOW]


def apply(state: ConversationState, event: ConversationEvent) -> tuple[Outcome, bool]:
    """Dedup, reduce and collapse one event into `state` (mutated in place).

    Returns the outcome and whether the event advanced a stamp without changing a value: such an
    event changes no projection (no write is due) yet must reach DynamoDB before a new owner could
    need it (I14), so the engine holds its checkpoint until it does.
    """
    if event.key in state.recent_keys:
        return Outcome.REPEAT, False
    remember(state, (event.key,))
    joined = _join_into(state, event.sets)
    if joined is Join.CHANGE:
        return Outcome.CHANGE, False
    newer_seen = any(stamp > event.time_ms for stamp, _ in state.registers.values())
    return (Outcome.STALE if newer_seen else Outcome.NOOP), joined is Join.RESTAMP


def merge(state: ConversationState, other: ConversationState) -> bool:
    """Join `other` (e.g. the stored DynamoDB item) into `state`. True if a value changed.

    The version becomes the higher of the two: `other` is what the store holds now.
    """
    changed = _join_into(state, other.registers) is Join.CHANGE
    remember(state, other.recent_keys)
    state.version = max(state.version, other.version)
    return changed


def adds_to(state: ConversationState, stored: ConversationState) -> bool:
    """True when `state` knows a register (value or stamp) that `stored` does not hold as is."""
    theirs = stored.registers
    for name, mine in state.registers.items():
        other = theirs.get(name)
        if other is None or other[0] != mine[0] or not same_value(other[1], mine[1]):
            return True
    return False


def tombstone(state: ConversationState, name: str) -> Register:
    """Replace a field's value by None, keeping its stamp, and return what was there.

    For a value DynamoDB cannot store (I15): the stamp still orders the field, so an older event
    cannot bring back an older value in its place, and local state stays equal to the item.
    """
    dropped = state.registers[name]
    state.registers[name] = (dropped[0], None)
    return dropped
