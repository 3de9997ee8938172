import os
import shutil
from pathlib import Path

from workbench.apps.registry import TABS

from .tabs import click_tab


def test_hub_renders_every_tab_without_outside_requests(page, hub_url, tmp_path):
    page.goto(hub_url)
    page.get_by_text("Vision Workbench").first.wait_for()
    # the welcome tab draws a plotly figure from workbench.viz
    page.locator("#hub-shapes-plot .js-plotly-plot").first.wait_for()
    for t in TABS:
        click_tab(page, t.title)
        page.get_by_text(t.blurb).first.wait_for(state="visible")
        assert page.locator(f"#hub-{t.module}-load-error").count() == 0, f"tab {t.module} failed to load"
    shot = tmp_path / "hub.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("WORKBENCH_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "hub.png")
    print(f"screenshot: {shot}")


def test_welcome_controls_update_the_caption(page, hub_url):
    page.goto(hub_url)
    caption = page.locator("#hub-caption")
    caption.get_by_text("large red star").wait_for()
    page.locator("#hub-shape input").click()
    page.get_by_role("option", name="hexagon").click()
    caption.get_by_text("large red hexagon").wait_for()


def test_header_paper_names_render_in_one_font(page, hub_url):
    """Every bold paper name in the header is drawn with a single installed font family (Gradio's bundled
    web fonts cover only part of the glyphs, which mixed two fonts inside "MoBY" and "iCAR")."""
    page.goto(hub_url)
    page.get_by_text("Balanced Sparsity").first.wait_for()
    cdp = page.context.new_cdp_session(page)
    cdp.send("DOM.enable")
    cdp.send("CSS.enable")
    root = cdp.send("DOM.getDocument", {"depth": -1})["root"]["nodeId"]
    ids = cdp.send("DOM.querySelectorAll", {"nodeId": root, "selector": ".prose strong"})["nodeIds"]
    assert len(ids) >= 7
    families = set()
    for nid in ids:
        fonts = cdp.send("CSS.getPlatformFontsForNode", {"nodeId": nid})["fonts"]
        assert len({f["familyName"] for f in fonts}) == 1, fonts
        families |= {f["familyName"] for f in fonts}
    assert len(families) == 1


def test_every_paper_tab_is_in_sight_on_a_laptop_or_narrow_window(browser, hub_url):
    """No tab hides in a "More tabs" menu: at 1280 x 800 the labels sit in one row without overlapping; at 700 px
    they wrap onto more rows, every one still visible."""
    for width, one_row in ((1280, True), (700, False)):
        context = browser.new_context(viewport={"width": width, "height": 800})
        try:
            pg = context.new_page()
            pg.goto(hub_url)
            pg.locator("#hub-shapes-plot .js-plotly-plot").first.wait_for()
            pg.wait_for_timeout(500)  # gradio lays the bar out after the first render
            tabs = pg.get_by_role("tab").filter(visible=True)
            labels = [tabs.nth(i).inner_text().strip() for i in range(tabs.count())]
            assert labels == ["Welcome"] + [t.title for t in TABS], width
            assert pg.get_by_role("button", name="More tabs").filter(visible=True).count() == 0
            boxes = [tabs.nth(i).bounding_box() for i in range(tabs.count())]
            rows = sorted({round(b["y"]) for b in boxes})
            assert (len(rows) == 1) == one_row, (width, rows)
            for a, b in zip(boxes, boxes[1:]):
                assert round(a["y"]) != round(b["y"]) or a["x"] + a["width"] <= b["x"] + 0.5
        finally:
            context.close()
