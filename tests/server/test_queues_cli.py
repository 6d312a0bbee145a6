"""`processor queues` end to end, as an operator runs it: `processor replay` writes a storm's metrics
into the emulator, then the console script reads them back. Every figure it prints must be the
sum of what `--export-metrics` wrote (computed here independently of processor.analytics.ratios)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from devstack.storm import StormShape, write_storm
from processor.analytics import layout
from processor.dynamodb.client import ensure_table

PROCESSOR = [sys.executable, "-m", "processor.cli"]
IDENTITY = ("kind", "queueId", "mediaType", "interval")


def processor(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([*PROCESSOR, *args], capture_output=True, text=True, timeout=600)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def replayed(emulator, directory: Path, conversations: int, keep: float = 1.0) -> tuple[str, list[dict]]:
    """A storm spread over several 30-minute intervals (one conversation every 20 s of event time),
    cut to its first `keep` part so some calls are still waiting or interacting, replayed over two
    shards into a fresh metrics table: the table's name and its `--export-metrics` rows."""
    storm = directory / "storm.jsonl"
    write_storm(str(storm), StormShape(conversations=conversations, arrivals_per_second=0.05))
    lines = storm.read_text().splitlines()
    storm.write_text("\n".join(lines[:int(len(lines) * keep)]) + "\n")
    suffix = uuid.uuid4().hex[:8]
    metrics_table, export = f"m-{suffix}", directory / "m.jsonl"
    processor("replay", str(storm), "--shards", "2", "--no-progress", "--dynamodb-endpoint", emulator.endpoint,
              "--create-table", "--table", f"t-{suffix}", "--metrics-table", metrics_table,
              "--export-metrics", str(export))
    return metrics_table, read_jsonl(export)


@pytest.fixture(scope="module")
def stored(emulator, tmp_path_factory) -> tuple[str, list[dict]]:
    return replayed(emulator, tmp_path_factory.mktemp("queues"), conversations=200, keep=0.85)


