"""The notebook twin of the "Swin V2" app tab: stage, block, head, window, pretrained window and query of the
demo model -> the CPB bias over offsets, one query's bias and the V1 table (``workbench.demos.swin_v2``)."""
from __future__ import annotations


def _combined(figs):
    """Heatmaps side by side in one figure (the explorer shows one FigureWidget)."""
    from plotly.subplots import make_subplots

    titles = [(f.layout.title.text or "").replace("<br>", " ") for f in figs]
    fig = make_subplots(rows=1, cols=len(figs), subplot_titles=titles, horizontal_spacing=0.08)
    for i, f in enumerate(figs):
        for tr in f.data:
            tr = tr.to_plotly_json()
            if tr.get("type") == "heatmap":
                tr["showscale"] = False
                tr.pop("texttemplate", None)
            fig.add_trace(tr, row=1, col=i + 1)
        fig.update_yaxes(autorange="reversed", row=1, col=i + 1)
    fig.update_annotations(font_size=10)
    fig.update_layout(height=400, template="plotly_white", margin=dict(l=30, r=10, t=70, b=30))
    return fig


def bias_explorer():
    """An Explorer over the demo model; the head slider follows the stage, like the app's."""
    import ipywidgets as W

    from ..demos import swin_v2 as demo
    from .core import explorer

    net, _, _ = demo.model()
    controls = {
        "layer": W.IntSlider(value=0, min=0, max=len(net.layers) - 1, description="stage"),
        "block": W.IntSlider(value=0, min=0, max=1, description="block"),
        "head": W.IntSlider(value=0, min=0, max=demo.heads(0) - 1, description="head"),
        "window": W.IntSlider(value=8, min=2, max=demo.MAX_WINDOW, description="window"),
        "pretrained_window": W.IntSlider(value=4, min=0, max=demo.MAX_WINDOW, description="pretrained"),
        "qy": W.IntSlider(value=3, min=0, max=demo.MAX_WINDOW - 1, description="query row"),
        "qx": W.IntSlider(value=3, min=0, max=demo.MAX_WINDOW - 1, description="query col"),
    }

    def follow_layer(change):
        controls["head"].max = demo.heads(change["new"]) - 1

    controls["layer"].observe(follow_layer, names="value")

    def render(**values):
        p = demo.bias_panel(**values)
        return _combined(list(p.figures.values())), p.text

    return explorer(controls, render, title="Swin V2 position bias of the demo model")
