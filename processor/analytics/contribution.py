"""What one conversation adds to every metrics cell: a pure function of its state (I12).

A metric counts in the interval of the event that completes it (offered at queue entry, answered
at answer, handle when after-call work is submitted), so a late event moves a figure into the
right past interval simply by changing the conversation's state. The aggregates are kept as sums
of `delta(contribution(new), contribution(stored))`, written in the same transaction as the
conversation's version change: the sum over partials always equals the sum of contributions.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from typing import Mapping, NamedTuple

from processor.analytics.sessions import ACD_END, ACD_START, ACW, USER_END, USER_START, participants
from processor.model import Register

QUEUE, AGENT, GAUGE = "queue", "agent", "gauge"
#: the metrics of each kind of cell, in the order a contribution's vectors hold them
METRICS: dict[str, tuple[str, ...]] = {
    QUEUE: ("nOffered", "nAnswered", "tAnswered", "nAbandon", "tAbandon", "nFlowOut", "nOverSla", "tTalk",
            "tHeld", "nTransferred", "nAcw", "tAcw", "nHandled", "tHandle"),
    AGENT: ("nHandled", "tHandle", "tTalk", "tHeld", "nAcw", "tAcw"),
    GAUGE: ("oWaiting", "oInteracting"),
}
_INDEX = {kind: {name: i for i, name in enumerate(names)} for kind, names in METRICS.items()}
INTERVAL_CHOICES = (5, 10, 15, 30, 60)
UNKNOWN_MEDIA = "UNKNOWN"


class Cell(NamedTuple):
    """One aggregate: a queue and media type in an interval, an agent in an interval, or a queue's
    live gauge (`interval` None). `owner` is the queue id (queue, gauge) or the user id (agent)."""

    kind: str
    owner: str
    media_type: str | None
    interval: int | None  # epoch ms of the interval's start


Contribution = dict[Cell, tuple[int, ...]]


@dataclass(frozen=True)
class AnalyticsSettings:
    interval_minutes: int = 30
    service_level_seconds: float = 20.0
    service_level_seconds_by_queue: Mapping[str, float] = field(default_factory=dict)

    def interval_of(self, time_ms: int) -> int:
        """`I(t)`: the start of the interval holding `t`, aligned to the epoch."""
        width = self.interval_minutes * 60_000
        return time_ms - time_ms % width

    def service_level_ms(self, queue_id: str) -> float:
        return 1000 * self.service_level_seconds_by_queue.get(queue_id, self.service_level_seconds)


@lru_cache(maxsize=4096)
def interval_text(interval_ms: int) -> str:
    """An interval's start as the metrics name it, `2026-11-20T08:30:00Z`. Cached: a flush names
    a few intervals thousands of times (every cell key, partial and directory), and formatting a
    time costs microseconds."""
    return datetime.fromtimestamp(interval_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def contribution(registers: Mapping[str, Register], settings: AnalyticsSettings) -> Contribution:
    """Every cell this conversation's state adds to, with the amounts (zero cells left out)."""
    cells: dict[Cell, list[int]] = {}
    ended_register = registers.get("ended")
    ended = ended_register is not None and ended_register[1] is True

    def add(kind: str, owner: object, media: object, interval: int | None, **amounts: int) -> None:
        if not isinstance(owner, str) or not owner:
            return
        # the completing event's own media type (ANALYTICS.md): a session's cells depend on its own
        # registers (and `ended`, for gauges), so any change can be written participant by participant
        cell = Cell(kind, owner, (media if isinstance(media, str) and media else UNKNOWN_MEDIA)
                    if kind != AGENT else None, interval)
        vector = cells.setdefault(cell, [0] * len(METRICS[kind]))
        for name, amount in amounts.items():
            vector[_INDEX[kind][name]] += amount

    interval = settings.interval_of
    for segment in participants(registers).values():
        start, end = segment.get(ACD_START), segment.get(ACD_END)
        if start is not None:
            add(QUEUE, start[1], start[2], interval(start[0]), nOffered=1)
            if end is None and not ended:
                add(GAUGE, start[1], start[2], None, oWaiting=1)
        if end is not None:
            _acd_end(add, end, start, interval(end[0]), settings)
        user_start, user_end, acw = segment.get(USER_START), segment.get(USER_END), segment.get(ACW)
        if user_start is not None and user_end is None and not ended:
            add(GAUGE, user_start[1], user_start[2], None, oInteracting=1)
        if acw is not None:
            wrapup = _number(acw[4])
            add(QUEUE, acw[1], acw[2], interval(acw[0]), nAcw=1, tAcw=wrapup)
            add(AGENT, acw[3], None, interval(acw[0]), nAcw=1, tAcw=wrapup)
        if user_end is not None:
            _user_end(add, user_end, acw, interval)
    return {cell: tuple(vector) for cell, vector in cells.items() if any(vector)}


def _acd_end(add, end: list, start: list | None, at: int, settings: AnalyticsSettings) -> None:
    queue, media, outcome = end[1], end[2], end[3]
    if queue is None and start is not None:  # an end that names no queue ends the visit it pairs with
        queue = start[1]
    waited = end[0] - start[0] if start is not None else None
    if outcome == "ANSWERED":
        over = waited is not None and isinstance(queue, str) and waited > settings.service_level_ms(queue)
        add(QUEUE, queue, media, at, nAnswered=1, tAnswered=waited or 0, nOverSla=int(over))
    elif outcome == "ABANDON":
        add(QUEUE, queue, media, at, nAbandon=1, tAbandon=waited or 0)
    elif outcome == "FLOW_OUT":
        add(QUEUE, queue, media, at, nFlowOut=1)


def _user_end(add, user_end: list, acw: list | None, interval) -> None:
    queue, media, user = user_end[1], user_end[2], user_end[3]
    talk, held = _number(user_end[4]), _number(user_end[5])
    transferred = int(user_end[6] == "TRANSFER")
    at = interval(user_end[0])
    add(QUEUE, queue, media, at, tTalk=talk, tHeld=held, nTransferred=transferred)
    add(AGENT, user, None, at, tTalk=talk, tHeld=held)
    handled_at = interval(acw[0]) if acw is not None else at
    handle = talk + held + (_number(acw[4]) if acw is not None else 0)
    add(QUEUE, queue, media, handled_at, nHandled=1, tHandle=handle)
    add(AGENT, user, None, handled_at, nHandled=1, tHandle=handle)


def _number(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def delta(new: Contribution, old: Contribution) -> Contribution:
    """What moving a conversation from `old` to `new` adds to each cell (zero cells left out)."""
    changes: Contribution = {}
    for cell in new.keys() | old.keys():
        after, before = new.get(cell), old.get(cell)
        if after is None:
            changes[cell] = tuple(-x for x in before)
        elif before is None:
            changes[cell] = after
        elif after != before:
            changes[cell] = tuple(a - b for a, b in zip(after, before))
    return changes


def metrics_of(cell: Cell, vector: tuple[int, ...]) -> dict[str, int]:
    return dict(zip(METRICS[cell.kind], vector))
