"""The wallboard in a real headless browser (Debian's Chromium driven by playwright; `./dev test`
installs it): the page loads with no console errors and its tiles show what `processor queues
--json` prints for the same table; events processed while it is open move the tiles without a
reload; an empty table shows an empty state; a DynamoDB error shows a stale-data banner over the
last good tiles, not a blank page. One browser for the module; each test its own `processor
wallboard` and tables."""
from __future__ import annotations

import math
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from devstack.browser import VIEWPORT, chromium, unavailable
from devstack.storm import StormShape, write_storm
from processor.analytics import layout
from processor.dynamodb.client import ensure_table
from tests.server.test_queues_cli import processor, replayed
from tests.server.test_wallboard import queues_json, wallboard

if unavailable():
    pytest.skip(f"no headless browser: {unavailable()}", allow_module_level=True)

NAME = "Sales <b>& billing</b>"  # shown as text, never as markup
TARGET = 50.0  # one queue's own service-level target (the others: 80 %, amber 10 points below)
#: what the page shows of every tile, as it shows it (its own script, read back from the DOM)
READ_TILES = """() => Object.fromEntries([...document.querySelectorAll('#tiles .tile')].map((tile) => [
  tile.dataset.key, {
    name: tile.querySelector('.name').textContent,
    level: [...tile.classList].filter((name) => name !== 'tile').join(' '),
    fields: Object.fromEntries([...tile.querySelectorAll('[data-field]')].map((e) => [e.dataset.field, e.textContent])),
  }]))"""


def _round(value: float) -> int:
    return math.floor(value + 0.5)  # JavaScript's Math.round, not Python's round-half-even


def percent(value: float | None) -> str:
    return "-" if value is None else f"{_round(value)}%"


def duration(ms: float | None) -> str:
    if ms is None:
        return "-"
    seconds = _round(ms / 1000)
    return f"{seconds // 60}:{seconds % 60:02d}"


def expected_tiles(lines: list[dict[str, Any]], named: str = "", targeted: str = "") -> dict[str, dict[str, Any]]:
    """What each tile must show for these `processor queues --json` lines (independently of the
    board), `named` being called NAME and `targeted` having the TARGET."""
    tiles = {}
    for line in lines:
        target = TARGET if line["queueId"] == targeted else 80.0
        sl = line["serviceLevelPct"]
        level = "none" if sl is None else "green" if sl >= target else "amber" if sl >= target - 10 else "red"
        tiles[f"{line['queueId']}|{line['mediaType']}"] = {
            "name": NAME if line["queueId"] == named else line["queueId"], "level": level,
            "fields": {**{name: str(line[name]) for name in ("oWaiting", "oInteracting", "nOffered", "nAnswered",
                                                              "nAbandon")},
                       "serviceLevelPct": percent(sl), "asaMs": duration(line["asaMs"]),
                       "ahtMs": duration(line["ahtMs"])}}
    return tiles


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as running:
        yield running


