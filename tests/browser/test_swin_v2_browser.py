"""Browser test of the "Swin V2 position bias" tab: bias maps for a chosen window, the classifier panel,
and the message for a missing image."""
from __future__ import annotations

import re

import playwright  # noqa: F401  (a dependency: fail loudly if missing)
from playwright.sync_api import expect  # noqa: E402

from workbench.data import shapes  # noqa: E402

from .tabs import click_tab

TIMEOUT = 120_000  # ms: the first call loads the demo checkpoint on a busy 2-core machine


def _open_tab(page, hub_url):
    page.goto(hub_url)
    click_tab(page, "Swin V2 position bias")
    expect(page.locator("#swin_v2-bias-button")).to_be_visible(timeout=TIMEOUT)


def test_bias_maps_follow_the_window(page, hub_url):
    _open_tab(page, hub_url)
    window = page.locator("#swin_v2-window input[type='number']")
    window.fill("12")
    window.press("Enter")
    page.locator("#swin_v2-bias-button").click()
    text = page.locator("#swin_v2-bias-text")
    expect(text).to_contain_text("at window 12", timeout=TIMEOUT)
    lo, hi = (float(v) for v in re.findall(r"CPB bias from (-?\d+\.\d+) to (-?\d+\.\d+)", text.inner_text())[0])
    assert 0.0 <= lo <= hi <= 16.0          # 16·sigmoid(.) lies in (0, 16)
    for plot in ("#swin_v2-bias-plot", "#swin_v2-query-plot", "#swin_v2-v1-plot"):
        expect(page.locator(f"{plot} .js-plotly-plot")).to_be_visible(timeout=TIMEOUT)
    expect(page.locator("#swin_v2-bias-plot .js-plotly-plot .gtitle")).to_contain_text("window 12", timeout=TIMEOUT)
    expect(page.locator("#swin_v2-query-plot .js-plotly-plot .gtitle")).to_contain_text("12x12", timeout=TIMEOUT)


def test_classify_a_shapes_sample(page, hub_url):
    _open_tab(page, hub_url)
    page.locator("#swin_v2-pick").click()
    expect(page.locator("#swin_v2-image img")).to_be_visible(timeout=TIMEOUT)
    page.locator("#swin_v2-classify").click()
    verdict = page.locator("#swin_v2-verdict")
    expect(verdict).to_contain_text("%", timeout=TIMEOUT)
    assert any(c in verdict.inner_text() for c in shapes.CLASSES)
    expect(page.locator("#swin_v2-top5 .js-plotly-plot .barlayer .point")).to_have_count(5, timeout=TIMEOUT)


def test_missing_image_shows_a_message_and_clears_the_result(page, hub_url):
    _open_tab(page, hub_url)
    expect(page.locator("#swin_v2-top5 .js-plotly-plot")).to_be_visible(timeout=TIMEOUT)   # content on load
    page.locator("#swin_v2-image").get_by_role("button", name=re.compile("Remove Image|Clear")).first.click()
    page.locator("#swin_v2-classify").click()
    verdict = page.locator("#swin_v2-verdict")
    expect(verdict).to_contain_text("Please choose or upload an image first.", timeout=TIMEOUT)
    expect(page.locator("#swin_v2-top5 .js-plotly-plot")).to_have_count(0, timeout=TIMEOUT)
    expect(page.get_by_text("Error", exact=True).filter(visible=True)).to_have_count(0)
