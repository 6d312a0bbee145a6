"""Normalize: Genesys detail and snapshot topics from real samples, and the generic adapter."""
import copy

import pytest

from processor.adapters import build_adapter, parse_time_ms
from processor.adapters.genesys import GenesysAdapter
from processor.model import Rejected
from processor.reduce import ConversationState, apply
from tests.conftest import detail_event, redeliver, sample, wrap_websocket_frame

genesys = GenesysAdapter()


def values(event):
    return {name: reg[1] for name, reg in event.sets.items()}


def test_customer_start_sample():
    event = genesys.normalize(sample("customer.start__event-streaming-blueprint"))
    assert event.conversation_id == "2f7bf00a-0fc2-4d6a-9b56-92238191433e"
    assert event.kind == "customer.start"
    assert event.time_ms == 1649237444949
    assert values(event) == {"mediaType": "CHAT", "direction": "INBOUND", "startTime": 1649237444949}


def test_customer_end_sample_ends_the_conversation():
    event = genesys.normalize(sample("customer.end__event-streaming-blueprint.json"))
    assert values(event)["ended"] is True
    assert values(event)["endTime"] == 1649237504949


def test_acd_end_sample_sets_outcome_and_never_copies_ani():
    event = genesys.normalize(sample("acd.end__kanutomay"))
    assert values(event)["acdOutcome"] == "ANSWERED"
    assert "tel:" not in repr(values(event))


def test_attributes_sample_with_a_hand_edited_topic_is_recognised_by_its_detail_type():
    event = genesys.normalize(sample("attributes__kanutomay"))
    assert event.kind == "attributes"
    assert values(event)["attributes"]["outage_flag"] == "true"


def test_other_detail_subtopics_are_accepted_and_kept():
    event = genesys.normalize(detail_event("c1", "voicemail.start", 1000))
    assert event.kind == "voicemail.start"
    assert set(values(event)) == {"mediaType", "direction", "startTime"}


@pytest.mark.parametrize("name, reason", [
    ("NEGATIVE_non-conversation-detail-type", "detail-type is not a Genesys conversation topic"),
    ("UserPresenceChange", "detail-type is not a Genesys conversation topic"),
    ("OAuthClientDelete", "detail-type is not a Genesys conversation topic"),
])
def test_non_conversation_samples_are_rejected(name, reason):
    with pytest.raises(Rejected, match=reason):
        genesys.normalize(sample(name))


def test_a_re_emit_has_the_same_key_and_a_changed_body_does_not():
    original = sample("customer.start__event-streaming-blueprint")
    assert genesys.normalize(redeliver(original)).key == genesys.normalize(original).key
    changed = redeliver(original)
    changed["detail"]["eventBody"]["eventTime"] += 1
    assert genesys.normalize(changed).key != genesys.normalize(original).key


def test_missing_conversation_id_and_bad_time_are_rejected():
    event = detail_event("c1", "acd.start", 1000, queueId="q")
    del event["detail"]["eventBody"]["conversationId"]
    with pytest.raises(Rejected, match="missing conversation id"):
        genesys.normalize(event)
    with pytest.raises(Rejected, match="unparseable event time"):
        genesys.normalize(detail_event("c1", "acd.start", "yesterday"))


def test_snapshot_topics_give_participant_states_and_order_by_their_latest_moment():
    connected = genesys.normalize(wrap_websocket_frame(sample("callBackConnectMsg.json")))
    disconnected = genesys.normalize(wrap_websocket_frame(sample("callBackDisconnectMsg")))
    assert connected.conversation_id == "ffff-ffff-ffff-ffff"
    assert connected.kind == "snapshot"
    assert values(connected)["mediaType"] == "CALLBACK"
    assert values(connected)["queueId"] == "0e185c02-aca1-4a72-82ea-2e78684e2c89"
    assert values(connected)["agentUserId"] == "AGENT_USER_ID"
    assert values(connected)["ended"] is False
    assert values(disconnected)["ended"] is False  # the customer is still connected
    assert "agentUserId" not in values(disconnected)  # no agent is active any more
    assert disconnected.time_ms == connected.time_ms  # a same-millisecond tie in the real data
    one, other = ConversationState(), ConversationState()
    apply(one, connected), apply(one, disconnected)
    apply(other, disconnected), apply(other, connected)
    assert one.projection() == other.projection()  # ...resolved the same way in either order
    states = values(disconnected)["participants"]
    assert states["5151853c-ca28-48da-bdcd-f15c46f0712e"] == {"purpose": "agent",
                                                              "states": {"CALLBACK": "disconnected"}}
    assert "Slav" not in repr(values(connected))  # participant names stay out of the projection


