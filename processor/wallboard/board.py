"""What `GET /api/board` returns: the board, built from one read of the metrics table.

Pure: a `View` (`processor queues`' read) and the settings in, a JSON-ready dict out; no I/O and no
clock, so every figure the page shows is tested without a server. A tile's figures are the very
`queue_totals` line `processor queues --json` prints for the current interval (the newest with
metrics: stream time); the board adds what a wall needs besides: a display name, the service
level's colour against the queue's target, and the trend of the intervals up to the current one.
"""
from __future__ import annotations

import re
from typing import Any, Mapping

from processor.adapters import parse_time_ms
from processor.analytics.contribution import QUEUE, interval_text
from processor.analytics.ratios import queue_totals
from processor.cli.queues import View
from processor.config import Settings

#: how many intervals a tile's trend covers, the current one last
TREND_INTERVALS = 8
#: what a trend point carries per interval, and its value in an interval without metrics
TREND_FIELDS = {"nOffered": 0, "nAnswered": 0, "nAbandon": 0, "serviceLevelPct": None}
#: the service level's colours: at or above target, within the amber band below it, lower; none
#: while nothing was answered or abandoned (no ratio to colour)
GREEN, AMBER, RED, NONE = "green", "amber", "red", "none"
_UUID = re.compile(r"[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
SHORT_ID = 8


def display_name(queue_id: str, names: Mapping[str, str]) -> str:
    """The name the settings give the queue (`[queues]`), else a short id: a Genesys UUID's first
    8 characters (the full id is the tile's tooltip), any other id as it is."""
    name = names.get(queue_id)
    if name:
        return name
    return queue_id[:SHORT_ID] if _UUID.fullmatch(queue_id) else queue_id


def target_pct(queue_id: str, settings: Settings) -> float:
    """The queue's service-level target in percent: its own, else the default."""
    return settings.service_level_target_pct_by_queue.get(queue_id, settings.service_level_target_pct)


def level(service_level_pct: float | None, target: float, amber_band: float) -> str:
    """The service level's colour: green at or above the target, amber up to `amber_band` points
    below it, red lower; none without a service level."""
    if service_level_pct is None:
        return NONE
    if service_level_pct >= target:
        return GREEN
    return AMBER if service_level_pct >= target - amber_band else RED


def trend_window(current: str, count: int, interval_minutes: int) -> list[str]:
    """The `count` consecutive intervals ending with `current`, oldest first: the trend's x axis
    (an interval without metrics is a point at zero, not a gap closed up)."""
    width = interval_minutes * 60_000
    start = parse_time_ms(current)
    assert start is not None, current  # the reader's own interval names
    return [interval_text(start - width * back) for back in range(count - 1, -1, -1)]


def _per_interval(rows: list[dict[str, Any]], intervals: list[str]) -> dict[str, dict[tuple[str, str], dict]]:
    """interval -> (queueId, mediaType) -> the interval's totals (queue rows only)."""
    by_interval: dict[str, list[dict[str, Any]]] = {interval: [] for interval in intervals}
    for row in rows:
        if row.get("kind") == QUEUE and row.get("interval") in by_interval:
            by_interval[row["interval"]].append(row)
    return {interval: {(total["queueId"], total["mediaType"]): total for total in queue_totals(queue_rows, [interval])}
            for interval, queue_rows in by_interval.items()}


def _trend(key: tuple[str, str], window: list[str], per_interval: Mapping[str, Mapping[tuple[str, str], dict]]
           ) -> list[dict[str, Any]]:
    points = []
    for interval in window:
        total = per_interval.get(interval, {}).get(key)
        points.append({"interval": interval, **({name: total[name] for name in TREND_FIELDS} if total else TREND_FIELDS)})
    return points


def build_board(view: View, settings: Settings, table: str, read_at_ms: int,
                trend: int = TREND_INTERVALS) -> dict[str, Any]:
    """The board of one read: `view` is `read_view(reader, table, None, trend)` (the `trend` newest
    intervals with metrics, oldest first, and the gauges). Tiles are sorted by name, then media."""
    current = view.intervals[-1] if view.intervals else None
    board: dict[str, Any] = {"table": table, "readAtMs": read_at_ms, "interval": current,
                             "intervalMinutes": settings.interval_minutes, "trendIntervals": [],
                             "empty": None, "tiles": []}
    if not view.rows:
        board["empty"] = view.empty or f"no metrics yet in table {table}"
        return board
    window = trend_window(current, trend, settings.interval_minutes) if current else []
    per_interval = _per_interval(view.rows, window)
    now_rows = [row for row in view.rows if row.get("kind") != QUEUE or row.get("interval") == current]
    tiles = []
    for total in queue_totals(now_rows, [current] if current else []):
        queue_id, media_type = total["queueId"], total["mediaType"]
        target = target_pct(queue_id, settings)
        tiles.append({**total, "key": f"{queue_id}|{media_type}", "name": display_name(queue_id, settings.queue_names),
                      "targetPct": target, "serviceLevelSeconds": settings.analytics.service_level_ms(queue_id) / 1000,
                      "level": level(total["serviceLevelPct"], target, settings.service_level_amber_band),
                      "trend": _trend((queue_id, media_type), window, per_interval)})
    tiles.sort(key=lambda tile: (tile["name"].casefold(), tile["mediaType"], tile["queueId"]))
    board.update(trendIntervals=window, tiles=tiles)
    return board
