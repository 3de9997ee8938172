"""MoBY explorers for the notebook: the twin of the "MoBY embeddings" app tab.

``embeddings_explorer()`` — the demo encoder's 2-D map of a gallery, a chosen point and its neighbours;
``neighbours_explorer()`` — the neighbour images with their cosine similarities;
``views_explorer()`` — two augmented views of an image, re-rolled by the seed.
All render functions are plain functions of the control values (also used by the app tab).
"""
from __future__ import annotations

import html as _html

from .core import explorer

VIEW_SIZE = 96  # display size of the augmented views


def neighbour_text(res: dict) -> str:
    """One line per neighbour: ``#index class (similarity)``."""
    names = res["names"]
    return "nearest: " + ", ".join(f"#{i} {names[c]} ({s:.2f})"
                                   for i, c, s in zip(res["indices"], res["labels"], res["sims"]))


def render_embeddings(dataset: str = "shapes", projection: str = "pca", point: int = 0, k: int = 8):
    """The 2-D map with the chosen point and its ``k`` nearest neighbours (in embedding space) ringed."""
    from workbench import moby
    from workbench.viz import moby as vm
    idx = moby.demo_index(dataset)
    res = moby.query_neighbours(dataset, index=point, k=k)
    xy = moby.demo_map(dataset, projection)
    title = f"{dataset}: {projection.upper()} of MoBY embeddings (point #{int(point)} and its {len(res['indices'])} neighbours)"
    fig = vm.embedding_map(xy, idx["labels"], idx["names"], highlight=[int(point), *res["indices"]], title=title)
    return fig, _html.escape(neighbour_text(res))


def render_neighbours(dataset: str = "shapes", point: int = 0, k: int = 8):
    """The chosen gallery image followed by its nearest neighbours."""
    from workbench import moby
    from workbench.viz import moby as vm
    idx = moby.demo_index(dataset)
    res = moby.query_neighbours(dataset, index=point, k=k)
    names = res["names"]
    fig = vm.neighbours_figure(res["query"], [idx["images"][j] for j in res["indices"]], res["sims"], res["labels"],
                               names, indices=res["indices"],
                               query_title=f"query #{int(point)} · {names[int(idx['labels'][int(point)])]}")
    return fig, _html.escape(neighbour_text(res))


def view_source(source: str):
    """An image for the two-view panel: a bundled photo name or ``"shapes #i"`` / ``"digits #i"``."""
    from workbench import moby
    from workbench.data import natural
    if source in natural.photo_names():
        return natural.load_photo(source)
    for ds in moby.GALLERIES:
        if source.startswith(f"{ds} #"):
            i = int(source.split("#", 1)[1])
            images, _, _ = moby.gallery(ds, 300, size=64 if ds == "shapes" else 32)
            if not 0 <= i < len(images):
                raise ValueError(f"{ds} index must be between 0 and {len(images) - 1}")
            return images[i]
    raise ValueError(f"unknown image source {source!r}")


def view_sources() -> list[str]:
    from workbench.data import natural
    return list(natural.photo_names()) + [f"shapes #{i}" for i in range(4)] + ["digits #0"]


def render_views(image, seed: int = 0, size: int = VIEW_SIZE):
    """Two MoBY views of ``image`` (uint8 (H, W, 3) array or a source name) for a given seed."""
    from workbench import moby
    from workbench.viz import moby as vm
    if isinstance(image, str):
        image = view_source(image)
    v1, v2 = moby.two_views(image, size=size, seed=int(seed))
    return vm.two_views_figure(image, v1, v2, seed=int(seed))


def embeddings_explorer():
    import ipywidgets as W

    from workbench import moby
    controls = {
        "dataset": W.Dropdown(options=list(moby.GALLERIES), value="shapes", description="dataset"),
        "projection": W.Dropdown(options=["pca", "tsne"], value="pca", description="map"),
        "point": W.BoundedIntText(value=0, min=0, max=299, description="point #"),
        "k": W.IntSlider(value=8, min=1, max=20, description="neighbours"),
    }
    return explorer(controls, render_embeddings, title="MoBY embedding map", columns=4)


def neighbours_explorer():
    import ipywidgets as W

    from workbench import moby
    controls = {
        "dataset": W.Dropdown(options=list(moby.GALLERIES), value="shapes", description="dataset"),
        "point": W.BoundedIntText(value=0, min=0, max=299, description="point #"),
        "k": W.IntSlider(value=8, min=1, max=14, description="neighbours"),
    }
    return explorer(controls, render_neighbours, title="Nearest neighbours (cosine similarity)")


def views_explorer():
    import ipywidgets as W
    controls = {
        "image": W.Dropdown(options=view_sources(), description="image"),
        "seed": W.IntSlider(value=0, min=0, max=999, description="seed (re-roll)"),
    }
    return explorer(controls, render_views, title="Two augmented views")
