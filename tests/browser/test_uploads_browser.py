"""Corrupt uploads and uploads without a file, in every tab with an image input (Swin V2, SimMIM, MoBY, DNL, iCAR).

A text file renamed ``.png`` goes through the page's own file input. The tab's status / summary line must say
"could not read the image", the previous result must be cleared, and no gradio error badge, error toast or
traceback may appear (the upload component never fails inside gradio; ``guard`` puts the message on the status
line). Asking for an upload without choosing a file gives the tab's message in the same place.
"""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from .tabs import click_tab

pytestmark = pytest.mark.browser

TIMEOUT = 120_000  # ms: the first call loads a demo model on a busy 2-core machine
CLEAR = re.compile("Remove Image|Clear")  # the image component's clear button


@pytest.fixture
def text_png(tmp_path):
    p = tmp_path / "holiday-photo.png"
    p.write_text("This is a text file renamed to .png, not an image.\n" * 20)
    return p


def _open(page, hub_url, title, ready):
    page.goto(hub_url)
    click_tab(page, title)
    expect(page.locator(ready)).to_be_visible(timeout=TIMEOUT)


def _upload(page, elem_id, path):
    """Send ``path`` through the image component's own file input (clearing a value it shows first)."""
    comp = page.locator(f"#{elem_id}")
    clear = comp.get_by_role("button", name=CLEAR)
    if clear.count():
        clear.first.click()
    comp.locator("input[type=file]").set_input_files(str(path))
    expect(comp.locator("img")).to_have_count(1, timeout=TIMEOUT)   # the upload reached the component


def _no_error_badges(page):
    """Nothing of gradio's error UI: no "Error" status badge, no error toast, no traceback text."""
    expect(page.get_by_text("Error", exact=True).filter(visible=True)).to_have_count(0)
    expect(page.locator(".toast-body").filter(visible=True)).to_have_count(0)
    expect(page.get_by_text(re.compile("Traceback|UnidentifiedImageError|/tmp/")).filter(visible=True)).to_have_count(0)


def _status_says(page, elem_id, text):
    status = page.locator(f"#{elem_id}")
    expect(status).to_contain_text(text, timeout=TIMEOUT)
    assert "/" not in status.inner_text()          # no file-system path reaches the page


# ------------------------------------------------------------------------------------------------ Swin V2
def test_swin_v2_corrupt_upload(page, hub_url, text_png):
    _open(page, hub_url, "Swin V2 position bias", "#swin_v2-top5 .js-plotly-plot")   # a classified sample on load
    _upload(page, "swin_v2-image", text_png)
    page.locator("#swin_v2-classify").click()
    _status_says(page, "swin_v2-verdict", "could not read the image")
    expect(page.locator("#swin_v2-top5 .js-plotly-plot")).to_have_count(0, timeout=TIMEOUT)
    _no_error_badges(page)


def test_swin_v2_classify_without_a_file(page, hub_url):
    _open(page, hub_url, "Swin V2 position bias", "#swin_v2-top5 .js-plotly-plot")
    page.locator("#swin_v2-image").get_by_role("button", name=CLEAR).first.click()
    page.locator("#swin_v2-classify").click()
    _status_says(page, "swin_v2-verdict", "Please choose or upload an image first.")
    expect(page.locator("#swin_v2-top5 .js-plotly-plot")).to_have_count(0, timeout=TIMEOUT)
    _no_error_badges(page)


# ------------------------------------------------------------------------------------------------ SimMIM
def _simmim_source_upload(page):
    page.locator("#simmim-source input").fill("upload")
    page.keyboard.press("Enter")


def test_simmim_upload_without_a_file_then_a_corrupt_one(page, hub_url, text_png):
    _open(page, hub_url, "SimMIM reconstructions", "#simmim-plot .js-plotly-plot")      # a reconstruction on load
    _simmim_source_upload(page)
    _status_says(page, "simmim-summary", "Choose an image file to upload")
    expect(page.locator("#simmim-plot .js-plotly-plot")).to_have_count(0, timeout=TIMEOUT)
    _no_error_badges(page)
    _upload(page, "simmim-upload", text_png)
    _status_says(page, "simmim-summary", "could not read the image")
    expect(page.locator("#simmim-plot .js-plotly-plot")).to_have_count(0)
    expect(page.locator("#simmim-error .js-plotly-plot")).to_have_count(0)
    _no_error_badges(page)


