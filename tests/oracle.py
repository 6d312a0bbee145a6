"""An independent oracle for the Genesys projection: sort the distinct events, take the last.

Written without the engine's registers or merge, so the property tests compare two different
constructions of the same truth.
"""
from __future__ import annotations

from typing import Any, Iterable

import orjson

FIELD_OF = {"acd.start": ("queueId", "queueId"), "acd.end": ("acdOutcome", "acdOutcome"),
            "user.start": ("agentUserId", "userId"), "acw": ("wrapupCode", "wrapupCode"),
            "attributes": ("attributes", "attributes")}


def _order(time_ms: int, value: Any) -> tuple[int, bytes]:
    return time_ms, orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def genesys_projection(distinct: Iterable[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The projection of one conversation from its distinct (subtopic, eventBody) pairs."""
    candidates: dict[str, list[tuple[tuple[int, bytes], Any]]] = {}

    def offer(name: str, time_ms: int, value: Any) -> None:
        candidates.setdefault(name, []).append((_order(time_ms, value), value))

    times = []
    for subtopic, body in distinct:
        t = body["eventTime"]
        times.append(t)
        for name in ("mediaType", "direction"):
            if name in body:
                offer(name, t, body[name])
        if subtopic in FIELD_OF:
            name, source = FIELD_OF[subtopic]
            if source in body:
                offer(name, t, body[source])
        if subtopic == "customer.end":
            offer("ended", t, True)
            offer("endTime", t, t)
    projection = {name: max(options, key=lambda o: o[0])[1] for name, options in candidates.items()}
    projection["startTime"] = min(times)
    if projection.get("ended"):
        projection["durationMs"] = max(0, projection["endTime"] - projection["startTime"])
    return projection
