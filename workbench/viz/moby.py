"""MoBY figures: embedding maps, nearest neighbours, the two augmented views, the momentum schedule,
training curves and the study's accuracy bars. Every builder returns a ``go.Figure`` built from
:mod:`workbench.viz.core`; the app tab, the widgets and the notebook call these same functions."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from . import core


def embedding_map(xy, labels, names: Sequence[str], *, highlight: Sequence[int] | None = None,
                  title: str | None = None, height: int = 480):
    """A 2-D map of embeddings coloured by class; hovering shows ``#index · class``; ``highlight`` rings
    the chosen point and its neighbours."""
    labels = np.asarray(labels)
    hover = [f"#{i} · {names[int(c)]}" for i, c in enumerate(labels)]
    return core.scatter_2d(xy, labels, names=list(names), hover=hover, highlight=highlight, title=title,
                           height=height)


def neighbours_figure(query, images: Sequence, sims: Sequence[float], labels: Sequence[int],
                      names: Sequence[str], *, indices: Sequence[int] | None = None, query_title: str = "query"):
    """The query image followed by its nearest neighbours, each titled with its class and, on a second line, its
    cosine similarity (one line overlapped its neighbours' titles in a half-width app column)."""
    titles = [query_title]
    for j, (s, c) in enumerate(zip(sims, labels)):
        tag = f"#{indices[j]} " if indices is not None else ""
        titles.append(f"{tag}{names[int(c)]}<br>cos {s:.2f}")
    cols = min(len(titles), 5)
    fig = core.image_grid([query, *images], titles=titles, cols=cols, height_per_row=190)
    fig.update_annotations(font_size=11)
    fig.update_layout(margin_t=45)
    return fig


def thumbnail(image, max_side: int = 192) -> np.ndarray:
    """A display copy of an image no larger than ``max_side`` pixels (keeps figures and notebooks small)."""
    from PIL import Image
    img = core.to_uint8_image(image)
    h, w = img.shape[:2]
    if max(h, w) <= max_side:
        return img
    s = max_side / max(h, w)
    return np.asarray(Image.fromarray(img).resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR))


def two_views_figure(image, view1, view2, *, seed: int | None = None):
    """An image and its two MoBY views (view 1: blur p 1; view 2: blur p 0.1, solarise p 0.2)."""
    image = thumbnail(image)
    titles = ["image", "view 1 (always blurred)", "view 2 (blur 0.1, solarise 0.2)"]
    return core.image_grid([image, view1, view2], titles=titles, cols=3, height_per_row=260,
                           title=None if seed is None else f"augmentation seed {seed}")


def momentum_figure(total: int = 100, base: float = 0.99):
    """The cosine momentum schedule m(k) = 1 - (1 - m0)(cos(pi k / K) + 1) / 2 from m0 to 1."""
    from workbench.moby import momentum_at  # local: keeps torch out of workbench.viz
    k = np.arange(total + 1)
    m = np.array([momentum_at(int(i), total, base) for i in k])
    return core.line_chart({f"m0 = {base}": (k, m)}, title="Momentum schedule of the target encoder",
                           xlabel="training step k", ylabel="momentum m")


def training_curves(curves: Sequence[Mapping], metric: str = "knn_shapes", *, title: str | None = None,
                    ylabel: str | None = None):
    """One line per run of a per-epoch metric from the study's ``curves.jsonl`` records."""
    series: dict[str, tuple] = {}
    for run in dict.fromkeys(r["run"] for r in curves):
        pts = [(r["epoch"], r[metric]) for r in curves if r["run"] == run and metric in r]
        if pts:
            x, y = zip(*pts)
            series[run] = (np.array(x), np.array(y, dtype=float))
    if not series:
        raise ValueError(f"no records carry the metric {metric!r}")
    return core.line_chart(series, title=title or metric, xlabel="epoch", ylabel=ylabel or metric)


def results_bars(rows: Sequence[Mapping], metrics: Sequence[str] = ("knn_shapes", "linear_shapes", "knn_digits",
                                                                    "linear_digits"), *, title: str | None = None):
    """Grouped bars of the study's accuracies, one group per (backbone, pre-training) row."""
    rows = [r for r in rows if any(m in r for m in metrics)]
    if not rows:
        raise ValueError("no rows with accuracies")
    groups = [f"{r['backbone']}: {r['method']}" for r in rows]
    series = {m.replace("_", " "): [float(r.get(m, np.nan)) for r in rows] for m in metrics}
    return core.grouped_bar_chart(groups, series, title=title or "Top-1 (%) on frozen features",
                                  ylabel="top-1 (%)")
