"""`processor queues`: the operator's view of the queue metrics in DynamoDB, per queue and media
type: offered, answered, abandoned, their ratios (`processor.analytics.ratios`) and the calls
waiting and interacting now.

The current interval is the newest one that has metrics (stream time, not the clock: a replay of
last week shows last week). `queue_table` is the table the demo prints too.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence

from botocore.exceptions import BotoCoreError, ClientError
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from processor.adapters import parse_time_ms
from processor.analytics.contribution import AnalyticsSettings, interval_text
from processor.analytics.ratios import queue_totals
from processor.analytics.reader import QUEUE_VIEW_KINDS, MetricsReader
from processor.config import Settings, load_settings
from processor.dynamodb.client import data_plane_for, dynamodb_client, table_exists
from processor.dynamodb.retry import GaveUp

DESCRIPTION = ("per queue and media type, from the metrics table: offered, answered, abandoned, answer %, "
               "abandon %, ASA, service level, AHT, and the calls waiting and interacting now")
DEFAULT_WATCH_SECONDS = 2.0
#: what a refresh under --watch may fail with and live through (the previous read stays on screen)
WATCH_ERRORS = (BotoCoreError, ClientError, GaveUp, OSError)
#: a terminal narrower than this still gets whole tables when the output is not a terminal
PIPE_WIDTH = 160


def _count(value: int) -> str:
    return f"{value:,}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _seconds(value_ms: float | None) -> str:
    return "-" if value_ms is None else f"{value_ms / 1000:.1f}"


#: the table's columns: heading -> how a total (`queue_totals`) shows in it
COLUMNS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "queue": lambda total: str(total["queueId"]),
    "media": lambda total: str(total["mediaType"]),
    "offered": lambda total: _count(total["nOffered"]),
    "answered": lambda total: _count(total["nAnswered"]),
    "abandoned": lambda total: _count(total["nAbandon"]),
    "answer %": lambda total: _percent(total["answerPct"]),
    "abandon %": lambda total: _percent(total["abandonPct"]),
    "ASA s": lambda total: _seconds(total["asaMs"]),
    "service level %": lambda total: _percent(total["serviceLevelPct"]),
    "AHT s": lambda total: _seconds(total["ahtMs"]),
    "waiting now": lambda total: _count(total["oWaiting"]),
    "interacting now": lambda total: _count(total["oInteracting"]),
}
ALL_COLUMNS = tuple(COLUMNS)
#: the demo's summary: the figures a supervisor looks at first
SUMMARY_COLUMNS = ("queue", "media", "offered", "answered", "abandoned", "ASA s", "service level %", "AHT s",
                   "waiting now")
_TEXT_COLUMNS = ("queue", "media")


def queue_table(rows: Iterable[Mapping[str, Any]], title: str, columns: Sequence[str] = ALL_COLUMNS) -> Table:
    """A table of these metrics rows (`--export-metrics` form, as `MetricsReader.rows()` returns
    them: queue rows summed per queue and media type across their intervals, gauges joined, agent
    rows ignored), one line per (queueId, mediaType); `columns` picks and orders the columns (e.g.
    `SUMMARY_COLUMNS`)."""
    unknown = [name for name in columns if name not in COLUMNS]
    if unknown:
        raise ValueError(f"no such queue table column: {', '.join(unknown)} (known: {', '.join(COLUMNS)})")
    table = Table(title=title, title_justify="left")
    for name in columns:
        if name in _TEXT_COLUMNS:
            table.add_column(name, no_wrap=True)
        else:
            table.add_column(name, justify="right")
    for total in queue_totals(rows):
        table.add_row(*(COLUMNS[name](total) for name in columns))
    return table


# ---- the command ---------------------------------------------------------------------------------


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("queues", help=DESCRIPTION.replace("%", "%%"),  # argparse %-formats help
                                 description=DESCRIPTION + ". Default: the current interval, the newest one that "
                                 "has metrics (stream time).")
    add_table_arguments(parser)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--interval", metavar="ISO", help="this interval, by its start in UTC, e.g. "
                       "2026-11-20T08:30:00Z (aligned to interval_minutes)")
    which.add_argument("--last", type=int, metavar="N", help="the sum over the N newest intervals that have "
                       "metrics (not necessarily consecutive)")
    parser.add_argument("--watch", nargs="?", type=float, const=DEFAULT_WATCH_SECONDS, metavar="SECONDS",
                        help=f"redraw every SECONDS (default {DEFAULT_WATCH_SECONDS:g}) until Ctrl-C; a failed "
                        "read keeps the last one on screen, marked stale")
    parser.add_argument("--json", action="store_true", help="one JSON object per line per queue and media type: "
                        "the summed metrics (times in ms), the gauges, the ratios and the intervals covered")
    parser.set_defaults(run=run)


def add_table_arguments(parser: argparse.ArgumentParser,
                        config: str = "settings TOML (metrics table, endpoint, interval_minutes)") -> None:
    """The options that say which metrics table to read (`open_reader`), for every reader command."""
    parser.add_argument("--config", metavar="FILE", help=config)
    parser.add_argument("--dynamodb-endpoint", metavar="URL", help="DynamoDB endpoint (default from settings; "
                        "none: AWS, region and credentials from the standard chain)")
    parser.add_argument("--metrics-table", metavar="NAME", help="metrics table (default from settings: "
                        "conversation-metrics)")


def open_reader(args: argparse.Namespace, settings: Settings) -> tuple[MetricsReader, str]:
    """A reader of the metrics table the options name, and its name; refused at once when the
    table is not there (a wrong endpoint or name says so, instead of showing no metrics)."""
    endpoint = args.dynamodb_endpoint or settings.endpoint
    table = args.metrics_table or settings.metrics_table
    client = dynamodb_client(endpoint)
    if not table_exists(client, table):
        raise ValueError(f"metrics table {table} does not exist{f' at {endpoint}' if endpoint else ''}: check "
                         "--metrics-table (or [dynamodb] metrics_table in the settings)")
    return MetricsReader(data_plane_for(client), table, settings.interval_minutes, kinds=QUEUE_VIEW_KINDS), table


def failure_text(error: BaseException) -> str:
    """A failed read in one line for the operator: the error's type and message, no traceback."""
    return " ".join(f"{type(error).__name__}: {error}".split())[:300]