def test_a_snapshot_with_every_participant_disconnected_ends_the_conversation():
    frame = sample("callBackDisconnectMsg")
    for participant in frame["eventBody"]["participants"]:
        for callback in participant["callbacks"]:
            callback["state"] = "disconnected"
    event = genesys.normalize(wrap_websocket_frame(frame))
    assert values(event)["ended"] is True
    assert values(event)["endTime"] == event.time_ms


def test_the_same_snapshot_via_two_topics_has_two_keys_but_sets_the_same_values():
    frame = sample("callBackConnectMsg.json")
    by_user = genesys.normalize(wrap_websocket_frame(frame))
    frame["topicName"] = "v2.routing.queues.0e185c02-aca1-4a72-82ea-2e78684e2c89.conversations"
    by_queue = genesys.normalize(wrap_websocket_frame(frame))
    assert by_user.key != by_queue.key
    assert values(by_user) == values(by_queue)


GENERIC = {"kind": "generic", "conversation_id": "$.detail.conversation_id", "event_time": "$.detail.timestamp",
           "event_id": "$.detail.event_id", "state": {"status": "$.detail.status", "agent": "$.detail.agent.id"}}


def cxone(**detail):
    return {"id": "eb-1", "time": "2025-01-01T00:00:00Z", "detail": detail}


def test_generic_adapter_projects_exactly_the_configured_fields():
    adapter = build_adapter(GENERIC)
    event = adapter.normalize(cxone(conversation_id="k1", timestamp="2025-01-01T00:00:01.500Z", event_id="e1",
                                    status="Active", agent={"id": "a7"}, ani="secret"))
    assert event.conversation_id == "k1"
    assert event.time_ms == 1735689601500
    assert values(event) == {"status": "Active", "agent": "a7"}


def test_generic_adapter_keys_by_event_id_when_configured_else_by_body():
    by_id = build_adapter(GENERIC)
    a = by_id.normalize(cxone(conversation_id="k1", timestamp=1, event_id="same", status="A"))
    b = by_id.normalize(cxone(conversation_id="k1", timestamp=2, event_id="same", status="B"))
    assert a.key == b.key
    by_body = build_adapter({k: v for k, v in GENERIC.items() if k != "event_id"})
    c = by_body.normalize({"id": "eb-1", "time": "t1", "detail": {"conversation_id": "k1", "timestamp": 1}})
    d = by_body.normalize({"id": "eb-2", "time": "t2", "detail": {"conversation_id": "k1", "timestamp": 1}})
    assert c.key == d.key


@pytest.mark.parametrize("settings, message", [
    ({"kind": "generic", "event_time": "$.t", "state": {"s": "$.s"}}, "needs conversation_id"),
    ({**GENERIC, "state": {}}, "at least one"),
    ({**GENERIC, "state": {"version": "$.v"}}, "reserved"),
    ({**GENERIC, "state": {"_x": "$.v"}}, "reserved"),
    ({**GENERIC, "state": {"~x": "$.v"}}, "reserved"),  # a session's prefix: it would never be projected
    ({**GENERIC, "conversation_id": "detail.id"}, "must start with"),
    ({"kind": "cxone"}, "unknown adapter kind"),
])
def test_bad_generic_settings_fail_at_load(settings, message):
    with pytest.raises(ValueError, match=message):
        build_adapter(settings)


@pytest.mark.parametrize("value, millis", [
    (1649237444949, 1649237444949),
    ("2022-04-06T09:30:45.013Z", 1649237445013),
    ("2022-04-06T09:30:45+02:00", 1649230245000),
    ("2022-04-06T09:30:45", 1649237445000),
    ("soon", None), (None, None), (True, None), ("", None),
])
def test_event_times(value, millis):
    assert parse_time_ms(value) == millis


def test_a_callback_booked_for_later_does_not_date_the_snapshot():
    """`callbackScheduledTime` is when the customer wants the call, not a moment that happened: a
    snapshot dated by it would beat every later event (or be refused as from the future)."""
    frame = sample("callBackConnectMsg.json")
    booked = copy.deepcopy(frame)
    for participant in booked["eventBody"]["participants"]:
        for callback in participant.get("callbacks", []):
            callback["callbackScheduledTime"] = "2022-07-06T09:00:00Z"  # two days ahead
    assert genesys.normalize(wrap_websocket_frame(booked)).time_ms == genesys.normalize(wrap_websocket_frame(frame)).time_ms


@pytest.mark.parametrize("name", ["", "x" * 256])
def test_generic_settings_refuse_attribute_names_dynamodb_refuses(name):
    with pytest.raises(ValueError, match="1 to 255 bytes"):
        build_adapter(dict(GENERIC, state={name: "$.detail.status"}))
