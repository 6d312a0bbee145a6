"""The wallboard's pure parts (processor.wallboard): the board built from one read (tiles equal to
`processor queues --json` for the current interval, names, colours against the queue's target,
the trend, the empty states), the shared cached read and its 503, the settings it reads, and the
read-only IAM policy covering every call it makes."""
from __future__ import annotations

import logging

import orjson
import pytest
from botocore.exceptions import ClientError

from processor.analytics.contribution import METRICS, QUEUE
from processor.analytics.ratios import queue_totals
from processor.cli.queues import View
from processor.config import Settings, load_settings
from processor.wallboard.board import AMBER, GREEN, NONE, RED, build_board, display_name, level, trend_window
from processor.wallboard.server import MAX_HOLD_SECONDS, BoardReader, BoardSource
from tests.unit.test_deploy import AcceptingDynamoDB, TABLES, allowed, listed, template

UUID = "9f3c1a52-0d4e-4c8b-a1f2-7e6d5c4b3a29"
NOW = "2026-11-20T08:30:00Z"
READ_AT = 1_795_000_000_000


def queue_row(queue: str, media: str, interval: str, **metrics: int) -> dict:
    return {"kind": "queue", "queueId": queue, "mediaType": media, "interval": interval,
            **dict.fromkeys(METRICS[QUEUE], 0), **metrics}


def gauge_row(queue: str, media: str, waiting: int, interacting: int) -> dict:
    return {"kind": "gauge", "queueId": queue, "mediaType": media, "oWaiting": waiting, "oInteracting": interacting}


def agent_row(interval: str) -> dict:
    return {"kind": "agent", "userId": "u1", "interval": interval, "nHandled": 9, "tHandle": 9_000}


#: three intervals with metrics, not consecutive (07:00, 08:00, 08:30), gauges and an agent row
ROWS = [
    queue_row(UUID, "VOICE", "2026-11-20T07:00:00Z", nOffered=50, nAnswered=50),
    queue_row(UUID, "VOICE", "2026-11-20T08:00:00Z", nOffered=7, nAnswered=4, nAbandon=1, nOverSla=1),
    queue_row(UUID, "VOICE", NOW, nOffered=10, nAnswered=8, tAnswered=80_000, nAbandon=2, nOverSla=1,
              nHandled=4, tHandle=1_200_000),
    queue_row("q2", "CHAT", NOW, nOffered=3, nAnswered=1, nAbandon=2),
    queue_row("q3", "VOICE", "2026-11-20T08:00:00Z", nOffered=5, nAnswered=5),  # nothing now: not a tile
    gauge_row(UUID, "VOICE", 4, 6),
    gauge_row("q4", "EMAIL", 2, 0),  # waiting now, offered before these intervals
    agent_row(NOW),
]
VIEW = View(["2026-11-20T07:00:00Z", "2026-11-20T08:00:00Z", NOW], ROWS)


def board(view: View = VIEW, settings: Settings = Settings(), trend: int = 4) -> dict:
    return build_board(view, settings, "metrics", READ_AT, trend=trend)


def tiles(built: dict) -> dict[str, dict]:
    return {tile["key"]: tile for tile in built["tiles"]}


def test_the_tiles_are_the_current_intervals_totals_with_the_gauges_as_processor_queues_json_prints_them():
    built = board()
    assert (built["interval"], built["table"], built["readAtMs"], built["intervalMinutes"]) == (NOW, "metrics", READ_AT, 30)
    shown = tiles(built)
    assert set(shown) == {f"{UUID}|VOICE", "q2|CHAT", "q4|EMAIL"}
    voice = shown[f"{UUID}|VOICE"]
    assert (voice["nOffered"], voice["nAnswered"], voice["nAbandon"], voice["oWaiting"], voice["oInteracting"]) == (
        10, 8, 2, 4, 6)
    assert voice["serviceLevelPct"] == pytest.approx(70.0)  # (8 - 1) / (8 + 2)
    assert (voice["asaMs"], voice["ahtMs"], voice["intervals"]) == (10_000.0, 300_000.0, [NOW])
    assert shown["q4|EMAIL"]["nOffered"] == 0 and shown["q4|EMAIL"]["oWaiting"] == 2
    # exactly the lines `processor queues --json` prints for the newest interval (its own read of it)
    newest = [row for row in ROWS if row.get("interval") in (NOW, None)]
    for line in queue_totals(newest, [NOW]):
        assert {name: shown[f"{line['queueId']}|{line['mediaType']}"][name] for name in line} == line


