"""An independent oracle for the analytics (ANALYTICS.md): the rows `--export-metrics` must produce.

Written from the contract alone, without `processor.analytics`, the registers or the merge: take the
set of distinct events, keep for every (conversation, participant, kind) the event that wins by
(event time, canonical value), and count every metric straight from the table in ANALYTICS.md. The
tests compare it with the processor's contributions, two different constructions of the same truth.

Only Genesys detail events (`v2.detail.events.conversation.{id}.<subtopic>`) are read; snapshot
topics carry no sessions.
"""
from __future__ import annotations

import json
from collections import defaultdict
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from processor.adapters import parse_time_ms  # reading a timestamp is not what this oracle checks

QUEUE_METRICS = ("nOffered", "nAnswered", "tAnswered", "nAbandon", "tAbandon", "nFlowOut", "nOverSla", "tTalk",
                 "tHeld", "nTransferred", "nAcw", "tAcw", "nHandled", "tHandle")
AGENT_METRICS = ("nHandled", "tHandle", "tTalk", "tHeld", "nAcw", "tAcw")
GAUGE_METRICS = ("oWaiting", "oInteracting")
METRICS = {"queue": QUEUE_METRICS, "agent": AGENT_METRICS, "gauge": GAUGE_METRICS}

DETAIL_PREFIX = "v2.detail.events.conversation."
#: the fields each session kind's value holds after its time (the tie-break list, missing = null)
SESSION_FIELDS: dict[str, tuple[str, ...]] = {
    "acd.start": ("queueId", "mediaType"),
    "acd.end": ("queueId", "mediaType", "acdOutcome"),
    "user.start": ("queueId", "mediaType", "userId"),
    "user.end": ("queueId", "mediaType", "userId", "interactingDurationMs", "heldDurationMs", "disconnectType"),
    "acw": ("queueId", "mediaType", "userId", "wrapupDurationMs"),
}
UNKNOWN_MEDIA = "UNKNOWN"


def canonical(value: Any) -> bytes:
    """Canonical JSON (sorted keys, no spaces) as UTF-8 bytes: the tie-break order of values."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _plain(value: Any) -> Any:
    """A body field as the metrics read it: ids (strings) and whole milliseconds; anything else null."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, (str, int)) else None


