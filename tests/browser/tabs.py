"""Tab selection shared by the browser tests."""
from __future__ import annotations

from playwright.sync_api import Error as PlaywrightError


def _try_click(locator) -> bool:
    """Click the first visible match within a short time; False when none is visible or it vanished meanwhile
    (gradio measures the tab bar after the first render and may move a tab into its "More tabs" menu)."""
    if locator.count() == 0:
        return False
    try:
        locator.first.click(timeout=2_000)
        return True
    except PlaywrightError:
        return False


def click_tab(page, title: str, exact: bool = False):
    """Select the tab called ``title``, through gradio's "More tabs" menu when the tab bar has no room for it (as a
    user on a narrower window would)."""
    page.get_by_text("Vision Workbench").first.wait_for()
    for _ in range(40):
        if _try_click(page.get_by_role("tab", name=title, exact=exact).filter(visible=True)):
            return
        if _try_click(page.get_by_role("button", name="More tabs").filter(visible=True)):
            for role in ("tab", "button"):
                if _try_click(page.get_by_role(role, name=title, exact=exact).filter(visible=True)):
                    return
        page.wait_for_timeout(500)
    raise AssertionError(f"no tab {title!r} on the page")
