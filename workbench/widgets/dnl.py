"""The notebook twin of the "DNL" app tab: same controls (image, scene seed, query point, DNL temperature) and the
same function, ``workbench.demos.dnl.panel``. The app picks the query with a click; here two sliders give its row
and column (in pixels of the 64 px model input)."""
from __future__ import annotations

from .core import Explorer, explorer


def render(source: str = "shapes scene", seed: int = 0, row: int = 32, col: int = 32, temperature: float = 0.05):
    """(figure, html) for one setting of the controls."""
    import html

    from ..demos import dnl as demo

    p = demo.panel(source, seed, temperature, (row, col))
    return p.figures["overview"], html.escape(p.text).replace("**", "").replace("  \n", "<br>")


def dnl_explorer(source: str = "shapes scene", seed: int = 0, row: int = 32, col: int = 32) -> Explorer:
    import ipywidgets as W

    from ..demos import dnl as demo

    controls = {
        "source": W.Dropdown(options=demo.sources(), value=source, description="image"),
        "seed": W.IntSlider(value=seed, min=0, max=99, description="scene seed"),
        "temperature": W.FloatLogSlider(value=0.05, base=10, min=-2, max=0, step=0.1, description="DNL T"),
        "row": W.IntSlider(value=row, min=0, max=63, description="query row"),
        "col": W.IntSlider(value=col, min=0, max=63, description="query col"),
    }
    return explorer(controls, render, title="DNL attention maps")
