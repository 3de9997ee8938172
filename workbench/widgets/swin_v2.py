"""The notebook twin of the "Swin V2" app tab: stage, block, head, window, pretrained window and query of the
demo model -> the CPB bias over offsets, one query's bias and the V1 table (``workbench.demos.swin_v2``)."""
from __future__ import annotations

from .core import explorer


def bias_explorer():
    """An Explorer over the demo model; the head slider follows the stage, like the app's."""
    import ipywidgets as W

    from ..demos import swin_v2 as demo
    from ..viz.core import heatmaps_side_by_side

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
        return heatmaps_side_by_side(list(p.figures.values())), p.text

    return explorer(controls, render, title="Swin V2 position bias of the demo model")
