"""Browser test of the "Balanced sparsity" tab: moving the sparsity slider redraws the pruning patterns,
and a live measurement draws the speed chart."""
from __future__ import annotations

import playwright  # noqa: F401  (a dependency: fail loudly if missing)
from playwright.sync_api import expect  # noqa: E402

from .tabs import click_tab

TIMEOUT = 180_000


def _open(page, hub_url):
    page.goto(hub_url)
    click_tab(page, "Balanced sparsity")
    expect(page.locator("#sparse-pattern-summary")).to_contain_text("balanced", timeout=TIMEOUT)


def test_sparsity_slider_changes_the_pattern(page, hub_url):
    _open(page, hub_url)
    summary = page.locator("#sparse-pattern-summary")
    # 90% of a bank of 32: 3 kept in every bank, row work max/mean exactly 1
    expect(summary.get_by_role("row", name="balanced 9.38% 1.00")).to_be_visible(timeout=TIMEOUT)
    expect(page.locator("#sparse-pattern-plot .js-plotly-plot")).to_be_visible(timeout=TIMEOUT)
    box = page.locator("#sparse-sparsity input[type='number']")
    box.fill("0.5")
    box.press("Enter")
    expect(summary.get_by_role("row", name="balanced 50.00% 1.00")).to_be_visible(timeout=TIMEOUT)
    expect(page.locator("#sparse-pattern-plot")).to_contain_text("kept weights at 50.0%", timeout=TIMEOUT)


def test_live_measurement_and_sizes_within_the_live_limit(page, hub_url):
    """A live measurement draws the table and the chart; the size control offers only sizes the live measurement
    accepts (larger ones are refused by the function, tested in test_sparse_app)."""
    from workbench.demos import sparse as demo

    _open(page, hub_url)
    click_tab(page, "Speed", exact=True)
    page.locator("#sparse-size input").click()
    options = page.get_by_role("option")
    expect(options).to_have_count(len(demo.SIZES))
    assert [int(t.split()[-1]) for t in options.all_inner_texts()] == list(demo.SIZES)
    page.get_by_role("option", name="256", exact=True).click()
    page.locator("#sparse-measure").click()
    expect(page.locator("#sparse-speed-table").get_by_role("row").filter(has_text="0.950")).to_be_visible(timeout=TIMEOUT)
    expect(page.locator("#sparse-speed-plot .js-plotly-plot .scatterlayer .trace").first).to_be_visible(timeout=TIMEOUT)
    # the crossover map of the packaged GPU table, picked by the device radio
    page.locator("#sparse-crossover-device").get_by_label("cuda").check()
    expect(page.locator("#sparse-crossover-text")).to_contain_text("NVIDIA H200", timeout=TIMEOUT)
