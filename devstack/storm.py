"""A realistic Genesys Cloud event storm, generated deterministically from a seed.

Each conversation runs customer.start → acd.start → (a flow-out to another queue) → acd.end →
(abandoned, or) user.start → attributes → user.end → acw → customer.end, in voice, chat or
message, each participant (customer, each ACD visit, the agent) with its own participantId and
the durations Genesys reports (talk, hold, wrap-up), with what makes real streams
hard: EventBridge redeliveries (same `id`), Genesys re-emits (new `id`, `time`, CorrelationId;
same body), attribute events that re-fire with nothing changed, events delivered out of order,
several events in one millisecond. Arrival order interleaves conversations as a contact center
would; memory stays bounded by the conversations in flight.
"""
from __future__ import annotations

import heapq
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterator

import orjson

ORG = "5a6e3f0c-1b2d-4e8f-9a7b-3c4d5e6f7a8b"
SOURCE = f"aws.partner/genesys.com/cloud/{ORG}/conversation-events"
MEDIA = (("VOICE", "INBOUND", "Edge"), ("CHAT", "INBOUND", "PureCloud Webchat v2"),
         ("MESSAGE", "INBOUND", "PureCloud Messaging"), ("VOICE", "OUTBOUND", "Edge"))
WRAPUP_CODES = ("ISSUE_RESOLVED", "CALLBACK_SCHEDULED", "ESCALATED", "SALE", "NO_ANSWER")