# ------------------------------------------------------------------------------------------------ MoBY
def _moby_open_upload(page, hub_url):
    _open(page, hub_url, "MoBY embeddings", "#moby-map .js-plotly-plot")
    page.get_by_text("Neighbours of your own image").click()
    expect(page.locator("#moby-upload-btn")).to_be_visible(timeout=TIMEOUT)


def test_moby_upload_without_a_file(page, hub_url):
    _moby_open_upload(page, hub_url)
    page.locator("#moby-upload-btn").click()
    _status_says(page, "moby-upload-text", "Please choose or upload an image first.")
    _no_error_badges(page)


def test_moby_corrupt_upload_clears_the_previous_neighbours(page, hub_url, tmp_path, text_png):
    from PIL import Image

    from workbench.data import shapes

    good = tmp_path / "star.png"
    Image.fromarray(shapes.render("star", image_size=64)["image"]).save(good)
    _moby_open_upload(page, hub_url)
    _upload(page, "moby-upload", good)
    page.locator("#moby-upload-btn").click()
    _status_says(page, "moby-upload-text", "nearest: #")
    expect(page.locator("#moby-upload-neighbours .js-plotly-plot")).to_be_visible(timeout=TIMEOUT)
    _upload(page, "moby-upload", text_png)
    page.locator("#moby-upload-btn").click()
    _status_says(page, "moby-upload-text", "could not read the image")
    expect(page.locator("#moby-upload-neighbours .js-plotly-plot")).to_have_count(0, timeout=TIMEOUT)
    _no_error_badges(page)


# ------------------------------------------------------------------------------------------------ DNL
def test_dnl_upload_without_a_file_then_a_corrupt_one(page, hub_url, text_png):
    _open(page, hub_url, "DNL attention maps", "#dnl-attention .js-plotly-plot")       # maps on load
    page.locator("#dnl-source input").fill("upload")
    page.keyboard.press("Enter")
    _status_says(page, "dnl-summary", "Choose an image file to upload")
    expect(page.locator("#dnl-attention .js-plotly-plot")).to_have_count(0, timeout=TIMEOUT)
    _no_error_badges(page)
    _upload(page, "dnl-upload", text_png)
    _status_says(page, "dnl-summary", "could not read the image")
    expect(page.locator("#dnl-attention .js-plotly-plot")).to_have_count(0)
    expect(page.locator("#dnl-segmentation .js-plotly-plot")).to_have_count(0)
    _no_error_badges(page)


# ------------------------------------------------------------------------------------------------ iCAR
def test_icar_corrupt_upload(page, hub_url, text_png):
    _open(page, hub_url, "iCAR zero-shot", "#icar-probs .js-plotly-plot")              # an example predicted on load
    expect(page.locator("#icar-numbers table")).to_be_visible(timeout=TIMEOUT)
    _upload(page, "icar-upload", text_png)
    page.locator("#icar-predict").click()
    _status_says(page, "icar-numbers", "could not read the image")
    expect(page.locator("#icar-probs .js-plotly-plot")).to_have_count(0, timeout=TIMEOUT)
    expect(page.locator("#icar-captions .js-plotly-plot")).to_have_count(0)
    _no_error_badges(page)


def test_icar_without_an_upload_uses_the_example(page, hub_url):
    """The iCAR upload is optional: without a file, Predict classifies the chosen example image."""
    _open(page, hub_url, "iCAR zero-shot", "#icar-probs .js-plotly-plot")
    page.locator("#icar-predict").click()
    expect(page.locator("#icar-numbers table")).to_be_visible(timeout=TIMEOUT)
    expect(page.locator("#icar-probs .js-plotly-plot .bars .point")).to_have_count(20, timeout=TIMEOUT)
    _no_error_badges(page)
