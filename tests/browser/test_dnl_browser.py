"""Browser test of the "DNL attention maps" tab: clicking a point of the image moves the query and the maps."""
from __future__ import annotations

import pytest

from .tabs import click_tab

pytestmark = pytest.mark.browser


def _images(page):
    return page.eval_on_selector_all("#dnl-attention .js-plotly-plot image",
                                     "els => els.map(e => e.getAttribute('href') || e.getAttribute('xlink:href'))")


def test_click_moves_the_query_and_changes_the_maps(hub_url, page):
    from playwright.sync_api import expect

    page.goto(hub_url)
    click_tab(page, "DNL attention maps")
    page.locator("#dnl-attention .js-plotly-plot").wait_for(timeout=60_000)
    summary = page.locator("#dnl-summary")
    expect(summary).to_contain_text("row 44, col 46")  # the default query
    before = _images(page)
    assert len(before) == 4 and all(b and b.startswith("data:image/png") for b in before)

    img = page.locator("#dnl-image img")
    img.wait_for()
    box = img.bounding_box()
    # click a quarter of the way in: pixel ~(16, 16) of the 64 px model input, the top-left object's region
    img.click(position={"x": box["width"] * 0.25, "y": box["height"] * 0.25})
    expect(summary).not_to_contain_text("row 44, col 46", timeout=30_000)
    expect(summary).to_contain_text("row 1", timeout=30_000)
    page.wait_for_function(
        "old => { const els = [...document.querySelectorAll('#dnl-attention .js-plotly-plot image')];"
        " return els.length === 4 && (els[0].getAttribute('href') || els[0].getAttribute('xlink:href')) !== old; }",
        arg=before[0], timeout=30_000)
    after = _images(page)
    assert after[0] != before[0] and after[1] != before[1]  # both pairwise maps follow the query
    assert after[2] == before[2]  # the DNL unary map does not depend on the query

    # asking for an upload without a file shows a message on the summary line, not a traceback
    page.locator("#dnl-source input").fill("upload")
    page.keyboard.press("Enter")
    expect(summary).to_contain_text("Choose an image file to upload", timeout=30_000)
    expect(page.locator("#dnl-attention .js-plotly-plot")).to_have_count(0, timeout=30_000)
    expect(page.get_by_text("Error", exact=True).filter(visible=True)).to_have_count(0)
