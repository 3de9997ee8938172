"""MoBY explorers for the notebook, twins of the "MoBY" app tab (same ``workbench.demos.moby`` functions):
``embeddings_explorer()`` — the 2-D map of a gallery with a point and its neighbours ringed;
``neighbours_explorer()`` — the neighbour images with their cosine similarities;
``views_explorer()`` — two augmented views of an image, re-rolled by the seed."""
from __future__ import annotations

import html as _html

from .core import explorer


def render_map(dataset: str = "shapes", method: str = "pca", point: int = 0, k: int = 8):
    from ..demos import moby as demo

    p = demo.map_panel(dataset, method, point, k)
    return p.figures["map"], _html.escape(p.text).replace("**", "")


def render_neighbours(dataset: str = "shapes", point: int = 0, k: int = 8):
    from ..demos import moby as demo

    p = demo.map_panel(dataset, "pca", point, k)
    return p.figures["neighbours"], _html.escape(p.text).replace("**", "")


def render_views(source: str = "shapes #0", seed: int = 0):
    from ..demos import moby as demo

    p = demo.views_panel(source, seed)
    return p.figures["views"], _html.escape(p.text)


def embeddings_explorer():
    import ipywidgets as W

    from ..demos import moby as demo

    controls = {
        "dataset": W.Dropdown(options=list(demo.GALLERIES), value="shapes", description="gallery"),
        "method": W.Dropdown(options=list(demo.PROJECTIONS), value="pca", description="map"),
        "point": W.IntSlider(value=0, min=0, max=demo.N - 1, description="point #"),
        "k": W.IntSlider(value=8, min=1, max=demo.MAX_K, description="neighbours"),
    }
    return explorer(controls, render_map, title="MoBY embedding map", columns=4)


def neighbours_explorer():
    import ipywidgets as W

    from ..demos import moby as demo

    controls = {
        "dataset": W.Dropdown(options=list(demo.GALLERIES), value="shapes", description="gallery"),
        "point": W.IntSlider(value=0, min=0, max=demo.N - 1, description="point #"),
        "k": W.IntSlider(value=8, min=1, max=demo.MAX_K, description="neighbours"),
    }
    return explorer(controls, render_neighbours, title="Nearest neighbours (cosine similarity)")


def views_explorer():
    import ipywidgets as W

    from ..demos import moby as demo

    controls = {
        "source": W.Dropdown(options=demo.view_sources(), description="image"),
        "seed": W.IntSlider(value=0, min=0, max=999, description="seed (re-roll)"),
    }
    return explorer(controls, render_views, title="Two augmented views")
