"""Headless Chromium (Debian's binary) driven by Playwright's Python package; never downloads a browser.

The ``page`` fixture records every request and fails the test if any goes to a non-loopback host.
"""
from __future__ import annotations

import os
import shutil
from urllib.parse import urlparse

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-browser")
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
ARGS = [
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]


@pytest.fixture(scope="session")
def browser():
    if CHROMIUM is None:
        pytest.fail("Chromium is not installed: `apt-get install -y chromium` (the test command does this)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    outside: list[str] = []

    def on_request(req):
        u = urlparse(req.url)
        if u.scheme in ("data", "blob", "about"):
            return
        if (u.hostname or "") not in LOOPBACK:
            outside.append(req.url)

    pg.on("request", on_request)
    yield pg
    context.close()
    assert not outside, f"the page requested non-loopback URLs: {outside[:5]}"


def open_tab(page, hub_url: str, title: str):
    """Open the hub and select the tab called ``title``."""
    page.goto(hub_url)
    page.get_by_text("Vision Workbench").first.wait_for()
    from .tabs import click_tab

    click_tab(page, title)