@dataclass(frozen=True)
class StormShape:
    conversations: int = 5_000
    seed: int = 7
    start_ms: int = 1_764_000_000_000  # 2025-11-24T16:00Z
    arrivals_per_second: float = 50.0  # new conversations per second of event time
    repeat_rate: float = 0.08  # EventBridge redelivery of an event (same id)
    reemit_rate: float = 0.05  # Genesys re-send (new id, same body)
    refire_rate: float = 0.5  # attribute events that re-fire unchanged
    transfer_rate: float = 0.25
    abandon_rate: float = 0.1
    tie_rate: float = 0.15  # two events in one millisecond
    jitter_ms: int = 3_000  # delivery delay: up to this much reordering
    queues: int = 40
    agents: int = 400


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def envelope(conversation_id: str, subtopic: str, body: dict[str, Any], delivered_ms: int,
             rng: random.Random) -> dict[str, Any]:
    """An EventBridge event as the Genesys partner source emits it."""
    return {
        "version": "0", "id": _uuid(rng),
        "detail-type": f"v2.detail.events.conversation.{{id}}.{subtopic}",
        "source": SOURCE, "account": "123456789012", "time": iso(delivered_ms // 1000 * 1000),
        "region": "us-east-1", "resources": [],
        "detail": {"topicName": f"v2.detail.events.conversation.{conversation_id}.{subtopic}", "version": "2",
                   "eventBody": body, "metadata": {"CorrelationId": _uuid(rng)}, "timestamp": iso(delivered_ms)},
    }


def conversation_events(rng: random.Random, shape: StormShape, start: int) -> list[tuple[str, dict[str, Any]]]:
    """The distinct (subtopic, eventBody) pairs of one conversation, in event-time order."""
    cid = _uuid(rng)
    media, direction, provider = rng.choice(MEDIA)
    base = {"conversationId": cid, "sessionId": _uuid(rng), "mediaType": media, "provider": provider,
            "direction": direction}
    customer, acd, agent_participant = _uuid(rng), _uuid(rng), _uuid(rng)  # one id per participant
    if media == "VOICE":
        base.update(ani=f"tel:+1555{rng.randrange(10**7):07d}", dnis="tel:+18005550100")
    queue = f"queue-{rng.randrange(shape.queues):03d}"
    agent = f"agent-{rng.randrange(shape.agents):04d}"
    t = start
    events: list[tuple[str, dict[str, Any]]] = []

    def emit(subtopic: str, participant: str, **fields: Any) -> None:
        events.append((subtopic, dict(base, participantId=participant, eventTime=t, **fields)))

    def advance(low: int, high: int) -> None:
        nonlocal t
        t += 0 if rng.random() < shape.tie_rate else rng.randint(low, high)

    emit("customer.start", customer)
    advance(50, 800)
    emit("acd.start", acd, queueId=queue, requestedRoutings=["STANDARD"])
    if rng.random() < shape.transfer_rate:  # a flow moves the call to another queue: a second ACD visit
        advance(2_000, 30_000)
        emit("acd.end", acd, queueId=queue, acdOutcome="FLOW_OUT", disconnectType="TRANSFER")
        queue, acd = f"queue-{rng.randrange(shape.queues):03d}", _uuid(rng)
        advance(0, 300)
        emit("acd.start", acd, queueId=queue, requestedRoutings=["STANDARD"])
    advance(1_000, 60_000)
    if rng.random() < shape.abandon_rate:
        emit("acd.end", acd, queueId=queue, acdOutcome="ABANDON", disconnectType="PEER")
        advance(0, 200)
        emit("customer.end", customer, disconnectType="PEER")
        return events
    emit("acd.end", acd, queueId=queue, acdOutcome="ANSWERED", answeredUserId=agent)
    advance(0, 50)
    emit("user.start", agent_participant, userId=agent, queueId=queue)
    connected = t
    attributes = {"intent": rng.choice(("billing", "support", "sales", "outage")),
                  "customerTier": rng.choice(("gold", "silver", "bronze"))}
    for _ in range(rng.randint(1, 3)):
        advance(500, 20_000)
        if rng.random() >= shape.refire_rate:
            attributes = dict(attributes, step=str(rng.randrange(1000)))
        emit("attributes", customer, attributes=dict(attributes))
    advance(10_000, 300_000)
    held = rng.choice((0, 0, 0, rng.randint(5_000, 60_000)))
    transferred = rng.random() < shape.transfer_rate / 2
    emit("user.end", agent_participant, userId=agent, queueId=queue, interactingDurationMs=max(0, t - connected - held),
         heldDurationMs=held, disconnectType="TRANSFER" if transferred else "PEER")
    ended = t
    advance(2_000, 60_000)
    emit("acw", agent_participant, userId=agent, queueId=queue, wrapupCode=rng.choice(WRAPUP_CODES),
         wrapupDurationMs=t - ended)
    advance(0, 200)
    emit("customer.end", customer, disconnectType="PEER")
    return events


def storm(shape: StormShape = StormShape()) -> Iterator[bytes]:
    """The storm as JSON lines (bytes), in arrival order."""
    rng = random.Random(shape.seed)
    pending: list[tuple[int, int, bytes]] = []
    order = 0
    gap_ms = 1000.0 / shape.arrivals_per_second
    for n in range(shape.conversations):
        start = shape.start_ms + int(n * gap_ms)
        while pending and pending[0][0] < start:
            yield heapq.heappop(pending)[2]
        for subtopic, body in conversation_events(rng, shape, start):
            deliveries = [body["eventTime"] + rng.randint(0, shape.jitter_ms)]
            event = envelope(body["conversationId"], subtopic, body, deliveries[0], rng)
            copies = [event]
            if rng.random() < shape.repeat_rate:
                copies.append(event)  # EventBridge retried the target: the very same event
                deliveries.append(deliveries[0] + rng.randint(1, shape.jitter_ms * 2))
            if rng.random() < shape.reemit_rate:  # Genesys re-sent it: new envelope, same body
                later = deliveries[0] + rng.randint(1_000, 60_000)
                copies.append(envelope(body["conversationId"], subtopic, body, later, rng))
                deliveries.append(later)
            for delivered, copy in zip(deliveries, copies):
                order += 1
                heapq.heappush(pending, (delivered, order, orjson.dumps(copy)))
    while pending:
        yield heapq.heappop(pending)[2]


def write_storm(path: str, shape: StormShape) -> int:
    count = 0
    with open(path, "wb") as out:
        for line in storm(shape):
            out.write(line + b"\n")
            count += 1
    return count
