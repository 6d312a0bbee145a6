"""Genesys Cloud: conversation detail events and conversation snapshot topics.

Detail events (`v2.detail.events.conversation.{id}.<subtopic>`) each say one thing that happened;
snapshot topics (`v2.users.{id}.conversations`, `v2.routing.queues.{id}.conversations`) carry the
whole conversation as seen by one user or queue. Both become last-writer-wins registers by event
time; `startTime` keeps the earliest time (negated stamp), so it is a min, not a last write.

Nothing here copies ANI, DNIS, names, addresses or attribute values anywhere but the projection.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Iterator, Mapping

from processor.analytics.sessions import session_register
from processor.adapters import event_key, parse_time_ms, require_conversation_id, require_time
from processor.model import ConversationEvent, Register, Rejected

_DETAIL = re.compile(r"^v2\.detail\.events\.conversation\.([^.]+)\.(.+)$")
_SNAPSHOT = re.compile(r"^v2\.(?:users|routing\.queues)\.([^.]+)\.conversations$")

#: which projection attribute each detail subtopic sets, and from which body field
_SUBTOPIC_FIELDS: dict[str, tuple[tuple[str, str], ...]] = {
    "acd.start": (("queueId", "queueId"),),
    "acd.end": (("acdOutcome", "acdOutcome"),),
    "user.start": (("agentUserId", "userId"),),
    "acw": (("wrapupCode", "wrapupCode"),),
    "attributes": (("attributes", "attributes"),),
}

#: what every detail event sets (when present), then its subtopic's own fields
_COMMON_FIELDS = (("mediaType", "mediaType"), ("direction", "direction"))
_DETAIL_FIELDS = {subtopic: _COMMON_FIELDS + own for subtopic, own in _SUBTOPIC_FIELDS.items()}

#: snapshot media lists and the media type they mean
_MEDIA = {
    "calls": "VOICE",
    "callbacks": "CALLBACK",
    "chats": "CHAT",
    "emails": "EMAIL",
    "messages": "MESSAGE",
    "videos": "VIDEO",
    "cobrowsesessions": "COBROWSE",
    "screenshares": "SCREENSHARE",
    "socialExpressions": "SOCIAL",
}
_DONE_STATES = {"disconnected", "terminated"}
#: moments a snapshot reports as having happened (not `callbackScheduledTime`: a callback booked for
#: tomorrow would date the snapshot tomorrow and let it beat every later event)
_SNAPSHOT_TIMES = ("connectedTime", "endTime", "disconnectedTime", "startAcwTime", "startHoldTime",
                   "startAlertingTime")


@lru_cache(maxsize=4096)
def _template_kind(detail_type: str) -> tuple[str, str] | None:
    """`_topic_kind` for detail-types: a small set of templates (`...conversation.{id}.acw`), cached."""
    return _topic_kind(detail_type)


def _topic_kind(topic: Any) -> tuple[str, str] | None:
    """("detail", subtopic) or ("snapshot", "snapshot") for a conversation topic, else None."""
    if not isinstance(topic, str):
        return None
    match = _DETAIL.match(topic)
    if match:
        return "detail", match.group(2)
    if _SNAPSHOT.match(topic):
        return "snapshot", "snapshot"
    return None


class GenesysAdapter:
    #: detail events carry ACD and agent sessions: the metrics are computed from them
    keeps_sessions = True
    #: ids, codes, flags and times: no caller data (unlike `attributes` and `participants`)
    public_fields: frozenset[str] = frozenset({
        "mediaType", "direction", "queueId", "agentUserId", "acdOutcome", "wrapupCode", "ended", "startTime",
        "endTime", "durationMs"})

    def normalize(self, envelope: dict[str, Any]) -> ConversationEvent:
        detail = envelope.get("detail")
        if not isinstance(detail, dict):
            raise Rejected("no detail object")
        kind = self._classify(detail.get("topicName"), envelope.get("detail-type"))
        body = detail.get("eventBody")
        if not isinstance(body, dict):
            raise Rejected("no eventBody object")
        topic = detail.get("topicName")
        if kind[0] == "detail":
            return self._detail_event(kind[1], topic, body, detail, envelope)
        return self._snapshot_event(topic, body, detail, envelope)

    @staticmethod
    def _classify(topic: Any, detail_type: Any) -> tuple[str, str]:
        """Recognise the topic by `topicName`, cross-checked with `detail-type` when present.

        The detail-type is the topic with ids replaced by `{id}`: a record whose detail-type names
        another kind of topic is not a conversation event, whatever its topicName claims.
        """
        by_topic = _topic_kind(topic)
        by_type = _template_kind(detail_type) if isinstance(detail_type, str) else None
        if detail_type is not None and by_type is None:
            raise Rejected("detail-type is not a Genesys conversation topic")
        if by_topic is not None and by_type is not None and by_topic != by_type:
            raise Rejected("topicName and detail-type name different topics")
        kind = by_topic or by_type
        if kind is None:
            raise Rejected("topicName is not a Genesys conversation topic")
        return kind

    def _detail_event(self, subtopic: str, topic: Any, body: dict, detail: dict, envelope: dict) -> ConversationEvent:
        conversation_id = require_conversation_id(body.get("conversationId"), "detail.eventBody.conversationId")
        time_ms = _event_time(body.get("eventTime"), detail, envelope)
        sets: dict[str, Register] = {"startTime": (-time_ms, time_ms)}
        for name, source in _DETAIL_FIELDS.get(subtopic, _COMMON_FIELDS):
            if (value := body.get(source)) is not None:
                sets[name] = (time_ms, value)
        if subtopic == "customer.end":
            sets["ended"] = (time_ms, True)
            sets["endTime"] = (time_ms, time_ms)
        session = session_register(subtopic, body, time_ms)
        if session is not None:
            sets[session[0]] = session[1]
        # A body without its own time takes the envelope's: copies sent at other times are then other
        # events (the latest wins), never repeats of whichever copy came first (I3).
        key = event_key(topic, body) if "eventTime" in body else event_key(topic, body, time_ms)
        return ConversationEvent(conversation_id, key, subtopic, time_ms, sets)

    def _snapshot_event(self, topic: Any, body: dict, detail: dict, envelope: dict) -> ConversationEvent:
        conversation_id = require_conversation_id(body.get("id"), "detail.eventBody.id")
        participants = [p for p in body.get("participants") or () if isinstance(p, dict)]
        times = [t for t in (parse_time_ms(v) for v in _snapshot_times(participants)) if t is not None]
        # A snapshot is as new as the latest moment it mentions: re-emits keep their order.
        time_ms = max(times) if times else _event_time(None, detail, envelope)
        states: dict[str, Any] = {}
        media_types: set[str] = set()
        sets: dict[str, Register] = {}
        for participant in participants:
            media = {_MEDIA[k]: [m.get("state") for m in v if isinstance(m, dict)]
                     for k, v in participant.items() if k in _MEDIA and isinstance(v, list)}
            media_types.update(media)
            pid = participant.get("id")
            if isinstance(pid, str):
                states[pid] = {"purpose": participant.get("purpose"),
                               "states": {m: s[-1] for m, s in media.items() if s}}
            if participant.get("purpose") == "acd" and participant.get("queueId"):
                sets["queueId"] = (time_ms, participant["queueId"])
            if participant.get("purpose") == "agent" and participant.get("userId") and _active(media):
                sets["agentUserId"] = (time_ms, participant["userId"])
        sets["participants"] = (time_ms, states)
        if len(media_types) == 1:
            sets["mediaType"] = (time_ms, media_types.pop())
        if times:
            start = min(times)
            sets["startTime"] = (-start, start)
        all_states = [s for p in states.values() for s in p["states"].values()]
        ended = bool(all_states) and all(s in _DONE_STATES for s in all_states)
        sets["ended"] = (time_ms, ended)
        if ended:
            sets["endTime"] = (time_ms, time_ms)
        return ConversationEvent(conversation_id, event_key(topic, body), "snapshot", time_ms, sets)

    def partition_key(self, envelope: dict[str, Any]) -> str:
        body = (envelope.get("detail") or {}).get("eventBody") if isinstance(envelope.get("detail"), dict) else None
        if not isinstance(body, dict):
            return ""
        key = body.get("conversationId") or body.get("id")
        return key if isinstance(key, str) else ""

    def derive(self, values: Mapping[str, Any]) -> Mapping[str, Any]:
        start, end = values.get("startTime"), values.get("endTime")
        if values.get("ended") and isinstance(start, int) and isinstance(end, int):
            return {"durationMs": max(0, end - start)}
        return {}


def _event_time(value: Any, detail: dict, envelope: dict) -> int:
    """The body's own event time; when it has none, the detail timestamp, else the EventBridge time."""
    if value is not None:
        return require_time(value, "detail.eventBody.eventTime")
    millis = parse_time_ms(detail.get("timestamp"))
    return millis if millis is not None else require_time(envelope.get("time"), "time")


def _snapshot_times(participants: list[dict]) -> Iterator[Any]:
    for participant in participants:
        for name in _SNAPSHOT_TIMES:
            yield participant.get(name)
        for key in _MEDIA:
            for media in participant.get(key) or ():
                if isinstance(media, dict):
                    for name in _SNAPSHOT_TIMES:
                        yield media.get(name)


def _active(media: Mapping[str, list]) -> bool:
    return any(state not in _DONE_STATES for states in media.values() for state in states)