def test_names_come_from_the_settings_else_a_short_id():
    assert display_name(UUID, {UUID: "Sales"}) == "Sales"
    assert display_name(UUID, {}) == "9f3c1a52"
    assert display_name(UUID.upper(), {}) == "9F3C1A52"
    assert display_name("queue-007", {}) == "queue-007"  # not a UUID: shown whole
    assert display_name("q2", {"q2": ""}) == "q2"  # an empty name is no name
    shown = tiles(board(settings=Settings(queue_names={"q2": "Chat support"})))
    assert (shown[f"{UUID}|VOICE"]["name"], shown["q2|CHAT"]["name"]) == ("9f3c1a52", "Chat support")


def test_tiles_are_ordered_by_name_then_media():
    built = board(settings=Settings(queue_names={"q4": "Accounts", "q2": "billing"}))
    assert [tile["name"] for tile in built["tiles"]] == ["9f3c1a52", "Accounts", "billing"]


def test_the_service_level_colour_is_against_the_queues_target_with_an_amber_band():
    assert [level(value, 80.0, 10.0) for value in (100.0, 80.0, 79.99, 70.0, 69.99, 0.0, None)] == [
        GREEN, GREEN, AMBER, AMBER, RED, RED, NONE]
    assert level(50.0, 50.0, 0.0) == GREEN and level(49.9, 50.0, 0.0) == RED  # no band: no amber
    # 70 % against the default 80 % target, band 10: amber; against its own 70 %: green; band 5: red
    assert tiles(board())[f"{UUID}|VOICE"]["level"] == AMBER
    shown = tiles(board(settings=Settings(service_level_target_pct_by_queue={UUID: 70.0})))
    assert (shown[f"{UUID}|VOICE"]["level"], shown[f"{UUID}|VOICE"]["targetPct"]) == (GREEN, 70.0)
    assert tiles(board(settings=Settings(service_level_amber_band=5.0)))[f"{UUID}|VOICE"]["level"] == RED
    shown = tiles(board())
    assert (shown["q2|CHAT"]["level"], shown["q4|EMAIL"]["level"]) == (RED, NONE)  # 1/3 answered; no calls
    assert shown["q2|CHAT"]["serviceLevelSeconds"] == 20.0
    assert tiles(board(settings=Settings(service_level_seconds_by_queue={"q2": 45.0})))["q2|CHAT"][
        "serviceLevelSeconds"] == 45.0


def test_the_trend_is_the_consecutive_intervals_up_to_the_current_one_with_gaps_at_zero():
    assert trend_window(NOW, 3, 30) == ["2026-11-20T07:30:00Z", "2026-11-20T08:00:00Z", NOW]
    assert trend_window("2026-11-20T00:00:00Z", 2, 15) == ["2026-11-19T23:45:00Z", "2026-11-20T00:00:00Z"]
    built = board(trend=4)
    assert built["trendIntervals"] == ["2026-11-20T07:00:00Z", "2026-11-20T07:30:00Z", "2026-11-20T08:00:00Z", NOW]
    trend = tiles(built)[f"{UUID}|VOICE"]["trend"]
    assert [point["interval"] for point in trend] == built["trendIntervals"]
    assert [point["nOffered"] for point in trend] == [50, 0, 7, 10]
    assert [point["serviceLevelPct"] for point in trend] == [100.0, None, pytest.approx(60.0), pytest.approx(70.0)]
    assert [point["nAbandon"] for point in trend] == [0, 0, 1, 2]
    assert [point["nOffered"] for point in tiles(board(trend=2))[f"{UUID}|VOICE"]["trend"]] == [7, 10]
    assert [point["nOffered"] for point in tiles(built)["q4|EMAIL"]["trend"]] == [0, 0, 0, 0]


def test_an_empty_table_and_partials_summing_to_nothing_say_so():
    built = board(View([], empty="no metrics yet in table metrics"))
    assert (built["tiles"], built["empty"], built["interval"], built["trendIntervals"]) == (
        [], "no metrics yet in table metrics", None, [])
    built = board(View([NOW], empty=f"no metrics in table metrics for {NOW}: the partials listed there sum to zero"))
    assert built["tiles"] == [] and built["interval"] == NOW and "sum to zero" in built["empty"]
    assert board()["empty"] is None


def test_gauges_alone_make_tiles_without_an_interval():
    built = board(View([], [gauge_row("q4", "EMAIL", 2, 1)]))
    assert built["interval"] is None and built["trendIntervals"] == []
    (tile,) = built["tiles"]
    assert (tile["oWaiting"], tile["oInteracting"], tile["nOffered"], tile["trend"]) == (2, 1, 0, [])


