"""Tab selection shared by the browser tests."""
from __future__ import annotations


def click_tab(page, title: str, exact: bool = False):
    """Select the tab called ``title``, through gradio's "More tabs" menu when the tab bar has no room for it (as a
    user on a narrower window would)."""
    for _ in range(20):
        tab = page.get_by_role("tab", name=title, exact=exact).filter(visible=True)
        if tab.count():
            tab.first.click()
            return
        more = page.get_by_role("button", name="More tabs").filter(visible=True)
        if more.count():
            more.first.click()
            item = page.get_by_role("tab", name=title, exact=exact).filter(visible=True)
            if item.count() == 0:
                item = page.get_by_role("button", name=title, exact=exact).filter(visible=True)
            if item.count():
                item.first.click()
                return
        page.wait_for_timeout(500)
    raise AssertionError(f"no tab {title!r} on the page")
