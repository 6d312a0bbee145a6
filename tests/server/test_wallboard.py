"""`processor wallboard` over HTTP, as supervisors' screens ask it: the console script serves the
board of a metrics table `processor replay` wrote into the emulator, equal to what `processor
queues --json` prints for it; an empty table says so; a DynamoDB error is a 503 with one line, not a
traceback; only GET of the page, its assets and the board, with the security headers on each."""
from __future__ import annotations

import concurrent.futures
import contextlib
import json
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest

from processor.analytics import layout
from processor.dynamodb.client import ensure_table
from processor.wallboard.server import BoardSource, WallboardServer, serving
from tests.server.test_queues_cli import PROCESSOR, queues, replayed

#: what `processor queues --json` adds to a `queue_totals` line that a tile does not carry
JSON_ONLY = {"intervalMinutes"}


@contextlib.contextmanager
def wallboard(emulator, metrics_table: str, *args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    """`processor wallboard` on a free port: its URL (from the line it prints) and the process."""
    process = subprocess.Popen([*PROCESSOR, "wallboard", "--port", "0", "--dynamodb-endpoint", emulator.endpoint,
                                "--metrics-table", metrics_table, *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("wallboard: http://127.0.0.1:"), line + process.stderr.read()
        yield line.split()[1], process
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def get(url: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def board(url: str) -> tuple[int, dict[str, Any]]:
    status, _, body = get(url + "api/board")
    return status, json.loads(body)


def queues_json(emulator, metrics_table: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in queues(emulator, metrics_table, "--json").stdout.splitlines()]


def assert_tiles_equal_queues_json(tiles: list[dict[str, Any]], lines: list[dict[str, Any]]) -> None:
    by_key = {(tile["queueId"], tile["mediaType"]): tile for tile in tiles}
    assert set(by_key) == {(line["queueId"], line["mediaType"]) for line in lines}
    for line in lines:
        tile = by_key[line["queueId"], line["mediaType"]]
        assert {name: tile[name] for name in set(line) - JSON_ONLY} == {
            name: value for name, value in line.items() if name not in JSON_ONLY}


@pytest.fixture(scope="module")
def stored(emulator, tmp_path_factory) -> tuple[str, list[dict]]:
    return replayed(emulator, tmp_path_factory.mktemp("wallboard"), conversations=120, keep=0.85)


@pytest.fixture(scope="module")
def served(emulator, stored) -> Iterator[str]:
    with wallboard(emulator, stored[0]) as (url, _):
        yield url


def test_the_board_equals_processor_queues_json_for_the_same_table(emulator, stored, served):
    metrics_table, rows = stored
    status, built = board(served)
    assert status == 200 and built["table"] == metrics_table and built["empty"] is None
    lines = queues_json(emulator, metrics_table)
    assert lines and built["interval"] == lines[0]["intervals"][0] == max(
        row["interval"] for row in rows if row["kind"] == "queue")
    assert_tiles_equal_queues_json(built["tiles"], lines)
    assert any(tile["oWaiting"] + tile["oInteracting"] for tile in built["tiles"])  # the storm was cut: calls live
    # the trend: the current interval's point is the tile's own figures; an earlier one, the export's
    earlier = built["trendIntervals"][-2]
    for tile in built["tiles"]:
        assert tile["trend"][-1]["nOffered"] == tile["nOffered"]
        assert tile["trend"][-2]["nOffered"] == sum(
            row["nOffered"] for row in rows if row["kind"] == "queue" and row["interval"] == earlier
            and (row["queueId"], row["mediaType"]) == (tile["queueId"], tile["mediaType"]))


def test_only_get_of_the_page_its_assets_and_the_board_with_security_headers(served):
    for path, content_type in (("", "text/html"), ("wallboard.css", "text/css"), ("wallboard.js", "text/javascript"),
                               ("api/board", "application/json")):
        status, headers, body = get(served + path)
        assert status == 200 and headers["Content-Type"].startswith(content_type) and body, path
        assert headers["Content-Security-Policy"].startswith("default-src 'self';"), path
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["Server"] == "wallboard"
    assert get(served + "api/board")[1]["Cache-Control"] == "no-store"
    for path in ("favicon.ico", "static/../../etc/passwd", "api/board/x", "index.html.bak", "api"):
        assert get(served + path)[0] == 404, path
    for method in ("POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"):
        status, headers, _ = get(served + "api/board", method)
        assert status == 405 and headers["Allow"] == "GET", method


def test_an_empty_table_says_so_and_a_dynamodb_error_is_a_503_with_one_line(emulator, dynamodb):
    metrics_table = f"m-{uuid.uuid4().hex[:8]}"
    ensure_table(dynamodb, metrics_table, key=layout.KEY)
    with wallboard(emulator, metrics_table) as (url, process):
        status, built = board(url)
        assert status == 200 and built["tiles"] == [] and built["empty"] == f"no metrics yet in table {metrics_table}"
        dynamodb.delete_table(TableName=metrics_table)
        time.sleep(1.1)  # past the shared read's second
        status, failed = board(url)
        assert status == 503 and set(failed) == {"error", "table", "failedAtMs"}
        assert failed["error"].startswith(f"reading metrics table {metrics_table} failed: ")
        assert "ResourceNotFoundException" in failed["error"] and "Traceback" not in failed["error"]
        assert get(url)[0] == 200  # the page itself is still served: it shows the error
    stderr = process.stderr.read()
    assert f"reading metrics table {metrics_table} failed" in stderr and "Traceback" not in stderr


def test_a_table_that_does_not_exist_is_refused_at_start_in_one_line(emulator):
    result = subprocess.run([*PROCESSOR, "wallboard", "--port", "0", "--dynamodb-endpoint", emulator.endpoint,
                             "--metrics-table", "no-such-metrics"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert f"metrics table no-such-metrics does not exist at {emulator.endpoint}" in result.stderr


def test_ten_screens_at_once_cost_one_read():
    reads: list[float] = []
    gate = threading.Event()

    def read() -> dict[str, Any]:
        reads.append(time.monotonic())
        gate.wait(5)  # a slow read: every screen asks while it runs
        return {"tiles": [], "read": len(reads)}

    server = WallboardServer("127.0.0.1", 0, BoardSource(read, "metrics", max_age=60.0))
    with serving(server) as url, concurrent.futures.ThreadPoolExecutor(10) as pool:
        answers = [pool.submit(board, url) for _ in range(10)]
        time.sleep(0.5)
        gate.set()
        assert {json.dumps(answer.result()) for answer in answers} == {json.dumps((200, {"tiles": [], "read": 1}))}
    assert len(reads) == 1


def test_a_non_loopback_address_is_warned_about(emulator, stored):
    process = subprocess.Popen([*PROCESSOR, "wallboard", "--host", "0.0.0.0", "--port", "0", "--dynamodb-endpoint",
                                emulator.endpoint, "--metrics-table", stored[0]], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().startswith("wallboard: http://0.0.0.0:")
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=20) == 0
    assert "without authentication: put it behind an authenticating proxy" in process.stderr.read()


def test_the_page_ships_as_package_data():
    from importlib import resources

    static = resources.files("processor.wallboard").joinpath("static")
    assert {entry.name for entry in static.iterdir()} >= {"index.html", "wallboard.css", "wallboard.js"}
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert '"processor.wallboard" = ["static/*"]' in pyproject


def raw(url: str, request: bytes) -> bytes:
    """What the server answers to these bytes, as sent."""
    host, port = url.split("//")[1].rstrip("/").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as connection:
        connection.sendall(request)
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


def test_the_standard_librarys_own_errors_and_a_versionless_request_carry_status_and_security_headers():
    server = WallboardServer("127.0.0.1", 0, BoardSource(lambda: {"tiles": []}, "metrics"))
    with serving(server) as url:
        for request, status in ((b"FOO / HTTP/1.0\r\n\r\n", b"501"), (b"GET /" + b"x" * 70_000 + b" HTTP/1.0\r\n\r\n",
                                                                        b"414"), (b"GET /api/board\r\n\r\n", b"200")):
            head = raw(url, request).split(b"\r\n\r\n")[0]
            assert head.startswith(b"HTTP/1.0 " + status) and b"Content-Security-Policy: default-src 'self'" in head, head


@pytest.mark.parametrize("port", ["-1", "70000", "in use"])
def test_a_port_it_cannot_listen_on_is_refused_in_one_line(emulator, stored, port):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        if port == "in use":
            port = str(taken.getsockname()[1])
        result = subprocess.run([*PROCESSOR, "wallboard", "--port", port, "--dynamodb-endpoint", emulator.endpoint,
                                 "--metrics-table", stored[0]], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "--port" in result.stderr