def queues(emulator, metrics_table: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return processor("queues", "--dynamodb-endpoint", emulator.endpoint, "--metrics-table", metrics_table, *args,
                     check=check)


def expected_sums(rows: list[dict], intervals: set[str]) -> dict[tuple[str, str], dict[str, int]]:
    """Per (queueId, mediaType): the queue rows of these intervals summed, the gauge rows added."""
    sums: dict[tuple[str, str], dict[str, int]] = {}
    for row in rows:
        if row["kind"] == "agent" or row["kind"] == "queue" and row["interval"] not in intervals:
            continue
        total = sums.setdefault((row["queueId"], row["mediaType"]), {})
        for metric, value in row.items():
            if metric not in IDENTITY:
                total[metric] = total.get(metric, 0) + value
    queue_metrics = {m for row in rows if row["kind"] == "queue" for m in row} - set(IDENTITY)
    gauge_metrics = {m for row in rows if row["kind"] == "gauge" for m in row} - set(IDENTITY)
    return {key: {**dict.fromkeys(queue_metrics | gauge_metrics, 0), **total} for key, total in sums.items()}


def quotient(numerator: int, denominator: int, scale: float = 1.0) -> float | None:
    return None if denominator == 0 else pytest.approx(scale * numerator / denominator)


def assert_lines_match(lines: list[dict], rows: list[dict], intervals: set[str]) -> None:
    expected = expected_sums(rows, intervals)
    assert {(line["queueId"], line["mediaType"]) for line in lines} == set(expected)
    for line in lines:
        want = expected[line["queueId"], line["mediaType"]]
        assert {metric: line[metric] for metric in want} == want, (line["queueId"], line["mediaType"])
        assert line["answerPct"] == quotient(want["nAnswered"], want["nOffered"], 100)
        assert line["abandonPct"] == quotient(want["nAbandon"], want["nOffered"], 100)
        assert line["asaMs"] == quotient(want["tAnswered"], want["nAnswered"])
        assert line["serviceLevelPct"] == quotient(want["nAnswered"] - want["nOverSla"],
                                                   want["nAnswered"] + want["nAbandon"], 100)
        assert line["ahtMs"] == quotient(want["tHandle"], want["nHandled"])
        assert line["intervalMinutes"] == 30 and set(line["intervals"]) >= intervals


def test_json_over_the_last_intervals_sums_exactly_what_the_export_holds(emulator, stored):
    metrics_table, rows = stored
    intervals = {row["interval"] for row in rows if row["kind"] == "queue"}
    assert len(intervals) >= 2  # the storm spans intervals: the sums cross them
    assert any(row["kind"] == "gauge" and row["oWaiting"] + row["oInteracting"] for row in rows)  # calls live now
    lines = [json.loads(line) for line in queues(emulator, metrics_table, "--json", "--last", "48").stdout.splitlines()]
    assert lines and all(line["intervals"] == lines[0]["intervals"] for line in lines)
    assert_lines_match(lines, rows, intervals)
    assert sum(line["nOffered"] for line in lines) == sum(row["nOffered"] for row in rows if row["kind"] == "queue")


def test_the_default_is_the_newest_interval_with_metrics_and_interval_picks_one(emulator, stored):
    metrics_table, rows = stored
    ordered = sorted({row["interval"] for row in rows if row["kind"] == "queue"})
    newest = [json.loads(line) for line in queues(emulator, metrics_table, "--json").stdout.splitlines()]
    assert {tuple(line["intervals"]) for line in newest} == {(ordered[-1],)}
    assert_lines_match(newest, rows, {ordered[-1]})
    first = [json.loads(line) for line in
             queues(emulator, metrics_table, "--json", "--interval", ordered[0]).stdout.splitlines()]
    assert {tuple(line["intervals"]) for line in first} == {(ordered[0],)}
    assert_lines_match(first, rows, {ordered[0]})
    two = [json.loads(line) for line in queues(emulator, metrics_table, "--json", "--last", "2").stdout.splitlines()]
    assert_lines_match(two, rows, set(ordered[-2:]))


def test_the_table_shows_every_queue(emulator, stored):
    metrics_table, rows = stored
    result = queues(emulator, metrics_table, "--last", "48")
    for heading in ("offered", "answered", "abandoned", "ASA s", "service level %", "AHT s", "waiting now"):
        assert heading in result.stdout
    assert {row["queueId"] for row in rows if row["kind"] != "agent"} <= {
        word for line in result.stdout.splitlines() for word in line.replace("│", " ").split()}
    assert "newest intervals with metrics" in result.stdout and metrics_table in result.stdout


def test_a_misaligned_interval_is_refused_in_one_line(emulator, stored):
    metrics_table, _ = stored
    result = queues(emulator, metrics_table, "--interval", "2025-11-24T16:10:00Z", check=False)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines()[-1] == (
        "processor: error: --interval 2025-11-24T16:10:00Z is not the start of a 30-minute interval (intervals "
        "are aligned to the epoch, UTC): the interval holding it starts at 2025-11-24T16:00:00Z")


def test_an_empty_metrics_table_says_no_metrics_yet(emulator, dynamodb):
    metrics_table = f"m-{uuid.uuid4().hex[:8]}"
    ensure_table(dynamodb, metrics_table, key=layout.KEY)
    result = queues(emulator, metrics_table)
    assert result.stdout.strip() == f"no metrics yet in table {metrics_table}"
    result = queues(emulator, metrics_table, "--json")
    assert result.stdout == "" and f"no metrics yet in table {metrics_table}" in result.stderr


def test_a_metrics_table_that_does_not_exist_is_an_error(emulator):
    result = queues(emulator, "no-such-metrics", check=False)
    assert result.returncode == 2
    assert f"metrics table no-such-metrics does not exist at {emulator.endpoint}" in result.stderr


def test_watch_redraws_marks_a_failed_read_stale_and_exits_0_on_ctrl_c(emulator, dynamodb, tmp_path):
    metrics_table, rows = replayed(emulator, tmp_path, conversations=20)
    environment = {**os.environ, "TTY_COMPATIBLE": "1", "NO_COLOR": "1", "COLUMNS": "200",
                   "LINES": "500"}  # redraws as on a (tall) terminal: Live crops to the screen's height
    watching = subprocess.Popen([*PROCESSOR, "queues", "--dynamodb-endpoint", emulator.endpoint, "--metrics-table",
                                 metrics_table, "--watch", "0.2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=environment)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(iter(lambda: watching.stdout.read(1), "")), daemon=True)
    reader.start()

    def shown(text: str, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and watching.poll() is None:
            if text in "".join(output):
                return True
            time.sleep(0.05)
        return text in "".join(output)

    try:
        newest = max(row["interval"] for row in rows if row["kind"] == "queue")
        assert shown("Ctrl-C to stop") and all(
            shown(row["queueId"]) for row in rows if row["kind"] == "queue" and row["interval"] == newest)
        dynamodb.delete_table(TableName=metrics_table)  # every read fails from now on
        assert shown("STALE: the read at"), "".join(output)
        watching.send_signal(signal.SIGINT)
        assert watching.wait(timeout=30) == 0, watching.stderr.read()
    finally:
        if watching.poll() is None:
            watching.kill()
            watching.wait()
    reader.join(timeout=5)
    assert "ResourceNotFoundException" in "".join(output)
    assert "Traceback" not in watching.stderr.read()
