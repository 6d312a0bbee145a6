"""Sessions as registers: what a detail event says about one participant's ACD or agent segment.

A session register is named `~<participant>.<kind>` (the participant id digested to 8 characters)
and holds a list whose first element is the event time, which is also its stamp. A repeated event
of the same kind for the same participant is one fact: last writer wins by (event time, value),
like every other register, so a conversation's sessions are a function of the set of its events.
Because the time is part of the value, a session register never advances its stamp without
changing its value: a new session fact is always a change to write (never a held restamp).

The registers are bookkeeping (stored under `_s`, never in the projection): `contribution` reads
them to attribute the conversation to the metrics cells.
"""
from __future__ import annotations

import base64
import hashlib
from functools import lru_cache
from typing import Any, Iterable, Mapping

from processor.model import Register

PREFIX = "~"
ACD_START, ACD_END, USER_START, USER_END, ACW = "as", "ae", "us", "ue", "aw"
#: the list each kind stores after its time: which body fields, in which order
FIELDS: dict[str, tuple[str, ...]] = {
    ACD_START: ("queueId", "mediaType"),
    ACD_END: ("queueId", "mediaType", "acdOutcome"),
    USER_START: ("queueId", "mediaType", "userId"),
    USER_END: ("queueId", "mediaType", "userId", "interactingDurationMs", "heldDurationMs", "disconnectType"),
    ACW: ("queueId", "mediaType", "userId", "wrapupDurationMs"),
}
#: the detail subtopic that makes each kind
SUBTOPICS = {"acd.start": ACD_START, "acd.end": ACD_END, "user.start": USER_START, "user.end": USER_END,
             "acw": ACW}


def is_session(name: str) -> bool:
    return name.startswith(PREFIX)


def session_in(names: Iterable[str]) -> str | None:
    """The first session register's name among `names` (an event sets one at most), else None."""
    for name in names:
        if name.startswith(PREFIX):
            return name
    return None


@lru_cache(maxsize=8192)  # a participant's five kinds of event arrive close together
def participant_key(participant_id: str) -> str:
    """8 characters for a participant id (48 bits: a conversation has a handful of participants)."""
    digest = hashlib.blake2b(participant_id.encode("utf-8"), digest_size=6).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")


def session_register(subtopic: str, body: Mapping[str, Any], time_ms: int) -> tuple[str, Register] | None:
    """The session register a detail event sets, or None (no session kind, or no participant)."""
    kind = SUBTOPICS.get(subtopic)
    participant = body.get("participantId")
    if kind is None or not isinstance(participant, str) or not participant:
        return None
    value = [time_ms]
    for name in FIELDS[kind]:
        field = body.get(name)
        value.append(field if field.__class__ is str else _plain(field))
    return f"{PREFIX}{participant_key(participant)}.{kind}", (time_ms, value)


def _plain(value: Any) -> Any:
    """Strings and whole numbers as they are; anything else as None (metrics read only these)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (str, int)):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def participant_of(name: str) -> str:
    """The participant key of a session register's name."""
    return name[len(PREFIX):].rpartition(".")[0]


def participants(registers: Mapping[str, Register]) -> dict[str, dict[str, list]]:
    """The session registers grouped by participant: {participant: {kind: value}}."""
    grouped: dict[str, dict[str, list]] = {}
    for name, (_, value) in registers.items():
        if name.startswith(PREFIX) and isinstance(value, list):
            participant, _, kind = name[len(PREFIX):].rpartition(".")
            grouped.setdefault(participant, {})[kind] = value
    return grouped
