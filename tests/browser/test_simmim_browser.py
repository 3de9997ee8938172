"""Browser test of the "SimMIM reconstructions" tab: moving the mask-ratio slider changes the reconstruction."""
from __future__ import annotations

import pytest

from .tabs import click_tab

pytestmark = pytest.mark.browser


def _images(page):
    return page.eval_on_selector_all("#simmim-plot .js-plotly-plot image",
                                     "els => els.map(e => e.getAttribute('href') || e.getAttribute('xlink:href'))")


def test_ratio_slider_changes_the_reconstruction(hub_url, page):
    from playwright.sync_api import expect

    page.goto(hub_url)
    click_tab(page, "SimMIM reconstructions")
    page.locator("#simmim-plot .js-plotly-plot").wait_for(timeout=60_000)
    summary = page.locator("#simmim-summary")
    expect(summary).to_contain_text("AvgDist")
    expect(summary).to_contain_text("160/256")  # ratio 0.6 with 16 px mask patches: 10 of 16 mask patches
    before = _images(page)
    assert len(before) == 1 and before[0].startswith("data:image/png")  # the five panels in one strip

    slider = page.locator("#simmim-ratio input[type=range]")
    slider.focus()
    for _ in range(6):  # 0.6 -> 0.3 in steps of 0.05
        slider.press("ArrowLeft")
    expect(summary).to_contain_text("80/256", timeout=30_000)  # ceil(16 * 0.3) = 5 mask patches
    page.wait_for_function(
        "old => { const els = [...document.querySelectorAll('#simmim-plot .js-plotly-plot image')];"
        " return els.length === 1 && els[0].getAttribute('href') !== old; }", arg=before[0], timeout=30_000)
    after = _images(page)
    assert after[0] != before[0]  # the masked input, reconstruction and composite were redrawn

    # asking for an upload without a file shows a message on the summary line, not a traceback
    page.locator("#simmim-source input").fill("upload")
    page.keyboard.press("Enter")
    expect(summary).to_contain_text("Choose an image file to upload", timeout=30_000)
    expect(page.get_by_text("Error", exact=True).filter(visible=True)).to_have_count(0)


def test_mask_patch_choices_follow_the_model(hub_url, page):
    """The mask-patch radio (a ``ChoiceRadio``: gradio's radio on the page) picks 32 px patches, and the ViT model,
    whose patches are 8 px, does not offer 4 px mask patches."""
    from playwright.sync_api import expect

    page.goto(hub_url)
    click_tab(page, "SimMIM reconstructions")
    summary = page.locator("#simmim-summary")
    expect(summary).to_contain_text("160/256", timeout=60_000)
    radio = page.locator("#simmim-patch")
    expect(radio.get_by_role("radio")).to_have_count(4)                 # 4, 8, 16, 32 px for Swin V2 (4 px patches)
    radio.get_by_text("32", exact=True).click()
    expect(summary).to_contain_text("192/256", timeout=30_000)           # 3 of the 4 mask patches of 32 px
    page.locator("#simmim-model input").fill("ViT lite (SimMIM)")
    page.keyboard.press("Enter")
    expect(summary).to_contain_text("ViT lite", timeout=60_000)
    expect(radio.get_by_role("radio")).to_have_count(3, timeout=30_000)  # 8, 16, 32 px
    expect(radio.get_by_text("4", exact=True)).to_have_count(0)
    expect(page.get_by_text("Error", exact=True).filter(visible=True)).to_have_count(0)
