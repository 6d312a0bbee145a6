"""The read-time ratios and per-queue totals (processor.analytics.ratios), and the pure parts of
`processor queues`: the table, --interval validation, what an empty table says, --watch living
through a failed read."""
from __future__ import annotations

import io
import itertools

import pytest
from botocore.exceptions import ClientError
from rich.console import Console

from processor.analytics.contribution import METRICS, QUEUE
from processor.analytics.ratios import RATIOS, queue_totals, ratios, summed_metrics
from processor.cli import main
from processor.cli import queues as command
from processor.cli.queues import (ALL_COLUMNS, SUMMARY_COLUMNS, View, aligned_interval, describe, queue_table,
                                  read_view, watch)
from processor.dynamodb.client import ensure_table
from processor.analytics import layout


def queue_row(queue: str, media: str, interval: str, **metrics: int) -> dict:
    """A queue row in the `--export-metrics` form: every metric present."""
    return {"kind": "queue", "queueId": queue, "mediaType": media, "interval": interval,
            **dict.fromkeys(METRICS[QUEUE], 0), **metrics}


def gauge_row(queue: str, media: str, waiting: int, interacting: int) -> dict:
    return {"kind": "gauge", "queueId": queue, "mediaType": media, "oWaiting": waiting, "oInteracting": interacting}


I1, I2, I3 = "2026-11-20T08:00:00Z", "2026-11-20T08:30:00Z", "2026-11-20T09:00:00Z"


# ---- ratios ----------------------------------------------------------------------------------------


def test_each_ratio_is_its_documented_quotient():
    row = queue_row("q", "VOICE", I1, nOffered=10, nAnswered=8, tAnswered=120_000, nAbandon=1, nOverSla=2,
                    nHandled=4, tHandle=1_000_000)
    assert ratios(row) == {"answerPct": 80.0, "abandonPct": 10.0, "asaMs": 15_000.0,
                           "serviceLevelPct": pytest.approx(100 * 6 / 9), "ahtMs": 250_000.0}
    assert tuple(ratios(row)) == RATIOS


def test_a_ratio_with_nothing_to_divide_by_is_none_not_zero():
    assert ratios(queue_row("q", "VOICE", I1)) == dict.fromkeys(RATIOS)
    assert ratios({}) == dict.fromkeys(RATIOS)  # a metric the row lacks counts as 0
    offered_only = ratios(queue_row("q", "VOICE", I1, nOffered=3))
    assert offered_only == {"answerPct": 0.0, "abandonPct": 0.0, "asaMs": None, "serviceLevelPct": None,
                            "ahtMs": None}
    # abandoned only: the service level counts it (denominator nAnswered + nAbandon) as missed
    assert ratios(queue_row("q", "VOICE", I1, nOffered=2, nAbandon=2))["serviceLevelPct"] == 0.0


def test_the_ratio_of_a_sum_is_of_the_summed_counts_not_an_average_of_ratios():
    rows = [queue_row("q", "VOICE", I1, nOffered=1, nAnswered=1, tAnswered=1_000),
            queue_row("q", "VOICE", I2, nOffered=9, nAnswered=3, tAnswered=30_000)]
    sums = summed_metrics(rows)
    assert sums["nOffered"] == 10 and sums["nAnswered"] == 4 and sums["tAnswered"] == 31_000
    assert ratios(sums)["answerPct"] == 40.0 and ratios(sums)["asaMs"] == 7_750.0


def test_summed_metrics_has_every_metric_of_its_kind():
    assert summed_metrics([]) == dict.fromkeys(METRICS[QUEUE], 0)
    assert summed_metrics([{"oWaiting": 2}, {"oWaiting": 1, "oInteracting": 4}], "gauge") == {
        "oWaiting": 3, "oInteracting": 4}


# ---- per-queue totals --------------------------------------------------------------------------------


ROWS = [
    queue_row("q1", "VOICE", I1, nOffered=4, nAnswered=3, tAnswered=30_000, nAbandon=1, nHandled=2, tHandle=400_000),
    queue_row("q1", "VOICE", I2, nOffered=6, nAnswered=5, tAnswered=10_000, nOverSla=1, nHandled=3, tHandle=100_000),
    queue_row("q1", "CHAT", I2, nOffered=2, nAnswered=2, tAnswered=2_000),
    queue_row("q0", "VOICE", I1, nOffered=1),
    {"kind": "agent", "userId": "a1", "interval": I1, "nHandled": 7, "tHandle": 9},
    gauge_row("q1", "VOICE", 3, 2),
    gauge_row("q9", "MESSAGE", 1, 0),  # calls waiting now that entered before these intervals
]