def test_the_board_is_json_with_the_fields_the_page_reads():
    built = orjson.loads(orjson.dumps(board()))
    assert set(built) == {"table", "readAtMs", "interval", "intervalMinutes", "trendIntervals", "empty", "tiles"}
    page_fields = {"key", "queueId", "mediaType", "name", "oWaiting", "oInteracting", "nOffered", "nAnswered",
                   "nAbandon", "serviceLevelPct", "asaMs", "ahtMs", "targetPct", "serviceLevelSeconds", "level", "trend"}
    assert all(page_fields <= set(tile) for tile in built["tiles"])


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_screens_share_one_read_per_second_and_a_failure_is_a_503_remembered_as_long(caplog):
    clock, reads = Clock(), []
    outcome: list = [{"tiles": []}]

    def read() -> dict:
        reads.append(clock.now)
        if isinstance(outcome[0], Exception):
            raise outcome[0]
        return outcome[0]

    source = BoardSource(read, "metrics", max_age=1.0, clock=clock)
    assert [source.board() for _ in range(10)] == [(200, {"tiles": []})] * 10 and len(reads) == 1
    clock.now += 0.99
    assert source.board()[0] == 200 and len(reads) == 1
    clock.now += 0.01
    outcome[0] = ClientError({"Error": {"Code": "ResourceNotFoundException", "Message": "Requested resource not found"}},
                             "BatchGetItem")
    with caplog.at_level(logging.WARNING, logger="processor.wallboard"):
        answers = [source.board() for _ in range(10)]
    assert len(reads) == 2 and all(answer == answers[0] for answer in answers)
    status, body = answers[0]
    assert status == 503 and set(body) == {"error", "table", "failedAtMs"} and body["table"] == "metrics"
    assert body["error"].startswith("reading metrics table metrics failed: ClientError: An error occurred "
                                    "(ResourceNotFoundException)")
    assert "Traceback" not in body["error"]
    assert [record.getMessage() for record in caplog.records] == [body["error"]]  # one line, once
    clock.now += 1.0
    outcome[0] = {"tiles": [1]}
    assert source.board() == (200, {"tiles": [1]}) and len(reads) == 3  # the next second reads again


def source_of_reads_lasting(seconds: float, clock: Clock) -> BoardSource:
    """A shared board whose every read takes `seconds` on `clock`."""

    def read() -> dict:
        clock.now += seconds
        return {"tiles": []}

    return BoardSource(read, "metrics", max_age=1.0, clock=clock)


def test_a_slow_read_is_repeated_no_sooner_than_four_times_its_duration():
    clock = Clock()
    source = source_of_reads_lasting(1.0, clock)
    source.board()
    read_at = clock.now
    clock.now = read_at + 3.9
    source.board()
    assert clock.now == read_at + 3.9  # served from the last read
    clock.now = read_at + 4.0
    source.board()
    assert clock.now == read_at + 5.0  # read again


def test_a_read_stuck_for_minutes_holds_the_screens_no_longer_than_the_cap():
    """A read that hung through an outage's retries must not keep every screen on its answer for
    four times as long: the hold is capped (MAX_HOLD_SECONDS)."""
    clock = Clock()
    source = source_of_reads_lasting(120.0, clock)
    source.board()
    read_at = clock.now
    clock.now = read_at + MAX_HOLD_SECONDS
    source.board()
    assert clock.now == read_at + MAX_HOLD_SECONDS + 120.0  # read again after the cap, not after 480 s


class FakeReader:
    """`MetricsReader` over fixed rows, counting which intervals each read asks for."""

    def __init__(self, rows: list[dict]) -> None:
        self.stored, self.reads = rows, []

    def newest(self, count: int) -> tuple[list[str], list[dict]]:
        intervals = sorted({row["interval"] for row in self.stored if "interval" in row})[-count:]
        self.reads.append(("newest", tuple(intervals)))
        return intervals, [row for row in self.stored if row.get("interval", intervals[-1]) in intervals]

    def rows(self, intervals: list[str], gauges: bool = True) -> list[dict]:
        assert not gauges
        self.reads.append(("rows", tuple(intervals)))
        return [row for row in self.stored if row.get("interval") in intervals]


