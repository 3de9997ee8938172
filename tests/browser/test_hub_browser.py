import os
import shutil
from pathlib import Path

from workbench.apps.registry import TABS


def test_hub_renders_every_tab_without_outside_requests(page, hub_url, tmp_path):
    page.goto(hub_url)
    page.get_by_text("Vision Workbench").first.wait_for()
    # the welcome tab draws a plotly figure from workbench.viz
    page.locator("#hub-shapes-plot .js-plotly-plot").first.wait_for()
    for t in TABS:
        page.get_by_role("tab", name=t.title).click()
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
