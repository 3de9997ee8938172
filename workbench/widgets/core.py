"""ipywidgets explorers: the notebook twin of an app tab.

``explorer(controls, render)`` wires a dict of widgets to a render function that returns a plotly figure
(or an HTML string, or ``(figure, html)``), shown in a ``FigureWidget`` that updates in place when a control
changes. Every paper notebook ends with such a panel, built from the same ``workbench`` functions and
``workbench.viz`` builders as its app tab. Errors from ``render`` (``ValueError``) appear as a message.
"""
from __future__ import annotations

import html as _html
from collections.abc import Callable, Mapping

from ..data import shapes
from ..demos.common import shape_sample_panel


class Explorer:
    """The panel returned by :func:`explorer`: ``.widget`` to display, ``.update()`` to re-render,
    ``.figure`` (FigureWidget), ``.message`` (HTML widget) and ``.controls``."""

    def __init__(self, controls: Mapping, render: Callable, *, title: str | None = None, columns: int = 3):
        import ipywidgets as W
        import plotly.graph_objects as go

        self.controls = dict(controls)
        self.render = render
        self.figure = go.FigureWidget()
        self.message = W.HTML()
        self.calls = 0
        for w in self.controls.values():
            w.observe(self.update, names="value")
        ctrl = list(self.controls.values())
        rows = [W.HBox(ctrl[i:i + columns]) for i in range(0, len(ctrl), columns)]
        head = [W.HTML(f"<h4 style='margin:4px 0'>{_html.escape(title)}</h4>")] if title else []
        self.widget = W.VBox(head + rows + [self.message, self.figure])
        self.update()

    def values(self) -> dict:
        return {k: w.value for k, w in self.controls.items()}

    def update(self, *_):
        self.calls += 1
        try:
            out = self.render(**self.values())
        except ValueError as e:
            self.message.value = f"<span style='color:#b00020'>{_html.escape(str(e))}</span>"
            return None
        fig, text = (out if isinstance(out, tuple) else (out, None))
        if isinstance(fig, str):
            fig, text = None, fig
        self.message.value = text or ""
        if fig is not None:
            with self.figure.batch_update():
                self.figure.data = []
                self.figure.layout = fig.layout
                self.figure.add_traces(list(fig.data))
        return fig

    def _ipython_display_(self):  # display(explorer) shows the panel
        from IPython.display import display

        display(self.widget)


def explorer(controls: Mapping, render: Callable, *, title: str | None = None, columns: int = 3) -> Explorer:
    """Build an :class:`Explorer`; display it as the last expression of a cell."""
    return Explorer(controls, render, title=title, columns=columns)


def render_shape_sample(shape: str = "star", color: str = "red", size: str = "large", background: str = "striped",
                        seed: int = 0, image_size: int = 64):
    """(figure, html) of one shapes sample and its mask: ``workbench.demos.common.shape_sample_panel``, which the
    hub's welcome tab calls too."""
    p = shape_sample_panel(shape, color, size, background, seed, image_size)
    return p.figures["sample"], f"<i>{_html.escape(p.text)}</i>"


def shape_controls(shape: str = "star", background: str = "striped", max_seed: int = 99) -> dict:
    """Dropdowns for one shapes sample (shape, colour, size, background) and a seed slider, keyed by the
    argument names of :func:`workbench.data.shapes.render`; explorers add their own controls to them."""
    import ipywidgets as W

    return {
        "shape": W.Dropdown(options=list(shapes.CLASSES), value=shape, description="shape"),
        "color": W.Dropdown(options=list(shapes.COLORS), value="red", description="colour"),
        "size": W.Dropdown(options=list(shapes.SIZES), value="large", description="size"),
        "background": W.Dropdown(options=list(shapes.BACKGROUNDS), value=background, description="background"),
        "seed": W.IntSlider(value=0, min=0, max=max_seed, description="seed"),
    }


def shapes_explorer() -> Explorer:
    """The reference explorer: class, colour, size, background, seed and image size of one shapes sample."""
    import ipywidgets as W

    controls = shape_controls()
    controls["image_size"] = W.Dropdown(options=[32, 64, 128, 256], value=64, description="pixels")
    return explorer(controls, render_shape_sample, title="Shapes explorer")
