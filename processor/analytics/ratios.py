"""The read-time ratios of queue metrics (ANALYTICS.md), and the per-queue totals they are taken of.

One place for both: `processor queues`, the demo's summary and a wallboard all read the same
figures. Pure functions over rows in the `--export-metrics` form (`MetricsReader.rows()`); no I/O.

    answer %         = nAnswered / nOffered
    abandon %        = nAbandon / nOffered
    ASA (ms)         = tAnswered / nAnswered
    service level %  = (nAnswered - nOverSla) / (nAnswered + nAbandon)
    AHT (ms)         = tHandle / nHandled

Each is None when its denominator is 0 (nothing to take a ratio of, which is not 0 %). Percentages
are 0 to 100. A ratio of a sum of rows is the ratio of the summed counts, never an average of the
rows' ratios.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from processor.analytics.contribution import GAUGE, METRICS, QUEUE

#: the ratios, in the order they are shown, by the names they carry in JSON
RATIOS = ("answerPct", "abandonPct", "asaMs", "serviceLevelPct", "ahtMs")
#: the live gauges joined to each queue's totals
GAUGES = METRICS[GAUGE]


def _ratio(numerator: int | float, denominator: int | float, scale: float = 1.0) -> float | None:
    return None if denominator == 0 else scale * numerator / denominator


def ratios(row: Mapping[str, Any]) -> dict[str, float | None]:
    """The read-time ratios of a queue row, or of a sum of queue rows (`summed_metrics`); a metric
    the row lacks counts as 0."""
    n = {name: int(row.get(name) or 0) for name in METRICS[QUEUE]}
    return {
        "answerPct": _ratio(n["nAnswered"], n["nOffered"], 100.0),
        "abandonPct": _ratio(n["nAbandon"], n["nOffered"], 100.0),
        "asaMs": _ratio(n["tAnswered"], n["nAnswered"]),
        "serviceLevelPct": _ratio(n["nAnswered"] - n["nOverSla"], n["nAnswered"] + n["nAbandon"], 100.0),
        "ahtMs": _ratio(n["tHandle"], n["nHandled"]),
    }


def summed_metrics(rows: Iterable[Mapping[str, Any]], kind: str = QUEUE) -> dict[str, int]:
    """Every metric of `kind` summed over these rows (a metric a row lacks counts as 0)."""
    totals = dict.fromkeys(METRICS[kind], 0)
    for row in rows:
        for name in totals:
            totals[name] += int(row.get(name) or 0)
    return totals


def queue_totals(rows: Iterable[Mapping[str, Any]], intervals: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """One row per (queueId, mediaType): the queue rows summed across their intervals, joined with
    the gauge rows (oWaiting, oInteracting; 0 when none) of the same (queueId, mediaType), and the
    ratios of the sums. Agent rows are ignored.

    A (queueId, mediaType) with a gauge row and no queue row (calls waiting now that entered the
    queue before these intervals) is there too, with zero sums. `intervals` says which intervals
    the rows cover (default: those the queue rows name); each result carries them, sorted, as
    `intervals`. Sorted by queueId, then mediaType."""
    queue_rows: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    gauge_rows: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    seen: set[str] = set()
    for row in rows:
        identity = (str(row.get("queueId")), str(row.get("mediaType")))
        if row.get("kind") == QUEUE:
            queue_rows.setdefault(identity, []).append(row)
            if row.get("interval"):
                seen.add(str(row["interval"]))
        elif row.get("kind") == GAUGE:
            gauge_rows.setdefault(identity, []).append(row)
    covered = sorted(set(intervals) if intervals is not None else seen)
    totals = []
    for queue_id, media_type in sorted(set(queue_rows) | set(gauge_rows)):
        sums = summed_metrics(queue_rows.get((queue_id, media_type), []), QUEUE)
        gauges = summed_metrics(gauge_rows.get((queue_id, media_type), []), GAUGE)
        totals.append({"queueId": queue_id, "mediaType": media_type, "intervals": list(covered),
                       **sums, **gauges, **ratios(sums)})
    return totals