def _ms(value: Any) -> int:
    """A duration: whole milliseconds, 0 when absent or not a number."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def interval_text(interval_ms: int) -> str:
    return datetime.fromtimestamp(interval_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def distinct_events(envelopes: Iterable[Mapping[str, Any]]) -> list[tuple[str, dict[str, Any], int]]:
    """The distinct detail events as (subtopic, eventBody, event time ms): one per distinct
    (topicName, canonical eventBody), whatever the envelope (repeats and re-emits are one event)."""
    seen: dict[tuple[str, bytes], tuple[str, dict[str, Any], int]] = {}
    for envelope in envelopes:
        detail = envelope.get("detail") if isinstance(envelope, Mapping) else None
        if not isinstance(detail, Mapping):
            continue
        topic, body = detail.get("topicName"), detail.get("eventBody")
        if not isinstance(topic, str) or not topic.startswith(DETAIL_PREFIX) or not isinstance(body, dict):
            continue
        key = (topic, canonical(body))
        if key in seen:
            continue
        subtopic = topic[len(DETAIL_PREFIX):].split(".", 1)[1] if "." in topic[len(DETAIL_PREFIX):] else ""
        time_ms = parse_time_ms(body.get("eventTime"))
        if time_ms is None:
            time_ms = parse_time_ms(detail.get("timestamp"))
        if time_ms is None:
            time_ms = parse_time_ms(envelope.get("time"))
        if time_ms is None or not _text(body.get("conversationId")):
            continue
        seen[key] = (subtopic, body, time_ms)
    return list(seen.values())


class _Conversation:
    def __init__(self) -> None:
        self.ended = False
        #: participant id -> kind -> ((time, canonical list), {"time": t, field: value, ...})
        self.sessions: dict[str, dict[str, tuple[tuple[int, bytes], dict[str, Any]]]] = defaultdict(dict)

    def offer(self, subtopic: str, body: Mapping[str, Any], time_ms: int) -> None:
        if subtopic == "customer.end":
            self.ended = True
        fields = SESSION_FIELDS.get(subtopic)
        participant = _text(body.get("participantId"))
        if fields is None or participant is None:
            return
        values = [_plain(body.get(name)) for name in fields]
        order = (time_ms, canonical([time_ms, *values]))
        current = self.sessions[participant].get(subtopic)
        if current is None or order > current[0]:
            self.sessions[participant][subtopic] = (order, {"time": time_ms, **dict(zip(fields, values))})

    def media_of(self, event: Mapping[str, Any]) -> str:
        """A cell's media type: the completing event's body `mediaType` (ANALYTICS.md), else UNKNOWN."""
        own = _text(event.get("mediaType"))
        return own if own is not None else UNKNOWN_MEDIA


def expected_rows(envelopes: Iterable[Mapping[str, Any]], interval_minutes: int = 30,
                  service_level_seconds: float = 20, by_queue: Mapping[str, float] | None = None) -> list[dict]:
    """The rows `--export-metrics` must produce after these envelopes (any order, any repeats)."""
    by_queue = dict(by_queue or {})
    width = interval_minutes * 60_000

    def I(time_ms: int) -> int:  # noqa: E743 - the contract's name
        return time_ms - time_ms % width

    conversations: dict[str, _Conversation] = defaultdict(_Conversation)
    for subtopic, body, time_ms in distinct_events(envelopes):
        conversations[body["conversationId"]].offer(subtopic, body, time_ms)

    cells: dict[tuple, dict[str, int]] = {}

    def add(kind: str, owner: Any, media: str | None, interval: int | None, **amounts: int) -> None:
        owner = _text(owner)
        if owner is None:
            return
        cell = cells.setdefault((kind, owner, media, interval), dict.fromkeys(METRICS[kind], 0))
        for name, amount in amounts.items():
            cell[name] += amount

    for conversation in conversations.values():
        for segment in conversation.sessions.values():
            facts = {kind: won[1] for kind, won in segment.items()}
            start, end = facts.get("acd.start"), facts.get("acd.end")
            user_start, user_end, acw = facts.get("user.start"), facts.get("user.end"), facts.get("acw")
            if start is not None:
                add("queue", start["queueId"], conversation.media_of(start), I(start["time"]), nOffered=1)
                if end is None and not conversation.ended:
                    add("gauge", start["queueId"], conversation.media_of(start), None, oWaiting=1)
            if end is not None:
                queue = end["queueId"] if end["queueId"] is not None else (start or {}).get("queueId")
                waited = end["time"] - start["time"] if start is not None else None
                where = ("queue", queue, conversation.media_of(end), I(end["time"]))
                if end["acdOutcome"] == "ANSWERED":
                    target_ms = 1000 * by_queue.get(queue, service_level_seconds)
                    add(*where, nAnswered=1, tAnswered=waited if waited is not None else 0,
                        nOverSla=int(waited is not None and waited > target_ms))
                elif end["acdOutcome"] == "ABANDON":
                    add(*where, nAbandon=1, tAbandon=waited if waited is not None else 0)
                elif end["acdOutcome"] == "FLOW_OUT":
                    add(*where, nFlowOut=1)
            if user_start is not None and user_end is None and not conversation.ended:
                add("gauge", user_start["queueId"], conversation.media_of(user_start), None, oInteracting=1)
            if acw is not None:
                wrapup = _ms(acw["wrapupDurationMs"])
                add("queue", acw["queueId"], conversation.media_of(acw), I(acw["time"]), nAcw=1, tAcw=wrapup)
                add("agent", acw["userId"], None, I(acw["time"]), nAcw=1, tAcw=wrapup)
            if user_end is not None:
                talk, held = _ms(user_end["interactingDurationMs"]), _ms(user_end["heldDurationMs"])
                at = I(user_end["time"])
                media = conversation.media_of(user_end)
                add("queue", user_end["queueId"], media, at, tTalk=talk, tHeld=held,
                    nTransferred=int(user_end["disconnectType"] == "TRANSFER"))
                add("agent", user_end["userId"], None, at, tTalk=talk, tHeld=held)
                # handled when after-call work is submitted: I(acw) once an acw is known
                handled_at = I(acw["time"]) if acw is not None else at
                handle = talk + held + (_ms(acw["wrapupDurationMs"]) if acw is not None else 0)
                add("queue", user_end["queueId"], media, handled_at, nHandled=1, tHandle=handle)
                add("agent", user_end["userId"], None, handled_at, nHandled=1, tHandle=handle)

    rows = []
    for (kind, owner, media, interval), metrics in cells.items():
        if not any(metrics.values()):
            continue
        row: dict[str, Any] = {"kind": kind}
        if kind == "agent":
            row["userId"] = owner
        else:
            row["queueId"], row["mediaType"] = owner, media
        if interval is not None:
            row["interval"] = interval_text(interval)
        row.update(metrics)
        rows.append(row)
    return sorted(rows, key=lambda r: tuple(str(r.get(name, "")) for name in
                                            ("kind", "interval", "queueId", "mediaType", "userId")))
