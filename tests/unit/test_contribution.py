"""Analytics contributions (ANALYTICS.md) against the independent oracle in tests/metrics_oracle.py.

The processor's side here has no DynamoDB: every envelope is normalized and applied to its
conversation's state, each conversation's `contribution` is summed over conversations and read
out with `summed`, the reader's own function. Since the stored partials sum to the sum of the
contributions (I12, tested elsewhere), these rows are what `--export-metrics` must write.
"""
from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any, Iterable, Mapping

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from devstack.storm import StormShape, storm
from processor.adapters.genesys import GenesysAdapter
from processor.analytics.contribution import AnalyticsSettings, contribution, interval_text
from processor.analytics.reader import rows_of
from processor.reduce import ConversationState, apply
from tests.conftest import T0, detail_event, redeliver
from tests.metrics_oracle import AGENT_METRICS, QUEUE_METRICS, distinct_events, expected_rows

genesys = GenesysAdapter()
MINUTE = 60_000


def processor_rows(envelopes: Iterable[Mapping[str, Any]], interval_minutes: int = 30,
                   service_level_seconds: float = 20.0, by_queue: Mapping[str, float] | None = None) -> list[dict]:
    """The rows the processor's contributions add up to, for these envelopes in this order."""
    analytics = AnalyticsSettings(interval_minutes, float(service_level_seconds), dict(by_queue or {}))
    states: dict[str, ConversationState] = defaultdict(ConversationState)
    for envelope in envelopes:
        event = genesys.normalize(copy.deepcopy(envelope))
        apply(states[event.conversation_id], event)
    return rows_of(contribution(state.registers, analytics) for state in states.values())


def both(envelopes: list[dict], **options: Any) -> tuple[list[dict], list[dict]]:
    return processor_rows(envelopes, **options), expected_rows(envelopes, **options)


def storm_envelopes(conversations: int, seed: int, **shape: Any) -> list[dict]:
    return [orjson.loads(line) for line in storm(StormShape(conversations=conversations, seed=seed, **shape))]


def total(rows: list[dict], kind: str, metric: str) -> int:
    return sum(row[metric] for row in rows if row["kind"] == kind)


def at(minutes: float) -> int:
    """An event time `minutes` after T0 (2026-01-01T00:00Z, an interval start), as `detail_event` takes it."""
    return int(minutes * MINUTE)


