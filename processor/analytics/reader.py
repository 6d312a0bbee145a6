"""Read the metrics: every cell summed over its partials, found through the directory (I13).

registry (16 items) → the shards (and the interval width they wrote) → their days → the intervals
of the wanted days → the directories of the wanted intervals → the partials. Every read is a strongly consistent BatchGetItem; nothing scans the table.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Collection, Iterable, Iterator

from processor.analytics import layout
from processor.analytics.contribution import AGENT, GAUGE, METRICS, QUEUE, Cell, Contribution, interval_text, metrics_of
from processor.dynamodb.item import unwrap
from processor.dynamodb.retry import until_processed, with_retries

BATCH_GET_LIMIT = 100
#: the kinds of cell the queue views read (`processor queues`, the wallboard): no agent cells
QUEUE_VIEW_KINDS = (QUEUE, GAUGE)
#: the fields that name a cell in an exported row, by kind
IDENTITY = {QUEUE: ("queueId", "mediaType", "interval"), AGENT: ("userId", "interval"), GAUGE: ("queueId", "mediaType")}


class MetricsReader:
    def __init__(self, client: Any, table: str, interval_minutes: int, kinds: Collection[str] = tuple(METRICS)):
        """`kinds`: the kinds of cell to read (the queue views need no agent cells, which are most
        of an interval's partials: the directory names each partial's kind, so they are not read)."""
        self._client = client
        self._table = table
        self._interval_minutes = interval_minutes
        self._kinds = frozenset(kinds)

    def rows(self, intervals: Iterable[str] | None = None, gauges: bool = True) -> list[dict[str, Any]]:
        """The cells of these intervals (None: every interval), and the gauges, one row each in the
        `--export-metrics` form: every metric of its kind present, cells all zero left out."""
        return self._rows(self._days(), intervals, gauges)

    def newest(self, count: int) -> tuple[list[str], list[dict[str, Any]]]:
        """The `count` newest intervals that have metrics listed (oldest first) and their rows with
        the gauges: what `processor queues` shows, the shards read once."""
        days = self._days()
        intervals = sorted(self._newest_intervals(days, count))
        return intervals, self._rows(days, intervals, gauges=True)

    def _rows(self, days: dict[str, set[str]], intervals: Iterable[str] | None, gauges: bool) -> list[dict[str, Any]]:
        wanted = None if intervals is None else set(intervals)
        listed = self._intervals(days, None if wanted is None else {interval[:10] for interval in wanted})
        keys = [key for shard, shard_intervals in listed.items() for interval in sorted(shard_intervals)
                if wanted is None or interval in wanted for key in layout.directory_keys(interval, shard)]
        if gauges:
            keys += [key for shard in days for key in layout.directory_keys("gauge", shard)]
        parts = [part for item in self._get(keys) for part in item.get(layout.PARTS, [])
                 if layout.kind_of(part) in self._kinds]
        return summed(self._get(parts))

    def newest_intervals(self, count: int) -> list[str]:
        """The `count` newest intervals that have metrics listed, newest first (stream time, not the
        clock); reads only the newest days' interval lists."""
        return self._newest_intervals(self._days(), count)

    def _newest_intervals(self, days: dict[str, set[str]], count: int) -> list[str]:
        found: set[str] = set()
        for day in sorted({day for shard_days in days.values() for day in shard_days}, reverse=True):
            found |= {interval for shard_intervals in self._intervals(days, {day}).values() for interval in shard_intervals}
            if len(found) >= count:
                break
        return sorted(found, reverse=True)[:count]

    def _days(self) -> dict[str, set[str]]:
        """Every shard that ever wrote metrics, with the days it has interval directories for (none
        for a shard that only moved gauges: a child shard that saw only the ends of waiting calls)."""
        shards = sorted({shard for item in self._get(layout.registry_keys()) for shard in item.get(layout.SHARDS, [])})
        days: dict[str, set[str]] = {shard: set() for shard in shards}
        for item in self._get([layout.shard_key(shard) for shard in shards]):
            width = item.get(layout.WIDTH, self._interval_minutes)
            if width != self._interval_minutes:
                raise ValueError(f"the metrics in {self._table} were written with {width}-minute intervals: read "
                                 f"them with [analytics] interval_minutes = {width}")
            days[item[layout.KEY][2:]] = set(item.get(layout.DAYS, []))
        return days

    def _intervals(self, days: dict[str, set[str]], only: set[str] | None) -> dict[str, set[str]]:
        """Per shard, the intervals it listed on these days (`only`: just these days)."""
        keys = [layout.day_key(shard, day) for shard, shard_days in days.items() for day in shard_days
                if only is None or day in only]
        listed: dict[str, set[str]] = defaultdict(set)
        for item in self._get(keys):
            shard = item[layout.KEY].split("|")[1]
            listed[shard] |= set(item.get(layout.INTERVALS, []))
        return listed

    def _get(self, keys: list[str]) -> Iterator[dict[str, Any]]:
        """The items at these keys that exist, in plain values."""
        keys = list(dict.fromkeys(keys))
        for start in range(0, len(keys), BATCH_GET_LIMIT):
            request = {self._table: {"Keys": [{layout.KEY: {"S": key}} for key in keys[start:start + BATCH_GET_LIMIT]],
                                     "ConsistentRead": True}}
            send = lambda pending: with_retries(lambda: self._client.batch_get_item(RequestItems=pending))  # noqa: E731
            for response in until_processed(send, request, "UnprocessedKeys"):
                for item in response.get("Responses", {}).get(self._table, []):
                    yield unwrap(item)


def summed(partials: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Partials summed into one row per cell, sorted; rows whose metrics are all zero left out."""
    cells: dict[tuple, dict[str, Any]] = {}
    totals: dict[tuple, dict[str, int]] = defaultdict(dict)
    for partial in partials:
        kind = partial.get("kind")
        if kind not in METRICS:
            continue
        identity = (kind, *(partial.get(name) for name in IDENTITY[kind]))
        cells.setdefault(identity, {"kind": kind, **{name: partial.get(name) for name in IDENTITY[kind]}})
        for metric in METRICS[kind]:
            totals[identity][metric] = totals[identity].get(metric, 0) + int(partial.get(metric, 0))
    rows = [{**cells[identity], **totals[identity]} for identity in cells if any(totals[identity].values())]
    return sorted(rows, key=lambda row: tuple(str(row.get(name, "")) for name in ("kind", "interval", "queueId",
                                                                                 "mediaType", "userId")))


def rows_of(contributions: Iterable[Contribution]) -> list[dict[str, Any]]:
    """What these contributions add up to, in the rows `summed` gives for their partials (I12's
    right-hand side: the stored conversations' contributions, summed per cell)."""
    return summed(cell_row(cell, vector) for cells in contributions for cell, vector in cells.items())


def cell_row(cell: Cell, vector: tuple[int, ...]) -> dict[str, Any]:
    row: dict[str, Any] = {"kind": cell.kind, layout.OWNER_NAME[cell.kind]: cell.owner}
    if cell.media_type is not None:
        row["mediaType"] = cell.media_type
    if cell.interval is not None:
        row["interval"] = interval_text(cell.interval)
    return {**row, **metrics_of(cell, vector)}
