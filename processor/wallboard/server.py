"""The wallboard's web server: the page, its two assets and `GET /api/board`; nothing else.

Standard library only (`ThreadingHTTPServer`): a wall of screens polling one small JSON needs no
framework. Read-only by construction: the one thing it does with DynamoDB is `MetricsReader`'s
BatchGetItems. Every screen shares one read per second (`BoardSource`), so ten wallboards cost what
one does, and a read is the current interval and the gauges alone, the read `processor queues`
makes: the trend's past intervals, which only late events change, are kept and re-read one at a
time (`BoardReader`). A failed read is a 503 with a one-line message (no traceback, no item values)
and a log line on stderr; the page keeps its last good tiles under a stale-data banner.
"""
from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import orjson

from processor.analytics.contribution import QUEUE
from processor.analytics.reader import MetricsReader
from processor.cli.queues import WATCH_ERRORS, View, failure_text, read_view
from processor.config import Settings
from processor.wallboard.board import TREND_INTERVALS, build_board, trend_window

log = logging.getLogger("processor.wallboard")

#: what a read may fail with and the server lives through: the reader's own (DynamoDB, network,
#: retries given up) and a refusal such as metrics written with another interval width
READ_ERRORS = (*WATCH_ERRORS, ValueError)
#: path -> (file in static/, content type): everything the server serves besides the board
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/wallboard.css": ("wallboard.css", "text/css; charset=utf-8"),
    "/wallboard.js": ("wallboard.js", "text/javascript; charset=utf-8"),
}
BOARD_PATH = "/api/board"
#: on every response: nothing but this origin's own files, no framing, no sniffing, no referrer
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                                "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class BoardReader:
    """Reads a board: each call the current interval and the gauges (`read_view`, as `processor
    queues` reads them); the trend's past intervals once when they enter its window, then again
    one per call when older than `past_max_age` (a late event corrects a past interval). So a
    call costs about one interval's read, not `trend` of them."""

    def __init__(self, reader: MetricsReader, settings: Settings, table: str, trend: int = TREND_INTERVALS,
                 past_max_age: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self._reader, self._settings, self._table, self._trend = reader, settings, table, trend
        self._past_max_age, self._clock = past_max_age, clock
        self._past: dict[str, tuple[float, list[dict[str, Any]]]] = {}  # interval -> (read at, its queue rows)

    def __call__(self) -> dict[str, Any]:
        view = read_view(self._reader, self._table, None, 1)
        if view.rows and view.intervals:
            window = trend_window(view.intervals[-1], self._trend, self._settings.interval_minutes)[:-1]
            view = View(view.intervals, view.rows + self._past_rows(window))
        return build_board(view, self._settings, self._table, int(time.time() * 1000), self._trend)

    def _past_rows(self, window: list[str]) -> list[dict[str, Any]]:
        now = self._clock()
        self._past = {interval: kept for interval, kept in self._past.items() if interval in window}
        due = [interval for interval in window if interval not in self._past]
        if not due and window:
            oldest = min(window, key=lambda interval: self._past[interval][0])
            due = [oldest] if now - self._past[oldest][0] >= self._past_max_age else []
        if due:
            rows = self._reader.rows(due, gauges=False)
            for interval in due:
                self._past[interval] = (now, [row for row in rows if row.get("kind") == QUEUE
                                              and row.get("interval") == interval])
        return [row for interval in window for row in self._past[interval][1]]


#: a read is repeated no sooner than this many times its own duration: a slow store (an emulator,
#: a throttled table) is read at most a quarter of the time, whatever the screens ask
PACE = 4.0
#: ... but never held longer than this: a read stuck for minutes (retries against an outage) must
#: not keep every screen on an old board, or on the outage's 503, for four times as long
MAX_HOLD_SECONDS = 5.0


class BoardSource:
    """The board as of at most `max_age` seconds ago (up to `MAX_HOLD_SECONDS` after a slow read: `PACE`), whatever
    the number of screens: the first request after that reads (the others wait for it), the rest
    are served the same answer. A failure is remembered as long, so many screens do not turn one
    outage into a storm of reads."""

    def __init__(self, read: Callable[[], dict[str, Any]], table: str, max_age: float = 1.0,
                 clock: Callable[[], float] = time.monotonic):
        self._read, self._table, self._max_age, self._clock = read, table, max_age, clock
        self._lock = threading.Lock()
        self._at, self._hold = -math.inf, max_age
        self._answer: tuple[int, dict[str, Any]] = (503, {})

    def board(self) -> tuple[int, dict[str, Any]]:
        """(200, the board) or (503, {"error": why, "table": …}) when the read failed."""
        with self._lock:
            if self._clock() - self._at >= self._hold:
                started = self._clock()
                self._answer = self._fresh()
                self._at = self._clock()
                self._hold = min(MAX_HOLD_SECONDS, max(self._max_age, PACE * (self._at - started)))
            return self._answer

    def _fresh(self) -> tuple[int, dict[str, Any]]:
        try:
            return 200, self._read()
        except READ_ERRORS as error:
            message = f"reading metrics table {self._table} failed: {failure_text(error)}"
            log.warning("%s", message)
            return 503, {"error": message, "table": self._table, "failedAtMs": int(time.time() * 1000)}


class Handler(BaseHTTPRequestHandler):
    """GET of the page, its assets and the board; any other method 405, any other path 404."""

    server: WallboardServer
    #: a request line without a version is answered as HTTP/1.0 (status line and headers), not 0.9
    default_request_version = "HTTP/1.0"
    #: a client that sends nothing for this long is dropped (half-sent requests hold a thread each)
    timeout = 30

    def version_string(self) -> str:
        return "wallboard"  # no Python version on the wire

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == BOARD_PATH:
            status, board = self.server.source.board()
            self._send(status, "application/json", orjson.dumps(board), cache="no-store")
        elif path in ASSETS:
            name, content_type = ASSETS[path]
            self._send(200, content_type, self.server.assets[name], cache="no-cache")
        else:
            self._send(404, "application/json", b'{"error": "not found"}', cache="no-store")

    def refuse(self) -> None:
        self._send(405, "application/json", b'{"error": "only GET"}', cache="no-store", Allow="GET")

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_TRACE = do_CONNECT = refuse

    def send_response(self, code: int, message: str | None = None) -> None:
        """Every response, the standard library's own errors (400, 414, 501...) included, carries the
        security headers."""
        super().send_response(code, message)
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)

    def _send(self, status: int, content_type: str, body: bytes, cache: str, **headers: str) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": content_type, "Content-Length": str(len(body)), "Cache-Control": cache,
                            **headers}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Access lines only at debug level: every screen asks every 2 s."""
        log.debug("%s %s", self.address_string(), format % args)


class WallboardServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, port: int, source: BoardSource):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.source = source
        self.assets = {name: resources.files(__package__).joinpath("static", name).read_bytes()
                       for name, _ in ASSETS.values()}
        super().__init__((host, port), Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line, no traceback: a screen that gave up waiting (its fetch timed out) is routine."""
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError):
            log.debug("%s went away: %s", client_address[0], failure_text(error))
        else:
            log.warning("a request from %s failed: %s", client_address[0], failure_text(error))

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/"

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.server_address[0]).is_loopback


@contextlib.contextmanager
def serving(server: WallboardServer) -> Iterator[str]:
    """Serve in a background thread (the demo, the tests); yields the URL, stops on exit."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="wallboard",
                              daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