class Page:
    """A browser tab on the wallboard, recording console errors, uncaught exceptions and loads."""

    def __init__(self, browser: Any, url: str):
        self.page = browser.new_page(viewport=VIEWPORT)
        self.errors: list[str] = []
        self.loads = 0
        self.page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        self.page.on("pageerror", lambda error: self.errors.append(f"uncaught: {error}"))
        self.page.on("load", lambda *_: setattr(self, "loads", self.loads + 1))
        self.page.goto(url)

    def tiles(self) -> dict[str, dict[str, Any]]:
        return self.page.evaluate(READ_TILES)

    def until(self, condition: Callable[[], bool], timeout: float = 30.0) -> bool:
        """Whether `condition` holds within `timeout` (the page polls every 2 s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return True
            time.sleep(0.25)
        return condition()


@pytest.fixture
def tab(browser) -> Iterator[Callable[[str], Page]]:
    opened: list[Page] = []

    def open_tab(url: str) -> Page:
        opened.append(Page(browser, url))
        return opened[-1]

    yield open_tab
    for page in opened:
        page.page.close()


def test_the_page_loads_without_console_errors_and_its_tiles_show_processor_queues_json(emulator, tmp_path, tab):
    metrics_table, _ = replayed(emulator, tmp_path, conversations=120, keep=0.85)
    lines = queues_json(emulator, metrics_table)
    named = lines[0]["queueId"]
    targeted = next(line["queueId"] for line in lines if line["serviceLevelPct"] is not None and line["queueId"] != named)
    settings = tmp_path / "settings.toml"
    settings.write_text(f'[queues]\n"{named}" = "{NAME}"\n[analytics.service_level_target_pct_by_queue]\n'
                        f'"{targeted}" = {TARGET}\n')
    with wallboard(emulator, metrics_table, "--config", str(settings)) as (url, _):
        page = tab(url)
        page.page.wait_for_selector("#tiles .tile")
        want = expected_tiles(lines, named, targeted)
        assert page.until(lambda: page.tiles() == want), (page.tiles(), want)
        assert {tile["level"] for tile in want.values()} >= {"green", "red"}  # the colours are exercised
        assert page.page.locator("#tiles .tile").first.is_visible()
        assert page.page.is_hidden("#stale") and page.page.is_hidden("#empty")
        assert lines[0]["intervals"][0][11:16] in page.page.inner_text("#interval")
        assert page.page.inner_text("#table") == metrics_table
        assert page.page.locator("#tiles .tile b").count() == 0  # the name is text
        time.sleep(2.5)  # a refresh or two: still no errors
        assert page.errors == [] and page.loads == 1


def storm_halves(directory: Path, conversations: int) -> tuple[Path, Path]:
    storm = directory / "storm.jsonl"
    write_storm(str(storm), StormShape(conversations=conversations, arrivals_per_second=0.05, seed=11))
    lines = storm.read_text().splitlines(keepends=True)
    first, second = directory / "first.jsonl", directory / "second.jsonl"
    first.write_text("".join(lines[:len(lines) // 2]))
    second.write_text("".join(lines[len(lines) // 2:]))
    return first, second


def shown_fields(tiles: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    return {key: tile["fields"] for key, tile in tiles.items()}


def test_events_processed_while_the_page_is_open_move_the_tiles_without_a_reload(emulator, tmp_path, tab):
    first, second = storm_halves(tmp_path, conversations=80)
    suffix = uuid.uuid4().hex[:8]
    tables = ["--dynamodb-endpoint", emulator.endpoint, "--create-table", "--table", f"t-{suffix}",
              "--metrics-table", f"m-{suffix}", "--shards", "2", "--no-progress"]
    processor("replay", str(first), *tables)
    with wallboard(emulator, f"m-{suffix}") as (url, _):
        page = tab(url)
        page.page.wait_for_selector("#tiles .tile")
        page.page.evaluate("window.wallboardMarker = 'the same page'")
        before = shown_fields(page.tiles())
        processor("replay", str(second), *tables)
        want = shown_fields(expected_tiles(queues_json(emulator, f"m-{suffix}")))
        assert before != want  # the new events changed what `processor queues` shows ...
        assert page.until(lambda: shown_fields(page.tiles()) == want), (shown_fields(page.tiles()), want)  # ... and the page
        assert page.page.evaluate("window.wallboardMarker") == "the same page" and page.loads == 1
        assert page.errors == []


def test_an_empty_table_shows_an_empty_state(emulator, dynamodb, tab):
    metrics_table = f"m-{uuid.uuid4().hex[:8]}"
    ensure_table(dynamodb, metrics_table, key=layout.KEY)
    with wallboard(emulator, metrics_table) as (url, _):
        page = tab(url)
        page.page.wait_for_selector("#empty", state="visible")
        assert page.page.inner_text("#empty") == f"no metrics yet in table {metrics_table}"
        assert page.tiles() == {} and page.page.is_hidden("#stale")
        assert page.errors == []


def test_a_dynamodb_error_shows_a_stale_banner_over_the_last_tiles_not_a_blank_page(emulator, dynamodb, tmp_path, tab):
    metrics_table, _ = replayed(emulator, tmp_path, conversations=20)
    with wallboard(emulator, metrics_table) as (url, process):
        page = tab(url)
        page.page.wait_for_selector("#tiles .tile")
        good = page.tiles()
        dynamodb.delete_table(TableName=metrics_table)  # every read fails from now on
        page.page.wait_for_selector("#stale", state="visible", timeout=15_000)
        banner = page.page.inner_text("#stale")
        assert banner.startswith("Stale data: the board could not be refreshed (reading metrics table "), banner
        assert "ResourceNotFoundException" in banner and "Showing the read of" in banner and "s ago" in banner
        assert page.tiles() == good and page.page.locator("#tiles .tile").first.is_visible()
        assert page.page.evaluate("document.body.classList.contains('stale-data')")
        process.terminate()  # the wallboard itself gone: still the banner, still the tiles
        process.wait(timeout=20)
        assert page.until(lambda: "does not answer" in page.page.inner_text("#stale"), timeout=15)
        assert page.tiles() == good and page.loads == 1
