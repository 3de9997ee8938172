"""Browser test of the "iCAR zero-shot" tab: predict, edit a description in the class table, see the
probabilities change; a duplicate class name gives a message, not a traceback."""
from __future__ import annotations

import re

import playwright  # noqa: F401  (a dependency: fail loudly if missing)
from playwright.sync_api import expect  # noqa: E402

from .tabs import click_tab

TIMEOUT = 120_000  # ms: the first click loads the demo model and embeds the caption pool on a busy machine
RING_ROW = 7  # the default table lists shapes.CLASSES in order; ring is the eighth


def _open_tab(page, hub_url):
    page.goto(hub_url)
    click_tab(page, "iCAR zero-shot")
    expect(page.locator("#icar-predict")).to_be_visible(timeout=TIMEOUT)


def _ring_row(page, name: str):
    return page.locator("#icar-numbers tr", has_text=re.compile(rf"^\s*{name}\b")).first


def _probabilities(page, name: str) -> tuple[float, float]:
    cells = _ring_row(page, name).locator("td").all_inner_texts()
    return float(cells[1]), float(cells[2])


def _edit_cell(page, row: int, col: int, text: str):
    cell = page.locator(f'#icar-classes [data-testid="cell-{row}-{col}"]')
    cell.dblclick()
    # the editor appears a moment after the double click: keys sent before it has focus are lost (seen under load)
    editor = cell.locator("input, textarea").first
    expect(editor).to_be_focused(timeout=TIMEOUT)
    page.keyboard.press("Control+a")
    page.keyboard.type(text)
    page.keyboard.press("Enter")
    expect(page.locator(f'#icar-classes [data-testid="cell-{row}-{col}"]')).to_contain_text(text)


def test_editing_a_description_changes_the_probabilities(page, hub_url):
    _open_tab(page, hub_url)
    page.locator("#icar-predict").click()
    expect(page.locator("#icar-numbers table")).to_be_visible(timeout=TIMEOUT)
    expect(page.locator("#icar-probs .js-plotly-plot")).to_be_visible(timeout=TIMEOUT)
    expect(page.locator("#icar-probs .js-plotly-plot .bars .point")).to_have_count(20, timeout=TIMEOUT)
    expect(page.locator("#icar-captions .js-plotly-plot .bars .point")).to_have_count(5, timeout=TIMEOUT)
    before = _probabilities(page, "ring")
    old_row = _ring_row(page, "ring").inner_text()

    _edit_cell(page, RING_ROW, 1, "a shape with five sharp points")
    page.locator("#icar-predict").click()
    # the ring row (its description-based probability) changes once the new prediction arrives
    expect(_ring_row(page, "ring")).not_to_have_text(old_row, timeout=TIMEOUT)
    after = _probabilities(page, "ring")
    assert after[0] != before[0]  # the description-based probability moved
    assert after[1] == before[1]  # the names-only prediction of ring did not: only its description changed


def test_duplicate_class_name_shows_a_message(page, hub_url):
    _open_tab(page, hub_url)
    _edit_cell(page, 1, 0, "circle")  # row 0 is "circle" already
    page.locator("#icar-predict").click()
    expect(page.get_by_text(re.compile("duplicate class name"))).to_be_visible(timeout=TIMEOUT)