@dataclass
class View:
    """One read: the metrics rows of the intervals covered, or why there are none."""

    intervals: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    empty: str | None = None  # the message when `rows` is empty


def aligned_interval(text: str, interval_minutes: int) -> str:
    """The interval starting at `text` (ISO 8601; UTC unless it says otherwise) in the metrics' own
    form, `2026-11-20T08:30:00Z`; refused unless it is the start of an interval."""
    millis = parse_time_ms(text) if len(text) > 10 else None  # a date alone is no interval's start
    if millis is None:
        raise ValueError(f"--interval {text!r} is not a time: give the interval's start in UTC, "
                         "e.g. 2026-11-20T08:30:00Z")
    start = AnalyticsSettings(interval_minutes).interval_of(millis)
    if millis != start:
        raise ValueError(f"--interval {text} is not the start of a {interval_minutes}-minute interval (intervals "
                         f"are aligned to the epoch, UTC): the interval holding it starts at {interval_text(start)}")
    return interval_text(millis)


def read_view(reader: MetricsReader, table: str, interval: str | None, last: int) -> View:
    """The rows `processor queues` shows: one interval, or the `last` newest that have metrics."""
    if interval is not None:
        rows = reader.rows([interval])
        if rows:
            return View([interval], rows)
        newest = reader.newest_intervals(1)
        if not newest:
            return View([interval], empty=f"no metrics yet in table {table}")
        return View([interval], empty=f"no metrics for interval {interval} in table {table} (the newest interval "
                    f"with metrics: {newest[0]})")
    intervals, rows = reader.newest(last)  # no intervals: the gauges alone, if any
    if rows:
        return View(intervals, rows)
    if not intervals:
        return View(intervals, empty=f"no metrics yet in table {table}")
    # the directory lists partials for these intervals, and they sum to nothing (written later, or
    # figures a late event moved to another interval)
    return View(intervals, empty=f"no metrics in table {table} for {', '.join(intervals)}: the partials listed "
                "there sum to zero")


