"""Figures of the Disentangled Non-Local paper: attention overlays for a query, the study's tables as charts.

Used by ``notebooks/05_dnl.ipynb``, ``workbench.widgets.dnl`` and the app tab ``apps/dnl.py``.
"""
from __future__ import annotations

import functools
import re

import numpy as np
import plotly.graph_objects as go

from . import core

MAP_ORDER = ("NL attention", "DNL pairwise", "DNL unary", "NL implicit unary")
HEAD_LABELS = {"none": "none", "nl": "NL", "dnl": "DNL", "gc": "GC", "pairwise": "DNL pairwise only",
               "unary": "DNL unary only"}


@functools.lru_cache(maxsize=4)
def _lut(name: str = "Inferno") -> np.ndarray:
    from plotly.colors import sample_colorscale

    cols = sample_colorscale(name, list(np.linspace(0, 1, 256)))
    return np.array([[int(float(v)) for v in re.findall(r"[\d.]+", c)[:3]] for c in cols], np.uint8)


def upscale(a: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement of an (h, w[, c]) array by an integer factor."""
    return np.repeat(np.repeat(np.asarray(a), factor, axis=0), factor, axis=1)


def overlay(image, heat, *, marker: tuple[int, int] | None = None, alpha: float = 0.6, display: int = 192,
            colorscale: str = "Inferno") -> np.ndarray:
    """uint8 (D, D, 3): ``image`` blended with ``heat`` (h, w) scaled to its maximum, cells kept visible;
    ``marker`` (row, col) in image pixels draws a cyan cross at the query."""
    img = core.to_uint8_image(image)
    s = img.shape[0]
    heat = np.asarray(heat, dtype=float)
    if heat.ndim != 2:
        raise ValueError(f"heat must be 2-D, got shape {heat.shape}")
    f = max(display // s, 1)
    big = upscale(img, f).astype(float)
    hmax = heat.max()
    norm = heat / hmax if hmax > 0 else np.zeros_like(heat)
    cell = (s * f) // heat.shape[0], (s * f) // heat.shape[1]
    hbig = np.repeat(np.repeat(norm, cell[0], axis=0), cell[1], axis=1)
    hbig = np.pad(hbig, ((0, big.shape[0] - hbig.shape[0]), (0, big.shape[1] - hbig.shape[1])), mode="edge")
    colored = _lut(colorscale)[np.clip((hbig * 255).round().astype(int), 0, 255)].astype(float)
    out = (1 - alpha) * big + alpha * colored
    out = out.round().clip(0, 255).astype(np.uint8)
    if marker is not None:
        draw_marker(out, (int(marker[0] * f + f // 2), int(marker[1] * f + f // 2)))
    return out


def draw_marker(img: np.ndarray, rc: tuple[int, int], arm: int = 7, color=(0, 255, 204)) -> np.ndarray:
    """Draw a cross (with a dark outline) centred at (row, col) in place; returns ``img``."""
    r, c = rc
    H, W = img.shape[:2]
    for width, col in ((2, (0, 0, 0)), (1, color)):
        r0, r1 = max(r - arm, 0), min(r + arm + 1, H)
        c0, c1 = max(c - arm, 0), min(c + arm + 1, W)
        img[r0:r1, max(c - width + 1, 0):min(c + width, W)] = col
        img[max(r - width + 1, 0):min(r + width, H), c0:c1] = col
    return img


def click_image(image, query: tuple[int, int] | None = None, display: int = 256) -> np.ndarray:
    """The enlarged image the app shows for clicking, with the current query marked."""
    img = core.to_uint8_image(image)
    f = max(display // img.shape[0], 1)
    big = upscale(img, f).copy()
    if query is not None:
        draw_marker(big, (int(query[0] * f + f // 2), int(query[1] * f + f // 2)), arm=9)
    return big


def attention_figure(exp, *, names=MAP_ORDER, display: int = 192, title: str | None = None) -> go.Figure:
    """NL attention vs DNL whitened pairwise for the query, then the unary maps, each over the image."""
    tiles, titles = [], []
    for name in names:
        heat = exp.maps[name]
        is_pair = name in ("NL attention", "DNL pairwise")
        tiles.append(overlay(exp.image, heat, marker=exp.query if is_pair else None, display=display))
        extra = f" (T={exp.temperature:g})" if name == "DNL pairwise" else ""
        titles.append(f"{name}{extra} · max {heat.max():.3f}")
    return core.image_grid(tiles, titles=titles, cols=len(tiles), height_per_row=display + 60, title=title)


def segmentation_figure(exp, *, display: int = 192) -> go.Figure:
    """The image, NL and DNL predictions (and the ground truth for shapes scenes) as colour label maps."""
    f = max(display // exp.image.shape[0], 1)
    tiles = [upscale(exp.image, f)] + [upscale(core.colorize_labels(exp.segmentation[h]), f) for h in ("nl", "dnl")]
    titles = ["image", "NL prediction", "DNL prediction"]
    if exp.mask is not None:
        tiles.append(upscale(core.colorize_labels(exp.mask), f))
        titles.append("ground truth")
    return core.image_grid(tiles, titles=titles, cols=len(tiles), height_per_row=display + 60)


def exploration_markdown(exp) -> str:
    """One-paragraph summary of a query: position, temperature and (for scenes) the statistics."""
    lines = [f"**Query** pixel (row {exp.query[0]}, col {exp.query[1]}) → feature cell {exp.query_cell}; "
             f"DNL temperature {exp.temperature:g}."]
    if exp.stats:
        parts = []
        for name in ("NL attention", "DNL pairwise"):
            s = exp.stats[name]
            if s["n"]:
                parts.append(f"{name}: {s['share']:.2f} of the mass on the query's own label "
                             f"(uniform {s['uniform']:.2f})")
            else:
                parts.append(f"{name}: query on background (no own-object share)")
        for name in ("NL implicit unary", "DNL unary"):
            s = exp.stats[name]
            parts.append(f"{name}: {s['mass']:.2f} of the mass on boundary cells (uniform {s['uniform']:.2f})")
        lines.append("; ".join(parts) + ".")
    return "  \n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# the study (drawn from claims.json / records)
# ----------------------------------------------------------------------------------------------------------
def arms_figure(claim: dict, title: str | None = None, xlabel: str | None = None) -> go.Figure:
    """The arms of one claims.json entry as horizontal bars (mean ± sd over seeds)."""
    arms = claim["arms"]
    names = list(arms)
    return core.bar_chart(names, [arms[a]["mean"] for a in names], errors=[arms[a]["sd"] for a in names],
                          horizontal=True, title=title or claim["claim"], xlabel=xlabel or claim["metric"],
                          text_fmt=".3f", height=120 + 40 * len(names))


def overview_figure(exp, *, display: int = 160) -> go.Figure:
    """Both rows in one figure (the notebook explorer): the four maps, then image / predictions / truth."""
    f = max(display // exp.image.shape[0], 1)
    tiles, titles = [], []
    for name in MAP_ORDER:
        heat = exp.maps[name]
        tiles.append(overlay(exp.image, heat, marker=exp.query if name in ("NL attention", "DNL pairwise") else None,
                             display=display))
        titles.append(name + (f" (T={exp.temperature:g})" if name == "DNL pairwise" else ""))
    tiles += [upscale(exp.image, f)] + [upscale(core.colorize_labels(exp.segmentation[h]), f) for h in ("nl", "dnl")]
    titles += ["image", "NL prediction", "DNL prediction"]
    if exp.mask is not None:
        tiles.append(upscale(core.colorize_labels(exp.mask), f))
        titles.append("ground truth")
    return core.image_grid(tiles, titles=titles, cols=4, height_per_row=display + 50)
