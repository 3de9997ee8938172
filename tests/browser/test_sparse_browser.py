"""Browser test of the "Sparse speedup dashboard" tab: moving the sparsity slider redraws the pruning patterns,
and a live measurement draws the speed chart."""
from __future__ import annotations

import playwright  # noqa: F401  (a dependency: fail loudly if missing)
from playwright.sync_api import expect  # noqa: E402

TIMEOUT = 180_000


def _open(page, hub_url):
    page.goto(hub_url)
    page.get_by_role("tab", name="Sparse speedup dashboard").click()
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
    expect(page.locator("#sparse-pattern-plot")).to_contain_text("50.0% target sparsity", timeout=TIMEOUT)


def test_live_measurement_and_refusal(page, hub_url):
    _open(page, hub_url)
    page.get_by_role("tab", name="Speed", exact=True).click()
    page.locator("#sparse-size").click()
    page.get_by_role("option", name="256", exact=True).click()
    page.locator("#sparse-measure").click()
    expect(page.locator("#sparse-speed-table").get_by_role("row").filter(has_text="0.950")).to_be_visible(timeout=TIMEOUT)
    expect(page.locator("#sparse-speed-plot .js-plotly-plot .scatterlayer .trace").first).to_be_visible(timeout=TIMEOUT)
    page.locator("#sparse-size").click()
    page.get_by_role("option", name="8192", exact=True).click()
    page.locator("#sparse-measure").click()
    expect(page.get_by_text("too large for a live measurement").first).to_be_visible(timeout=TIMEOUT)
