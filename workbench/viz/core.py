"""Generic plotly figure builders shared by every paper's figures, notebooks and app tabs.

All builders return a ``plotly.graph_objects.Figure`` and are deterministic (no random ids), so notebook
outputs stay comparable under nbval.
"""
from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
TEMPLATE = "plotly_white"


def to_uint8_image(img) -> np.ndarray:
    """Accept (H, W), (H, W, 3), (3, H, W) arrays or tensors in [0, 1] or [0, 255]; return uint8 (H, W, 3)."""
    if hasattr(img, "detach"):
        img = img.detach().cpu().numpy()
    a = np.asarray(img)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        if a.size and np.nanmax(a) <= 1.0 + 1e-6:
            a = a * 255
        a = np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)
    return a


def _png_uri(img: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", optimize=False, compress_level=6)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _image_trace(img: np.ndarray) -> go.Image:
    return go.Image(source=_png_uri(to_uint8_image(img)), hoverinfo="skip")


def image_grid(images: Sequence, titles: Sequence[str] | None = None, cols: int | None = None,
               height_per_row: int = 220, title: str | None = None) -> go.Figure:
    """Images side by side in a grid (one subplot each, axes hidden)."""
    n = len(images)
    if n == 0:
        raise ValueError("image_grid needs at least one image")
    cols = cols or min(n, 6)
    rows = int(np.ceil(n / cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=list(titles) if titles else None,
                        horizontal_spacing=0.02, vertical_spacing=0.08 if titles else 0.02)
    for i, img in enumerate(images):
        fig.add_trace(_image_trace(img), row=i // cols + 1, col=i % cols + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(template=TEMPLATE, height=height_per_row * rows + (40 if title else 10),
                      margin=dict(l=5, r=5, t=40 if (title or titles) else 5, b=5), title=title)
    return fig


def heatmaps_side_by_side(figs: Sequence[go.Figure], *, height: int = 400) -> go.Figure:
    """Heatmap figures side by side in one figure, each with its title, without colour bars or cell text (a notebook
    explorer shows one FigureWidget)."""
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
    fig.update_layout(height=height, template="plotly_white", margin=dict(l=30, r=10, t=70, b=30))
    return fig


def heatmap(z, x=None, y=None, *, title: str | None = None, colorscale: str = "Viridis", zmid: float | None = None,
            zmin: float | None = None, zmax: float | None = None, colorbar_title: str | None = None,
            xlabel: str | None = None, ylabel: str | None = None, text_fmt: str | None = None,
            height: int = 420, equal_aspect: bool = True) -> go.Figure:
    """A heatmap of a 2-D array; ``text_fmt`` (e.g. ``".2f"``) writes the values in the cells."""
    z = np.asarray(z.detach().cpu() if hasattr(z, "detach") else z, dtype=float)
    if z.ndim != 2:
        raise ValueError(f"heatmap needs a 2-D array, got shape {z.shape}")
    kw = dict(z=z, x=x, y=y, colorscale=colorscale, zmid=zmid, zmin=zmin, zmax=zmax,
              colorbar=dict(title=colorbar_title) if colorbar_title else None)
    if text_fmt:
        kw.update(texttemplate="%{z:" + text_fmt + "}", textfont=dict(size=10))
    fig = go.Figure(go.Heatmap(**kw))
    fig.update_layout(template=TEMPLATE, title=title, height=height, margin=dict(l=50, r=20, t=50 if title else 20, b=40),
                      xaxis_title=xlabel, yaxis_title=ylabel)
    fig.update_yaxes(autorange="reversed")
    if equal_aspect:
        fig.update_yaxes(scaleanchor="x", scaleratio=1)
    return fig


def heatmap_over_image(image, heat, *, opacity: float = 0.55, colorscale: str = "Inferno", title: str | None = None,
                       marker: tuple[float, float] | None = None, zmin=None, zmax=None, height: int = 420) -> go.Figure:
    """A (h, w) heat map stretched over an (H, W, 3) image; ``marker`` = (x, y) in image pixels."""
    img = to_uint8_image(image)
    H, W = img.shape[:2]
    heat = np.asarray(heat.detach().cpu() if hasattr(heat, "detach") else heat, dtype=float)
    if heat.ndim != 2:
        raise ValueError(f"heat must be 2-D, got shape {heat.shape}")
    h, w = heat.shape
    fig = go.Figure(_image_trace(img))
    fig.add_trace(go.Heatmap(z=heat, x0=(W / w) / 2 - 0.5, dx=W / w, y0=(H / h) / 2 - 0.5, dy=H / h,
                             opacity=opacity, colorscale=colorscale, zmin=zmin, zmax=zmax, showscale=True))
    if marker is not None:
        fig.add_trace(go.Scatter(x=[marker[0]], y=[marker[1]], mode="markers",
                                 marker=dict(symbol="x", size=12, color="#00ffcc", line=dict(width=2)),
                                 showlegend=False, hoverinfo="skip"))
    fig.update_xaxes(visible=False, range=[-0.5, W - 0.5])
    fig.update_yaxes(visible=False, range=[H - 0.5, -0.5], scaleanchor="x")
    fig.update_layout(template=TEMPLATE, title=title, height=height, margin=dict(l=5, r=5, t=40 if title else 5, b=5))
    return fig


def line_chart(series: Mapping[str, tuple], *, title: str | None = None, xlabel: str | None = None,
               ylabel: str | None = None, log_x: bool = False, log_y: bool = False, height: int = 380,
               markers: bool = False) -> go.Figure:
    """``series = {name: (x, y)}`` or ``{name: (x, y, band)}`` where band is a std/half-width array or a
    ``(lo, hi)`` pair: the band is drawn as a shaded area."""
    fig = go.Figure()
    for i, (name, s) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        x, y = np.asarray(s[0], dtype=float), np.asarray(s[1], dtype=float)
        if len(s) > 2 and s[2] is not None:
            band = s[2]
            if isinstance(band, tuple) and len(band) == 2:
                lo, hi = np.asarray(band[0], dtype=float), np.asarray(band[1], dtype=float)
            else:
                b = np.asarray(band, dtype=float)
                lo, hi = y - b, y + b
            fig.add_trace(go.Scatter(x=np.concatenate([x, x[::-1]]), y=np.concatenate([hi, lo[::-1]]),
                                     fill="toself", fillcolor=_rgba(color, 0.18), line=dict(width=0),
                                     hoverinfo="skip", showlegend=False, name=f"{name} band"))
        fig.add_trace(go.Scatter(x=x, y=y, name=name, mode="lines+markers" if markers else "lines",
                                 line=dict(color=color)))
    fig.update_layout(template=TEMPLATE, title=title, xaxis_title=xlabel, yaxis_title=ylabel, height=height,
                      margin=dict(l=60, r=20, t=50 if title else 20, b=50), legend=dict(orientation="h", y=-0.2))
    if log_x:
        fig.update_xaxes(type="log")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def bar_chart(labels: Sequence[str], values: Sequence[float], *, errors: Sequence[float] | None = None,
              title: str | None = None, xlabel: str | None = None, ylabel: str | None = None,
              horizontal: bool = False, text_fmt: str | None = ".3g", reference: float | None = None,
              reference_label: str | None = None, height: int = 380, color: str | None = None) -> go.Figure:
    """Bars with optional error bars and a dashed reference line (e.g. speedup 1.0x)."""
    labels, values = list(labels), list(map(float, values))
    err = dict(type="data", array=list(errors)) if errors is not None else None
    text = [format(v, text_fmt) for v in values] if text_fmt else None
    bar = go.Bar(x=values if horizontal else labels, y=labels if horizontal else values,
                 orientation="h" if horizontal else "v", error_x=err if horizontal else None,
                 error_y=None if horizontal else err, text=text, textposition="auto",
                 marker_color=color or PALETTE[0])
    fig = go.Figure(bar)
    if reference is not None:
        if horizontal:
            fig.add_vline(x=reference, line_dash="dash", line_color="gray", annotation_text=reference_label)
        else:
            fig.add_hline(y=reference, line_dash="dash", line_color="gray", annotation_text=reference_label)
    fig.update_layout(template=TEMPLATE, title=title, xaxis_title=xlabel, yaxis_title=ylabel, height=height,
                      margin=dict(l=60, r=20, t=50 if title else 20, b=50))
    if horizontal:
        fig.update_yaxes(autorange="reversed")
    return fig


def grouped_bar_chart(groups: Sequence[str], series: Mapping[str, Sequence[float]], *,
                      errors: Mapping[str, Sequence[float]] | None = None, title: str | None = None,
                      xlabel: str | None = None, ylabel: str | None = None, height: int = 400,
                      reference: float | None = None) -> go.Figure:
    """Bars grouped by ``groups`` (x), one colour per series."""
    fig = go.Figure()
    for i, (name, vals) in enumerate(series.items()):
        err = dict(type="data", array=list(errors[name])) if errors and name in errors else None
        fig.add_trace(go.Bar(name=name, x=list(groups), y=list(map(float, vals)), error_y=err,
                             marker_color=PALETTE[i % len(PALETTE)]))
    if reference is not None:
        fig.add_hline(y=reference, line_dash="dash", line_color="gray")
    fig.update_layout(template=TEMPLATE, barmode="group", title=title, xaxis_title=xlabel, yaxis_title=ylabel,
                      height=height, margin=dict(l=60, r=20, t=50 if title else 20, b=50),
                      legend=dict(orientation="h", y=-0.2))
    return fig


def speedup_chart(x: Sequence[float], speedups: Mapping[str, Sequence[float]], *, title: str | None = None,
                  xlabel: str = "sparsity", height: int = 400) -> go.Figure:
    """Speedup-over-baseline curves with the 1x line dashed."""
    fig = line_chart({k: (x, v) for k, v in speedups.items()}, title=title, xlabel=xlabel,
                     ylabel="speedup (x)", height=height, markers=True)
    fig.add_hline(y=1.0, line_dash="dash", line_color="gray", annotation_text="1x")
    return fig


def scatter_2d(xy, labels=None, *, names: Sequence[str] | None = None, hover: Sequence[str] | None = None,
               title: str | None = None, highlight: Sequence[int] | None = None, height: int = 480,
               marker_size: int = 7) -> go.Figure:
    """A 2-D embedding map coloured by integer ``labels`` (legend from ``names``); ``highlight`` rings points.

    Every point's ``customdata`` is its row index, so click handlers can recover it.
    """
    xy = np.asarray(xy, dtype=float)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ValueError(f"scatter_2d needs an (N, 2) array, got {xy.shape}")
    labels = np.zeros(len(xy), int) if labels is None else np.asarray(labels)
    fig = go.Figure()
    for i, c in enumerate(np.unique(labels)):
        sel = np.nonzero(labels == c)[0]
        name = names[int(c)] if names is not None and int(c) < len(names) else str(c)
        fig.add_trace(go.Scattergl(x=xy[sel, 0], y=xy[sel, 1], mode="markers", name=name, customdata=sel,
                                   text=[hover[j] for j in sel] if hover is not None else None,
                                   hovertemplate="%{text}<extra>" + name + "</extra>" if hover is not None else None,
                                   marker=dict(size=marker_size, color=PALETTE[i % len(PALETTE)], opacity=0.85)))
    if highlight is not None and len(highlight):
        h = np.asarray(highlight)
        fig.add_trace(go.Scatter(x=xy[h, 0], y=xy[h, 1], mode="markers", name="selected", customdata=h,
                                 marker=dict(size=marker_size + 8, color="rgba(0,0,0,0)",
                                             line=dict(color="black", width=2))))
    fig.update_layout(template=TEMPLATE, title=title, height=height, margin=dict(l=40, r=20, t=50 if title else 20, b=40))
    return fig


def table_figure(header: Sequence[str], rows: Sequence[Sequence], *, title: str | None = None,
                 height: int | None = None) -> go.Figure:
    """A plotly table (for apps; notebooks print markdown tables instead)."""
    cols = list(zip(*rows)) if rows else [[] for _ in header]
    fig = go.Figure(go.Table(header=dict(values=list(header), fill_color="#e8eef7", align="left"),
                             cells=dict(values=cols, align="left")))
    fig.update_layout(title=title, height=height or 60 + 28 * (len(rows) + 1), margin=dict(l=5, r=5, t=40 if title else 5, b=5))
    return fig


def colorize_labels(mask, n_classes: int | None = None) -> np.ndarray:
    """An integer label map (H, W) as an RGB image: 0 is black, class ``k`` gets palette colour ``k - 1``."""
    m = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask).astype(np.int64)
    if m.ndim != 2:
        raise ValueError(f"label map must be 2-D, got shape {m.shape}")
    colors = np.array([[0, 0, 0]] + [[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in PALETTE], np.uint8)
    return colors[np.where(m > 0, (m - 1) % len(PALETTE) + 1, 0)]