def interval(minutes: float, width: int = 30) -> str:
    return interval_text(T0 + int(minutes * MINUTE) // (width * MINUTE) * width * MINUTE)


def queue_row(rows: list[dict], queue: str, when: str, media: str = "VOICE") -> dict | None:
    found = [r for r in rows if r["kind"] == "queue" and r["queueId"] == queue and r["interval"] == when
             and r["mediaType"] == media]
    assert len(found) <= 1
    return found[0] if found else None


def agent_row(rows: list[dict], user: str, when: str) -> dict | None:
    found = [r for r in rows if r["kind"] == "agent" and r["userId"] == user and r["interval"] == when]
    return found[0] if found else None


def gauges(rows: list[dict]) -> dict[tuple[str, str], tuple[int, int]]:
    return {(r["queueId"], r["mediaType"]): (r["oWaiting"], r["oInteracting"]) for r in rows if r["kind"] == "gauge"}


# --- the storm: the processor agrees with the oracle ------------------------------------------------

@pytest.mark.parametrize("seed", [1, 7, 42, 2025])
def test_storm_rows_equal_the_oracle(seed):
    envelopes = storm_envelopes(300, seed)
    got, expected = both(envelopes)
    assert got == expected
    # the storm exercises what it should: every outcome, transfers, service level, handle, agents
    for metric in ("nOffered", "nAnswered", "nAbandon", "nFlowOut", "nOverSla", "nTransferred", "nAcw", "nHandled"):
        assert total(expected, "queue", metric) > 0, metric
    assert total(expected, "queue", "nHandled") == total(expected, "agent", "nHandled")
    assert total(expected, "queue", "tHandle") == total(expected, "agent", "tHandle")
    assert len({r["interval"] for r in expected if r["kind"] == "queue"}) >= 1
    # every row carries every metric of its kind, and at least one is not zero
    for row in expected:
        names = {"queue": QUEUE_METRICS, "agent": AGENT_METRICS, "gauge": ("oWaiting", "oInteracting")}[row["kind"]]
        assert set(names) <= set(row) and any(row[n] for n in names)
    # a finished storm has no live gauges: every conversation ended
    assert gauges(expected) == {}


@pytest.mark.parametrize("minutes", [5, 60])
def test_storm_rows_equal_the_oracle_for_other_interval_widths(minutes):
    envelopes = storm_envelopes(300, 3, arrivals_per_second=0.2)  # 300 conversations over 25 minutes
    got, expected = both(envelopes, interval_minutes=minutes, service_level_seconds=15,
                         by_queue={"queue-001": 45, "queue-002": 2.5})
    assert got == expected
    assert len({r["interval"] for r in expected if r["kind"] == "queue"}) >= (5 if minutes == 5 else 1)


def test_storm_prefixes_have_the_oracle_gauges():
    """Cut the stream anywhere: conversations in flight show in the gauges, as the oracle says."""
    envelopes = storm_envelopes(150, 11)
    for cut in (len(envelopes) // 7, len(envelopes) // 3, len(envelopes) // 2, len(envelopes) - 40):
        got, expected = both(envelopes[:cut])
        assert got == expected, cut
        live = gauges(expected)
        assert sum(w for w, _ in live.values()) + sum(i for _, i in live.values()) > 0, cut


# --- order, repeats and re-emits never change the rows ----------------------------------------------

@st.composite
def deliveries(draw, conversations: int):
    """A small storm's distinct events, and a delivery of them: any order, any repeats and re-emits."""
    seed = draw(st.integers(0, 2 ** 16))
    ties = draw(st.sampled_from([0.15, 1.0]))
    envelopes = storm_envelopes(conversations, seed, tie_rate=ties, repeat_rate=0, reemit_rate=0,
                                abandon_rate=0.3, transfer_rate=0.4, arrivals_per_second=0.01)
    order = draw(st.permutations(range(len(envelopes))))
    stream = [envelopes[i] for i in order]
    extras = draw(st.lists(st.tuples(st.integers(0, len(envelopes) - 1), st.booleans(), st.integers(0, 10 ** 6)),
                           max_size=40))
    for index, exact, position in extras:
        stream.insert(position % (len(stream) + 1), envelopes[index] if exact else redeliver(envelopes[index]))
    return envelopes, stream


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(deliveries(conversations=4))
def test_rows_depend_only_on_the_set_of_distinct_events(case):
    envelopes, stream = case
    assert len(distinct_events(stream)) == len(distinct_events(envelopes))
    in_order = processor_rows(envelopes)
    assert processor_rows(stream) == in_order == expected_rows(stream) == expected_rows(envelopes)


# Conversations drawn freely: conflicting facts for one participant, ties in one millisecond, ends
# without starts, missing fields. Times come from a few values in three intervals, so ties and
# interval moves are common.
_TIMES = [at(m) for m in (0, 0.5, 29.9, 31, 31, 45, 62)]


@st.composite
def free_events(draw):
    events = []
    for n in range(draw(st.integers(1, 12))):
        conversation = draw(st.sampled_from(["c1", "c2"]))
        subtopic = draw(st.sampled_from(["acd.start", "acd.end", "user.start", "user.end", "acw", "customer.end",
                                         "customer.start"]))
        fields: dict[str, Any] = {"participantId": draw(st.sampled_from(["p1", "p2"]))}
        for name, values in (("queueId", ["q1", "q2", None]), ("mediaType", ["VOICE", "CHAT", None]),
                             ("userId", ["u1", "u2", None]),
                             ("acdOutcome", ["ANSWERED", "ABANDON", "FLOW_OUT", "DISCONNECT"]),
                             ("interactingDurationMs", [0, 1_000, 65_000]), ("heldDurationMs", [0, 7_000]),
                             ("wrapupDurationMs", [0, 30_000, 5_000]), ("disconnectType", ["PEER", "TRANSFER"])):
            value = draw(st.sampled_from(values))
            if value is not None:
                fields[name] = value
        envelope = detail_event(conversation, subtopic, draw(st.sampled_from(_TIMES)), **fields)
        if fields.get("mediaType") is None:
            del envelope["detail"]["eventBody"]["mediaType"]
        events.append(envelope)
    return events


@settings(max_examples=150, deadline=None)
@given(free_events(), st.randoms(use_true_random=False), st.sampled_from([5, 30, 60]))
def test_free_conversations_equal_the_oracle_in_any_order(events, rng, minutes):
    options = {"interval_minutes": minutes, "by_queue": {"q2": 70}}
    expected = expected_rows(events, **options)
    assert processor_rows(events, **options) == expected
    shuffled = events + [redeliver(e) for e in rng.sample(events, k=min(3, len(events)))]
    rng.shuffle(shuffled)
    assert processor_rows(shuffled, **options) == expected


# --- ties: one fact per participant and kind, the highest (time, canonical value) ----------------------

def test_a_tie_in_one_millisecond_keeps_the_highest_canonical_value():
    """Two acd.end for one participant at one time: [t, q, media, "ANSWERED"] > [..., "ABANDON"]."""
    events = [detail_event("c", "acd.start", at(0), participantId="a", queueId="q1"),
              detail_event("c", "acd.end", at(1), participantId="a", queueId="q1", acdOutcome="ABANDON"),
              detail_event("c", "acd.end", at(1), participantId="a", queueId="q1", acdOutcome="ANSWERED")]
    for order in (events, events[::-1], [events[1], events[0], events[2]]):
        got, expected = both(order)
        assert got == expected
        row = queue_row(got, "q1", interval(0))
        assert (row["nOffered"], row["nAnswered"], row["tAnswered"], row["nAbandon"], row["nOverSla"]) \
            == (1, 1, MINUTE, 0, 1)


# --- late events correct past intervals -----------------------------------------------------------

def test_a_metric_counts_in_the_interval_of_the_event_that_completes_it():
    """acd.start in interval A, acd.end in B: offered in A, answered (and its wait) in B."""
    events = [detail_event("c", "customer.start", at(20), participantId="cust"),
              detail_event("c", "acd.start", at(25), participantId="a", queueId="q1"),
              detail_event("c", "acd.end", at(31), participantId="a", queueId="q1", acdOutcome="ANSWERED")]
    got, expected = both(events)
    assert got == expected
    a, b = queue_row(got, "q1", interval(25)), queue_row(got, "q1", interval(31))
    assert (a["nOffered"], a["nAnswered"]) == (1, 0)
    assert (b["nOffered"], b["nAnswered"], b["tAnswered"], b["nOverSla"]) == (0, 1, 6 * MINUTE, 1)


def test_late_acd_end_and_acw_correct_past_intervals():
    """The acd.end and the acw arrive after everything else; their times lie in earlier intervals
    than the events already seen: the answer lands in its own interval, and the acw moves the
    handle from I(user.end) to I(acw)."""
    start = detail_event("c", "acd.start", at(10), participantId="a", queueId="q1")
    answer = detail_event("c", "acd.end", at(10.25), participantId="a", queueId="q1", acdOutcome="ANSWERED")
    user_start = detail_event("c", "user.start", at(10.3), participantId="g", queueId="q1", userId="u1")
    user_end = detail_event("c", "user.end", at(29), participantId="g", queueId="q1", userId="u1",
                            interactingDurationMs=900_000, heldDurationMs=60_000, disconnectType="PEER")
    acw = detail_event("c", "acw", at(33), participantId="g", queueId="q1", userId="u1", wrapupCode="SALE",
                       wrapupDurationMs=240_000)
    end = detail_event("c", "customer.end", at(34), participantId="cust")

    before, expected_before = both([start, user_start, user_end, end])
    assert before == expected_before
    first = queue_row(before, "q1", interval(10))
    assert (first["nOffered"], first["nAnswered"], first["nHandled"], first["tHandle"]) == (1, 0, 1, 960_000)
    assert agent_row(before, "u1", interval(10))["tHandle"] == 960_000
    assert gauges(before) == {}

    got, expected = both([start, user_start, user_end, end, answer, acw])
    assert got == expected
    first, second = queue_row(got, "q1", interval(10)), queue_row(got, "q1", interval(33))
    assert (first["nOffered"], first["nAnswered"], first["tAnswered"], first["nOverSla"]) == (1, 1, 15_000, 0)
    assert (first["tTalk"], first["tHeld"], first["nHandled"], first["tHandle"]) == (900_000, 60_000, 0, 0)
    assert (second["nAcw"], second["tAcw"], second["nHandled"], second["tHandle"]) == (1, 240_000, 1, 1_200_000)
    assert (agent_row(got, "u1", interval(10))["nHandled"], agent_row(got, "u1", interval(33))["tHandle"]) \
        == (0, 1_200_000)


def test_an_acd_end_stamped_before_its_start_counts_in_its_own_earlier_interval():
    """Clock skew: the acd.end's time lies in the interval before the acd.start's. The answer counts
    in I(acd.end), and t = end - start as the contract writes it (here negative)."""
    events = [detail_event("c", "acd.end", at(29.5), participantId="a", queueId="q1", acdOutcome="ANSWERED"),
              detail_event("c", "acd.start", at(31), participantId="a", queueId="q1")]
    got, expected = both(events)
    assert got == expected
    earlier, later = queue_row(got, "q1", interval(29.5)), queue_row(got, "q1", interval(31))
    assert (earlier["nAnswered"], earlier["tAnswered"], earlier["nOverSla"], earlier["nOffered"]) == (1, -90_000, 0, 0)
    assert later["nOffered"] == 1


def test_a_refired_acd_end_with_a_later_time_moves_the_answer():
    """Last writer wins: the later acd.end is the fact, in its interval, with its wait."""
    start = detail_event("c", "acd.start", at(0), participantId="a", queueId="q1")
    early = detail_event("c", "acd.end", at(0.1), participantId="a", queueId="q1", acdOutcome="ANSWERED")
    late = detail_event("c", "acd.end", at(40), participantId="a", queueId="q1", acdOutcome="ANSWERED")
    for order in ([start, early, late], [start, late, early], [late, early, start, early]):
        got, expected = both(order)
        assert got == expected
        a, b = queue_row(got, "q1", interval(0)), queue_row(got, "q1", interval(40))
        assert (a["nOffered"], a["nAnswered"], a["tAnswered"]) == (1, 0, 0)
        assert (b["nAnswered"], b["tAnswered"], b["nOverSla"]) == (1, 40 * MINUTE, 1)


def test_an_acd_end_without_a_queue_counts_for_the_visit_it_ends():
    events = [detail_event("c", "acd.start", at(0), participantId="a", queueId="q1"),
              detail_event("c", "acd.end", at(0.2), participantId="a", acdOutcome="ANSWERED")]
    got, expected = both(events)
    assert got == expected
    assert queue_row(got, "q1", interval(0))["nAnswered"] == 1


# --- service level and abandons -------------------------------------------------------------------

def test_a_per_queue_target_changes_what_is_over_the_service_level():
    events = []
    for queue in ("q1", "q2"):
        events += [detail_event(f"c-{queue}", "acd.start", at(0), participantId="a", queueId=queue),
                   detail_event(f"c-{queue}", "acd.end", at(0.5), participantId="a", queueId=queue,
                                acdOutcome="ANSWERED")]
    got, expected = both(events)
    assert got == expected
    assert [queue_row(got, q, interval(0))["nOverSla"] for q in ("q1", "q2")] == [1, 1]
    got, expected = both(events, by_queue={"q1": 60})
    assert got == expected
    assert [queue_row(got, q, interval(0))["nOverSla"] for q in ("q1", "q2")] == [0, 1]
    got, expected = both(events, service_level_seconds=30)  # exactly at the target is not over it
    assert got == expected
    assert [queue_row(got, q, interval(0))["nOverSla"] for q in ("q1", "q2")] == [0, 0]


def test_an_abandon_with_an_unknown_start_counts_without_a_wait():
    events = [detail_event("c", "acd.end", at(3), participantId="a", queueId="q1", acdOutcome="ABANDON")]
    got, expected = both(events)
    assert got == expected
    row = queue_row(got, "q1", interval(3))
    assert (row["nOffered"], row["nAbandon"], row["tAbandon"]) == (0, 1, 0)
    # once the start arrives, the wait is known
    events.append(detail_event("c", "acd.start", at(1), participantId="a", queueId="q1"))
    got, expected = both(events)
    assert got == expected
    row = queue_row(got, "q1", interval(3))
    assert (row["nOffered"], row["nAbandon"], row["tAbandon"]) == (1, 1, 2 * MINUTE)


# --- gauges ---------------------------------------------------------------------------------------

def test_gauges_follow_the_conversation_now():
    steps = [detail_event("c", "customer.start", at(0), participantId="cust"),
             detail_event("c", "acd.start", at(0.1), participantId="a", queueId="q1"),
             detail_event("c", "acd.end", at(0.3), participantId="a", queueId="q1", acdOutcome="ANSWERED"),
             detail_event("c", "user.start", at(0.31), participantId="g", queueId="q1", userId="u1"),
             detail_event("c", "user.end", at(5), participantId="g", queueId="q1", userId="u1",
                          interactingDurationMs=280_000, heldDurationMs=0, disconnectType="PEER"),
             detail_event("c", "customer.end", at(5.1), participantId="cust")]
    want = [{}, {("q1", "VOICE"): (1, 0)}, {}, {("q1", "VOICE"): (0, 1)}, {}, {}]
    for n, wanted in enumerate(want, start=1):
        got, expected = both(steps[:n])
        assert got == expected
        assert gauges(got) == wanted, steps[n - 1]["detail"]["topicName"]


def test_a_customer_end_zeroes_the_gauges_of_open_segments():
    open_segments = [detail_event("c", "acd.start", at(0), participantId="a", queueId="q1", mediaType="CHAT"),
                     detail_event("c", "user.start", at(0.2), participantId="g", queueId="q2", userId="u1",
                                  mediaType="CHAT")]
    got, expected = both(open_segments)
    assert got == expected
    assert gauges(got) == {("q1", "CHAT"): (1, 0), ("q2", "CHAT"): (0, 1)}
    ended = open_segments + [detail_event("c", "customer.end", at(1), participantId="cust")]
    got, expected = both(ended)
    assert got == expected
    assert gauges(got) == {}
    assert queue_row(got, "q1", interval(0), media="CHAT")["nOffered"] == 1  # the interval metrics stay


def test_a_cell_takes_its_completing_events_media_type_only():
    """The body's own mediaType (ANALYTICS.md), never the conversation's: a session's cells depend on
    its own events, so a late conversation media type cannot move every cell at once."""
    events = [detail_event("c", "customer.start", at(0), participantId="cust", mediaType="EMAIL"),
              detail_event("c", "acd.start", at(0.1), participantId="a", queueId="q1")]
    del events[1]["detail"]["eventBody"]["mediaType"]
    got, expected = both(events)
    assert got == expected
    assert gauges(got) == {("q1", "UNKNOWN"): (1, 0)}


def test_the_oracle_reads_distinct_events_by_topic_and_body():
    event = detail_event("c", "acd.start", at(0), participantId="a", queueId="q1")
    reordered = copy.deepcopy(event)
    reordered["detail"]["eventBody"] = dict(reversed(list(event["detail"]["eventBody"].items())))
    assert len(distinct_events([event, redeliver(event), reordered])) == 1
    assert expected_rows([event]) == expected_rows([event, redeliver(event), reordered])
    assert T0 % (60 * MINUTE) == 0


def test_a_body_without_event_time_counts_in_one_interval_whatever_the_order():
    """Copies of a body with no eventTime take the envelope's time: they are distinct events and
    the latest wins, whatever the arrival order (a key over the body alone made the first win)."""
    def reemitted(timestamp: str) -> dict:
        event = detail_event("c", "acd.start", at(0), participantId="a", queueId="q1")
        del event["detail"]["eventBody"]["eventTime"]
        event["detail"]["timestamp"] = timestamp
        return event

    first, second = reemitted("2026-01-01T00:05:00.000Z"), reemitted("2026-01-01T00:45:00.000Z")
    assert processor_rows([first, second]) == processor_rows([second, first])
    assert [row["interval"] for row in processor_rows([first, second]) if row["kind"] == "queue"] == [
        "2026-01-01T00:30:00Z"]
