"""Dedup, reduce, collapse (I1, I2, I3) as properties over generated Genesys conversations."""
from __future__ import annotations

import random

from hypothesis import given, settings, strategies as st

from processor import reduce
from processor.adapters.genesys import GenesysAdapter
from processor.model import ConversationEvent
from processor.reduce import ConversationState, Outcome, apply, merge
from devstack.storm import StormShape, conversation_events, envelope
from tests.conftest import redeliver
from tests.oracle import genesys_projection

genesys = GenesysAdapter()


@st.composite
def deliveries(draw):
    """One conversation's distinct events, and a delivery: shuffled, with repeats and re-emits."""
    seed = draw(st.integers(0, 2 ** 32))
    ties = draw(st.sampled_from([0.0, 0.5, 1.0]))  # 1.0: every event in the same millisecond
    rng = random.Random(seed)
    distinct = conversation_events(rng, StormShape(tie_rate=ties, refire_rate=0.7), 1_764_000_000_000)
    envelopes = [envelope(body["conversationId"], subtopic, body, body["eventTime"], rng) for subtopic, body in distinct]
    order = draw(st.permutations(range(len(envelopes))))
    stream = [envelopes[i] for i in order]
    extras = draw(st.lists(st.tuples(st.integers(0, len(envelopes) - 1), st.booleans(),
                                     st.integers(0, 10 ** 6)), max_size=12))
    for index, exact, position in extras:
        copy = envelopes[index] if exact else redeliver(envelopes[index])
        stream.insert(position % (len(stream) + 1), copy)
    return distinct, envelopes, stream


def run(stream) -> tuple[ConversationState, list[Outcome]]:
    state = ConversationState()
    return state, [apply(state, genesys.normalize(e))[0] for e in stream]


def project(state: ConversationState) -> dict:
    return state.projection(genesys.derive)


@settings(max_examples=300, deadline=None)
@given(deliveries())
def test_projection_depends_only_on_the_set_of_distinct_events(case):
    distinct, in_order, stream = case
    shuffled, _ = run(stream)
    ordered, _ = run(in_order)
    assert project(shuffled) == project(ordered) == genesys_projection(distinct)


@settings(max_examples=200, deadline=None)
@given(deliveries(), st.sampled_from([0, 1, 3]))
def test_correctness_does_not_depend_on_the_key_window(case, window):
    """With the dedup window shrunk to nothing, the merge alone still gives the same answer."""
    distinct, _, stream = case
    saved = reduce.KEY_WINDOW
    reduce.KEY_WINDOW = window
    try:
        state, outcomes = run(stream)
    finally:
        reduce.KEY_WINDOW = saved
    assert project(state) == genesys_projection(distinct)
    assert outcomes.count(Outcome.CHANGE) <= len(distinct)


@settings(max_examples=300, deadline=None)
@given(deliveries())
def test_a_repeat_or_re_emit_is_never_a_change(case):
    """I1: the second delivery of an event (same id or same body) never changes anything."""
    _, _, stream = case
    state, seen = ConversationState(), set()
    for e in stream:
        event = genesys.normalize(e)
        outcome, _ = apply(state, event)
        if event.key in seen:
            assert outcome is Outcome.REPEAT
        seen.add(event.key)


def test_a_re_fire_with_nothing_changed_is_a_noop():
    """I2: an attribute event that re-fires the same map later changes nothing."""
    state = ConversationState()
    first = ConversationEvent("c", 1, "attributes", 1000, {"attributes": (1000, {"a": "1"})})
    again = ConversationEvent("c", 2, "attributes", 2000, {"attributes": (2000, {"a": "1"})})
    assert apply(state, first) == (Outcome.CHANGE, False)
    assert apply(state, again) == (Outcome.NOOP, True)  # no write due, but a newer stamp only known here
    assert apply(state, again) == (Outcome.REPEAT, False)


def test_a_late_event_is_stale_and_loses():
    state = ConversationState()
    newer = ConversationEvent("c", 1, "acd.start", 2000, {"queueId": (2000, "q2")})
    older = ConversationEvent("c", 2, "acd.start", 1000, {"queueId": (1000, "q1")})
    apply(state, newer)
    assert apply(state, older) == (Outcome.STALE, False)
    assert state.registers["queueId"][1] == "q2"


def test_equal_stamps_resolve_by_value_whatever_the_order():
    a = ConversationEvent("c", 1, "x", 5, {"f": (5, "alpha")})
    b = ConversationEvent("c", 2, "x", 5, {"f": (5, "beta")})
    one, other = ConversationState(), ConversationState()
    apply(one, a), apply(one, b)
    apply(other, b), apply(other, a)
    assert one.registers == other.registers


def test_values_of_different_types_are_different_values():
    state = ConversationState()
    apply(state, ConversationEvent("c", 1, "x", 5, {"f": (5, 1)}))
    assert apply(state, ConversationEvent("c", 2, "x", 6, {"f": (6, True)})) == (Outcome.CHANGE, False)


@settings(max_examples=200, deadline=None)
@given(deliveries(), st.integers(0, 10 ** 6))
def test_merge_is_a_join(case, cut):
    """Splitting a delivery between two owners and merging gives the whole (I5, I6)."""
    distinct, _, stream = case
    cut %= len(stream) + 1
    left, _ = run(stream[:cut])
    right, _ = run(stream[cut:])
    merge(left, right)
    assert project(left) == genesys_projection(distinct)
    again = ConversationState(dict(left.registers), list(left.recent_keys), left.version)
    assert merge(again, right) is False  # idempotent
