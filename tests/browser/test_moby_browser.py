"""Browser test of the "MoBY embeddings" tab: pick a point, see its neighbours; re-roll the two views."""
from __future__ import annotations

import re

from playwright.sync_api import expect

from .tabs import click_tab

TIMEOUT = 120_000  # ms: first use loads the demo encoder and embeds the gallery on a busy 2-core machine


def _open_tab(page, hub_url):
    page.goto(hub_url)
    click_tab(page, "MoBY embeddings")
    expect(page.locator("#moby-map .js-plotly-plot")).to_be_visible(timeout=TIMEOUT)   # content on load


def test_pick_a_point_and_see_its_neighbours(page, hub_url):
    _open_tab(page, hub_url)
    point = page.locator("#moby-point input[type='number']")
    point.fill("5")
    point.blur()                          # the slider's release event shows the neighbours
    text = page.locator("#moby-neighbours-text")
    expect(text).to_contain_text("nearest: #", timeout=TIMEOUT)
    expect(page.locator("#moby-neighbours .js-plotly-plot").get_by_text("#5 ·")).to_be_visible(timeout=TIMEOUT)
    # eight neighbours (default k), each with a cosine similarity, the query itself excluded
    sims = re.findall(r"#(\d+) \w+ \((-?\d\.\d\d)\)", text.inner_text())
    assert len(sims) == 8 and all(i != "5" for i, _ in sims)
    values = [float(s) for _, s in sims]
    assert values == sorted(values, reverse=True)
    # the neighbour grid: the query + 8 images; the map is drawn with the selection ringed
    expect(page.locator("#moby-neighbours .js-plotly-plot")).to_be_visible(timeout=TIMEOUT)
    expect(page.locator("#moby-neighbours .js-plotly-plot .imagelayer image")).to_have_count(9, timeout=TIMEOUT)
    expect(page.locator("#moby-map .js-plotly-plot")).to_be_visible(timeout=TIMEOUT)
    assert page.locator("#moby-map .js-plotly-plot .legendtext", has_text="selected").count() == 1
    # the grid's titles (class, cosine similarity) do not run into each other in the half-width column
    boxes = page.locator("#moby-neighbours .js-plotly-plot g.annotation").evaluate_all(
        "els => els.map(e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })")
    assert len(boxes) == 9
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    expect(page.get_by_text("Error", exact=True).filter(visible=True)).to_have_count(0)


def test_point_slider_follows_the_gallery(page, hub_url):
    from workbench.demos import moby as demo

    _open_tab(page, hub_url)
    expect(page.locator("#moby-point input[type='number']")).to_have_attribute("max", str(demo.N - 1), timeout=TIMEOUT)


def test_reroll_changes_the_views(page, hub_url):
    _open_tab(page, hub_url)
    seed = page.locator("#moby-seed input")
    before = int(seed.input_value() or 0)
    page.locator("#moby-reroll").click()
    expect(seed).to_have_value(str(before + 1), timeout=TIMEOUT)
    expect(page.locator("#moby-views .js-plotly-plot .imagelayer image")).to_have_count(3, timeout=TIMEOUT)