def test_queue_rows_are_summed_per_queue_and_media_type_and_the_gauges_joined():
    totals = {(t["queueId"], t["mediaType"]): t for t in queue_totals(ROWS)}
    assert list(totals) == [("q0", "VOICE"), ("q1", "CHAT"), ("q1", "VOICE"), ("q9", "MESSAGE")]  # sorted
    voice = totals["q1", "VOICE"]
    assert (voice["nOffered"], voice["nAnswered"], voice["nAbandon"], voice["nOverSla"]) == (10, 8, 1, 1)
    assert (voice["tAnswered"], voice["nHandled"], voice["tHandle"]) == (40_000, 5, 500_000)
    assert (voice["oWaiting"], voice["oInteracting"]) == (3, 2)
    assert voice["asaMs"] == 5_000.0 and voice["ahtMs"] == 100_000.0 and voice["answerPct"] == 80.0
    assert voice["serviceLevelPct"] == pytest.approx(100 * 7 / 9)
    assert (totals["q1", "CHAT"]["oWaiting"], totals["q1", "CHAT"]["oInteracting"]) == (0, 0)  # no gauge row
    waiting_only = totals["q9", "MESSAGE"]
    assert waiting_only["oWaiting"] == 1 and waiting_only["nOffered"] == 0 and waiting_only["answerPct"] is None
    assert all(set(t) >= {*METRICS[QUEUE], "oWaiting", "oInteracting", *RATIOS, "intervals"} for t in totals.values())


def test_totals_name_the_intervals_they_cover():
    assert {tuple(t["intervals"]) for t in queue_totals(ROWS)} == {(I1, I2)}  # those the rows name
    assert {tuple(t["intervals"]) for t in queue_totals(ROWS, [I3, I1, I2])} == {(I1, I2, I3)}  # as asked, sorted
    assert queue_totals([]) == []


def test_the_order_of_the_rows_does_not_matter():
    forward = queue_totals(ROWS)
    for permutation in itertools.islice(itertools.permutations(ROWS), 0, 5000, 97):
        assert queue_totals(permutation) == forward


# ---- the table -----------------------------------------------------------------------------------------


def rendered(table) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(table)
    return console.file.getvalue()


def test_queue_table_has_one_line_per_queue_and_media_type():
    text = rendered(queue_table(ROWS, "the title"))
    assert "the title" in text
    cells = [[cell.strip() for cell in line.split("│")[1:-1]] for line in text.splitlines() if line.startswith("│")]
    lines = {f"{queue} {media}": rest for queue, media, *rest in cells}
    assert set(lines) == {"q0 VOICE", "q1 CHAT", "q1 VOICE", "q9 MESSAGE"}
    # offered, answered, abandoned, answer %, abandon %, ASA s, service level %, AHT s, waiting, interacting
    assert lines["q1 VOICE"] == ["10", "8", "1", "80.0", "10.0", "5.0", "77.8", "100.0", "3", "2"]
    assert lines["q0 VOICE"] == ["1", "0", "0", "0.0", "0.0", "-", "-", "-", "0", "0"]


def test_the_summary_columns_for_the_demo():
    table = queue_table(ROWS, "summary", columns=SUMMARY_COLUMNS)
    assert [column.header for column in table.columns] == list(SUMMARY_COLUMNS)
    assert [column.header for column in queue_table(ROWS, "all").columns] == list(ALL_COLUMNS)
    with pytest.raises(ValueError, match="no such queue table column: ASA"):
        queue_table(ROWS, "x", columns=("queue", "ASA"))


def test_counts_in_the_table_have_thousands_separators():
    text = rendered(queue_table([queue_row("big", "VOICE", I1, nOffered=12_345)], "t"))
    assert "12,345" in text


# ---- --interval ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, minutes, expected", [
    ("2026-11-20T08:30:00Z", 30, "2026-11-20T08:30:00Z"),
    ("2026-11-20T08:30:00+00:00", 30, "2026-11-20T08:30:00Z"),
    ("2026-11-20T08:30", 30, "2026-11-20T08:30:00Z"),  # no offset: UTC
    ("2026-11-20T09:30:00+01:00", 30, "2026-11-20T08:30:00Z"),  # another offset: the same moment in UTC
    ("2026-11-20T08:45:00Z", 15, "2026-11-20T08:45:00Z"),
    ("2026-11-20T08:00:00Z", 60, "2026-11-20T08:00:00Z"),
])
def test_an_aligned_interval_is_accepted_in_the_metrics_form(text, minutes, expected):
    assert aligned_interval(text, minutes) == expected


@pytest.mark.parametrize("text, minutes, message", [
    ("2026-11-20T08:40:00Z", 30, "not the start of a 30-minute interval .* starts at 2026-11-20T08:30:00Z"),
    ("2026-11-20T08:30:00Z", 60, "not the start of a 60-minute interval .* starts at 2026-11-20T08:00:00Z"),
    ("2026-11-20T08:30:00.5Z", 30, "not the start of a 30-minute interval"),
    ("2026-11-20T08:30:01Z", 30, "not the start"),
    ("yesterday", 30, "is not a time"),
    ("2026-11-20", 30, "is not a time"),  # a date is not an interval
    ("2026-13-20T08:30:00Z", 30, "is not a time"),
])
def test_a_misaligned_or_malformed_interval_is_refused_clearly(text, minutes, message):
    with pytest.raises(ValueError, match=message):
        aligned_interval(text, minutes)


