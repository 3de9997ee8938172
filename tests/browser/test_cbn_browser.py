"""Browser test of the "CBN statistics" tab: the recorded run, a short live run with streamed updates,
and the message for a channel the layer does not have."""
from __future__ import annotations

import playwright  # noqa: F401  (a dependency: fail loudly if missing)
from playwright.sync_api import expect  # noqa: E402

from .tabs import click_tab

TIMEOUT = 180_000  # ms: a live run trains a small network on a busy 2-core machine


def _open_tab(page, hub_url):
    page.goto(hub_url)
    click_tab(page, "CBN statistics")
    expect(page.locator("#cbn-replay")).to_be_visible(timeout=TIMEOUT)


def _set_number(page, elem_id, value):
    box = page.locator(f"#{elem_id} input[type='number']")
    box.fill(str(value))
    box.press("Enter")


def test_replay_shows_the_recorded_run(page, hub_url):
    from workbench.demos import cbn as demo

    layer = demo.recorded()["config"]["layer"]
    _open_tab(page, hub_url)
    page.locator("#cbn-replay").click()
    summary = page.locator("#cbn-summary")
    expect(summary).to_contain_text("compensated", timeout=TIMEOUT)
    expect(summary).to_contain_text(layer, timeout=TIMEOUT)
    # two panels (μ, σ²) × (4 lines + 2 error bands)
    expect(page.locator("#cbn-traj .js-plotly-plot .scatterlayer .trace")).to_have_count(12, timeout=TIMEOUT)
    expect(page.locator("#cbn-error .js-plotly-plot .scatterlayer .trace")).to_have_count(4, timeout=TIMEOUT)
    expect(page.locator("#cbn-loss .js-plotly-plot")).to_be_visible(timeout=TIMEOUT)


def test_live_run_streams_updates(page, hub_url):
    """A live run with a batch of 6 split into statistics groups: the group-size control offers only the sizes
    that divide the batch (1, 2, 3 and the whole batch), and the summary names the chosen split."""
    _open_tab(page, hub_url)
    _set_number(page, "cbn-batch", 6)
    page.locator("#cbn-stat-batch input").click()
    options = page.get_by_role("option")
    expect(options).to_have_count(4, timeout=TIMEOUT)
    texts = [t.replace("✓", "").strip() for t in options.all_inner_texts()]   # the chosen one has a check mark
    assert texts == ["1", "2", "3", "whole batch"]
    page.get_by_role("option", name="2", exact=True).click()
    _set_number(page, "cbn-window", 3)
    _set_number(page, "cbn-steps", 20)
    page.locator("#cbn-layer input").fill("stem")
    page.locator("#cbn-layer input").press("Enter")
    page.locator("#cbn-live").click()
    summary = page.locator("#cbn-summary")
    expect(summary).to_contain_text("batch 6 in statistics groups of 2 images", timeout=TIMEOUT)
    expect(summary).to_contain_text("window 3", timeout=TIMEOUT)
    expect(summary).to_contain_text("20 steps", timeout=TIMEOUT)
    expect(summary).to_contain_text("layer stem", timeout=TIMEOUT)
    expect(page.locator("#cbn-traj .js-plotly-plot .scatterlayer .trace")).to_have_count(12, timeout=TIMEOUT)


def test_channel_slider_follows_the_layer(page, hub_url):
    from workbench.demos import cbn as demo

    _open_tab(page, hub_url)
    channel = page.locator("#cbn-channel input[type='number']")
    expect(channel).to_have_attribute("max", str(demo.channels("blocks.1.conv1") - 1), timeout=TIMEOUT)
    page.locator("#cbn-layer input").fill("blocks.2.conv1")
    page.locator("#cbn-layer input").press("Enter")
    expect(channel).to_have_attribute("max", str(demo.channels("blocks.2.conv1") - 1), timeout=TIMEOUT)
    page.locator("#cbn-layer input").fill("stem")
    page.locator("#cbn-layer input").press("Enter")
    expect(channel).to_have_attribute("max", str(demo.channels("stem") - 1), timeout=TIMEOUT)
