"""Headless Chromium for the wallboard: the Debian package's browser driven by playwright (its
driver ships in the wheel; no browser is ever downloaded), for the browser tests and the README's
screenshot (`processor demo --wallboard-screenshot FILE`)."""
from __future__ import annotations

import contextlib
import importlib.util
import os
from typing import Any, Iterator

CHROMIUM = "/usr/bin/chromium"
#: a quiet, offline browser: no GPU, no sandbox (root in a container), no first-run, sync or updates
ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync")
VIEWPORT = {"width": 1600, "height": 1000}


def unavailable() -> str | None:
    """Why the browser cannot run here, or None."""
    if not os.access(CHROMIUM, os.X_OK):
        return (f"no Chromium at {CHROMIUM}: `./dev test` installs the Debian package where it is root with apt "
                "(else: apt-get install chromium)")
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is missing: it is in the test extra (./dev installs it)"
    return None


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (playwright `Browser`) with a fresh profile, closed on exit."""
    reason = unavailable()
    if reason:
        raise ValueError(reason)  # the command says it in one line
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=list(ARGS))
        try:
            yield browser
        finally:
            browser.close()


def screenshot(url: str, path: str, timeout: float = 120.0) -> None:
    """Save the wallboard at `url` as a PNG once its tiles are showing, fresh (no stale banner)."""
    with chromium() as browser:
        page = browser.new_page(viewport=VIEWPORT)
        page.goto(url)
        page.wait_for_selector("body:not(.stale-data) #tiles .tile", timeout=timeout * 1000)
        page.screenshot(path=path)