def describe(intervals: list[str], interval_minutes: int, last: int | None) -> str:
    """What a view covers, for its title."""
    if not intervals:
        return "no interval has metrics"
    if last is None:
        return f"interval {intervals[0]} ({interval_minutes} min)"
    if len(intervals) == 1:
        which = "the newest interval with metrics" + (f" (the only one; {last} asked)" if last > 1 else "")
        return f"{which}, {intervals[0]} ({interval_minutes} min)"
    which = f"the {len(intervals)} newest intervals with metrics" + (
        f" (all there are; {last} asked)" if len(intervals) < last else "")
    return f"{which}, {intervals[0]} to {intervals[-1]} ({interval_minutes} min each)"


def run(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    last = args.last
    if last is not None and last < 1:
        raise ValueError(f"--last must be at least 1: {last}")
    interval = aligned_interval(args.interval, settings.interval_minutes) if args.interval is not None else None
    if args.watch is not None and not 0 < args.watch < math.inf:
        raise ValueError(f"--watch SECONDS must be a finite number more than 0: {args.watch:g}")
    if args.watch is not None and args.json:
        raise ValueError("--watch redraws a table: it does not go with --json (run --json on a timer instead)")
    reader, table = open_reader(args, settings)

    def read() -> View:
        return read_view(reader, table, interval, last or 1)

    def title(view: View) -> str:
        return f"queues: table {table}, {describe(view.intervals, settings.interval_minutes, last)}"

    if args.json:
        return print_json(read(), settings.interval_minutes)
    console = Console()
    if not console.is_terminal:
        console.width = max(console.width, PIPE_WIDTH)
    if args.watch is None:
        console.print(render(read(), title))
        return 0
    return watch(console, read, title, args.watch)


def print_json(view: View, interval_minutes: int) -> int:
    if not view.rows:
        print(view.empty, file=sys.stderr)  # stdout stays JSON lines: none
        return 0
    for total in queue_totals(view.rows, view.intervals):
        print(json.dumps({**total, "intervalMinutes": interval_minutes}, ensure_ascii=False))
    return 0


def render(view: View, title: Callable[[View], str]) -> RenderableType:
    if not view.rows:
        return Text(view.empty or "no metrics")
    table = queue_table(view.rows, title(view))
    table.caption = "waiting and interacting: now; times in seconds"
    return table


def _clock(moment: float) -> str:
    return datetime.fromtimestamp(moment, tz=timezone.utc).strftime("%H:%M:%S UTC")


def watch(console: Console, read: Callable[[], View], title: Callable[[View], str], seconds: float) -> int:
    """Redraw in place every `seconds` until Ctrl-C (exit 0). The first read must succeed (a wrong
    endpoint or table says so at once); a later failed read leaves the last good one on screen
    under a stale-data line, and the next refresh tries again."""
    from rich.live import Live

    try:
        view, read_at = read(), time.time()

        def screen(failure: str | None = None) -> RenderableType:
            header = Text(f"read {_clock(read_at)}, every {seconds:g} s; Ctrl-C to stop", style="dim")
            parts: list[RenderableType] = [header, render(view, title)]
            if failure is not None:
                parts.append(Text(f"STALE: the read at {_clock(time.time())} failed ({failure}); showing the read "
                                  f"of {_clock(read_at)}, {time.time() - read_at:.0f} s old", style="bold yellow"))
            return Group(*parts)

        with Live(screen(), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(seconds)
                failure = None
                try:
                    view, read_at = read(), time.time()
                except WATCH_ERRORS as error:
                    failure = failure_text(error)
                live.update(screen(failure), refresh=True)
    except KeyboardInterrupt:
        return 0