def test_each_read_is_the_current_interval_and_past_intervals_are_read_once_then_one_per_read_when_old():
    clock, reader = Clock(), FakeReader(list(ROWS))
    read = BoardReader(reader, Settings(), "metrics", trend=4, past_max_age=60.0, clock=clock)
    first = read()
    expected = board(trend=4)
    assert first["tiles"] == expected["tiles"] and first["trendIntervals"] == expected["trendIntervals"]
    past = ("2026-11-20T07:00:00Z", "2026-11-20T07:30:00Z", "2026-11-20T08:00:00Z")
    read()
    assert reader.reads == [("newest", (NOW,)), ("rows", past), ("newest", (NOW,))]  # the past once
    reader.reads.clear()
    clock.now += 60.0
    reader.stored.append(queue_row(UUID, "VOICE", "2026-11-20T07:30:00Z", nOffered=3))  # a late event
    for _ in past:
        read()
    assert reader.reads == [step for interval in past for step in (("newest", (NOW,)), ("rows", (interval,)))]
    trend = tiles(read())[f"{UUID}|VOICE"]["trend"]
    assert [point["nOffered"] for point in trend] == [50, 3, 7, 10]
    # the next interval starts: the one that was current joins the past, read once; 07:00 leaves it
    reader.reads.clear()
    reader.stored.append(queue_row(UUID, "VOICE", "2026-11-20T09:00:00Z", nOffered=1))
    trend = tiles(read())[f"{UUID}|VOICE"]["trend"]
    assert reader.reads == [("newest", ("2026-11-20T09:00:00Z",)), ("rows", (NOW,))]
    assert [point["nOffered"] for point in trend] == [3, 7, 10, 1]


def test_an_error_that_is_not_a_read_failure_is_not_swallowed():
    source = BoardSource(lambda: 1 / 0, "metrics")
    with pytest.raises(ZeroDivisionError):
        source.board()


def test_the_settings_for_names_and_targets_read_back_and_are_checked(tmp_path):
    settings = Settings(queue_names={UUID: 'Sales "EU"', "odd queue": "Support"}, service_level_target_pct=85.0,
                        service_level_amber_band=5.0, service_level_target_pct_by_queue={UUID: 90.0})
    path = tmp_path / "settings.toml"
    path.write_text(settings.to_toml())
    assert load_settings(str(path), environ={}) == settings
    assert (Settings().service_level_target_pct, Settings().service_level_amber_band) == (80.0, 10.0)
    for text, message in (("[queues]\nq1 = 3\n", r"\[queues\] q1 must be a string"),
                          ("queues = 1\n", r"\[queues\] must be a table of queueId = string"),
                          ("[analytics]\nservice_level_target_pct = 120\n", "service_level_target_pct must be at most 100"),
                          ("[analytics.service_level_target_pct_by_queue]\nq1 = 101\n", "q1 must be at most 100"),
                          ("[analytics]\nservice_level_amber_band = -1\n", "at least 0")):
        path.write_text(text)
        with pytest.raises(ValueError, match=message):
            load_settings(str(path), environ={})
    assert load_settings(None, environ={"PROCESSOR_SERVICE_LEVEL_TARGET_PCT": "90",
                                        "PROCESSOR_SERVICE_LEVEL_AMBER_BAND": "3"}).service_level_target_pct == 90.0


def test_the_read_only_policy_allows_every_call_the_wallboard_makes(monkeypatch):
    """What `processor wallboard` calls (the table check, then each board's reads) the managed
    read-only policy allows, and the wallboard's task role has that policy and nothing else."""
    from argparse import Namespace

    from processor.cli.queues import open_reader

    client = AcceptingDynamoDB()
    monkeypatch.setattr("processor.cli.queues.dynamodb_client", lambda endpoint=None, *args, **kwargs: client)
    reader, table = open_reader(Namespace(dynamodb_endpoint=None, metrics_table=TABLES["MetricsTable"]), Settings())
    BoardReader(reader, Settings(), table)()
    assert ("dynamodb:BatchGetItem", "metrics") in client.needed and ("dynamodb:DescribeTable", "metrics") in client.needed
    resources = template()["Resources"]
    statements = resources["MetricsReadOnlyPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert allowed(statements, client.needed) == set()
    role = resources["WallboardTaskRole"]["Properties"]
    assert role["ManagedPolicyArns"] == ["MetricsReadOnlyPolicy"] and "Policies" not in role
    principals = {listed(statement["Principal"]["Service"])[0] for statement in role["AssumeRolePolicyDocument"]["Statement"]}
    assert principals == {"ecs-tasks.amazonaws.com"}