def test_the_command_refuses_bad_arguments_before_any_read(capsys, monkeypatch):
    monkeypatch.setattr(command, "dynamodb_client", lambda *a, **k: pytest.fail("connected before validating"))
    for argv, message in [
        (["--interval", "2026-11-20T08:40:00Z"], "--interval 2026-11-20T08:40:00Z is not the start of a 30-minute"),
        (["--last", "0"], "--last must be at least 1"),
        (["--watch", "0"], "--watch SECONDS must be a finite number more than 0"),
        (["--watch", "inf"], "--watch SECONDS must be a finite number more than 0"),
        (["--watch", "--json"], "does not go with --json"),
    ]:
        assert main(["queues", *argv]) == 2
        error = capsys.readouterr().err
        assert error.startswith("processor: error: ") and message in error and error.count("\n") == 1
    with pytest.raises(SystemExit) as exit:
        main(["queues", "--interval", "2026-11-20T08:30:00Z", "--last", "2"])
    assert exit.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


# ---- reading ---------------------------------------------------------------------------------------------


class FakeReader:
    def __init__(self, rows_by_interval: dict[str, list[dict]], gauges: list[dict] = ()):
        self.by_interval, self.gauges = rows_by_interval, list(gauges)

    def rows(self, intervals=None, gauges=True):
        wanted = self.by_interval if intervals is None else intervals
        return [row for i in wanted for row in self.by_interval.get(i, [])] + (self.gauges if gauges else [])

    def newest_intervals(self, count):
        return sorted(self.by_interval, reverse=True)[:count]

    def newest(self, count):
        intervals = sorted(self.newest_intervals(count))
        return intervals, self.rows(intervals)


def test_the_default_view_is_the_newest_interval_with_metrics():
    reader = FakeReader({I1: ROWS[:1], I2: ROWS[1:3]}, ROWS[5:])
    view = read_view(reader, "m", None, 1)
    assert view.intervals == [I2] and view.rows == ROWS[1:3] + ROWS[5:] and view.empty is None
    view = read_view(reader, "m", None, 48)
    assert view.intervals == [I1, I2] and len(view.rows) == 5


def test_an_empty_table_says_no_metrics_yet():
    for view in (read_view(FakeReader({}), "m", None, 1), read_view(FakeReader({}), "m", I1, 1)):
        assert view.rows == [] and view.empty == "no metrics yet in table m"


def test_a_listed_interval_whose_partials_sum_to_nothing_is_not_called_empty():
    reader = FakeReader({I2: []})  # the directory lists partials; none is there (yet) or all are zero
    view = read_view(reader, "m", None, 1)
    assert view.rows == [] and view.empty == f"no metrics in table m for {I2}: the partials listed there sum to zero"


def test_an_interval_without_metrics_names_the_newest_that_has_some():
    view = read_view(FakeReader({I1: ROWS[:1]}), "m", I3, 1)
    assert view.empty == f"no metrics for interval {I3} in table m (the newest interval with metrics: {I1})"


def test_the_command_on_an_empty_metrics_table(dynamodb, monkeypatch, capsys):
    ensure_table(dynamodb, "metrics", key=layout.KEY)
    monkeypatch.setattr(command, "dynamodb_client", lambda *a, **k: dynamodb)
    assert main(["queues", "--metrics-table", "metrics"]) == 0
    assert "no metrics yet in table metrics" in capsys.readouterr().out
    assert main(["queues", "--metrics-table", "metrics", "--json"]) == 0
    out = capsys.readouterr()
    assert out.out == "" and "no metrics yet" in out.err  # stdout stays JSON lines
    assert main(["queues", "--metrics-table", "absent"]) == 2
    assert "metrics table absent does not exist" in capsys.readouterr().err


def test_titles_say_what_they_cover():
    assert describe([I2], 30, None) == f"interval {I2} (30 min)"
    assert describe([I2], 30, 1) == f"the newest interval with metrics, {I2} (30 min)"
    assert describe([I1, I2], 30, 2) == f"the 2 newest intervals with metrics, {I1} to {I2} (30 min each)"
    assert "(all there are; 48 asked)" in describe([I1, I2], 30, 48)
    assert describe([], 30, 4) == "no interval has metrics"


# ---- --watch ---------------------------------------------------------------------------------------------


def test_watch_lives_through_a_failed_read_and_ends_on_ctrl_c(monkeypatch):
    reads = iter([View([I1], ROWS), ClientError({"Error": {"Code": "ResourceNotFoundException",
                                                          "Message": "Requested resource not found"}}, "BatchGetItem")])

    def read() -> View:
        outcome = next(reads)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    sleeps = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(command.time, "sleep", sleep)
    console = Console(file=io.StringIO(), width=200, color_system=None)
    assert watch(console, read, lambda view: "watching", 0.5) == 0
    text = console.file.getvalue()
    assert sleeps == [0.5, 0.5]
    assert "watching" in text and "q1" in text  # the last good read stays on screen ...
    assert "STALE: the read at" in text and "ResourceNotFoundException" in text  # ... marked stale
