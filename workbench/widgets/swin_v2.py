"""The notebook twin of the "Swin V2 position bias" app tab: layer, block, head, window, pretrained window
and query position of the demo model -> the CPB bias over offsets, one query's bias over the window and the
V1 table interpolated to the same window (``workbench.viz.swin_v2.bias_panel``)."""
from __future__ import annotations


def _combined(f1, f2, f3):
    """Three heatmaps side by side in one figure (the explorer shows one FigureWidget)."""
    from plotly.subplots import make_subplots

    figs = [f for f in (f1, f2, f3) if f is not None]
    titles = [f.layout.title.text or "" for f in figs]
    fig = make_subplots(rows=1, cols=len(figs), subplot_titles=[t[:60] for t in titles],
                        horizontal_spacing=0.08)
    for i, f in enumerate(figs):
        for tr in f.data:
            tr = tr.to_plotly_json()
            if tr.get("type") == "heatmap":
                tr["showscale"] = False
                tr.pop("texttemplate", None)
            fig.add_trace(tr, row=1, col=i + 1)
        fig.update_yaxes(autorange="reversed", row=1, col=i + 1)
    fig.update_layout(height=380, template="plotly_white", margin=dict(l=30, r=10, t=60, b=30),
                      font=dict(size=10))
    return fig


def bias_explorer(model=None, v1_tables=None):
    """An Explorer over the demo model (loaded from its checkpoint when ``model`` is None)."""
    import ipywidgets as W

    from ..studies.swin_v2 import load_demo_model
    from ..viz.swin_v2 import bias_panel
    from .core import explorer

    if model is None:
        model, v1_tables = load_demo_model()
    controls = {
        "layer": W.IntSlider(value=0, min=0, max=len(model.layers) - 1, description="layer"),
        "block": W.IntSlider(value=0, min=0, max=1, description="block"),
        "head": W.IntSlider(value=0, min=0, max=7, description="head"),
        "window": W.IntSlider(value=8, min=2, max=24, description="window"),
        "pretrained_window": W.IntSlider(value=4, min=0, max=24, description="pretrained"),
        "query": W.IntSlider(value=0, min=0, max=24 * 24 - 1, description="query idx"),
    }

    def render(layer, block, head, window, pretrained_window, query):
        q = (min(query // window, window - 1), query % window)
        f1, f2, f3, text = bias_panel(model, v1_tables, layer=layer, block=block, head=head, window=window,
                                      pretrained_window=pretrained_window, query=q)
        return _combined(f1, f2, f3), text

    return explorer(controls, render, title="Swin V2 position bias of the demo model")
