"""Figures for Swin Transformer V2: position-bias maps, coordinate mappings, study plots, top-5 bars.

All numbers come from ``workbench.swin_v2`` / study records; these builders only draw them (with the
generic builders of :mod:`workbench.viz.core`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from . import core


def _offsets(M: int) -> list[int]:
    return list(range(-(M - 1), M))


def coordinate_mapping_figure(pretrained_window: int = 4, windows: Sequence[int] = (4, 8, 16)) -> go.Figure:
    """Normalised CPB input coordinate vs offset: log-spaced and linear-spaced, for several windows
    (coordinates normalised by the pretrained window, so larger windows extrapolate)."""
    from workbench.swin_v2 import relative_coords_table

    series = {}
    for M in windows:
        for mode in ("log", "linear"):
            t = relative_coords_table(M, pretrained_window, mode)[0, M - 1, :, 1].numpy()
            series[f"{mode}, window {M}"] = (_offsets(M), t)
    fig = core.line_chart(series, title=f"CPB input coordinate (pretrained window {pretrained_window})",
                          xlabel="offset Δx (tokens)", ylabel="normalised coordinate", markers=True)
    fig.add_hrect(y0=-1.06, y1=1.06, fillcolor="gray", opacity=0.12, line_width=0,
                  annotation_text="range seen in training", annotation_position="top left")
    return fig


def cpb_curve_figure(curves: Mapping[int, np.ndarray], *, head: int = 0, title: str | None = None) -> go.Figure:
    """``curves = {window M: (2M-1,) bias along Δx at Δy = 0}`` as lines over the offset."""
    series = {f"window {M}": (_offsets(M), np.asarray(v, dtype=float)) for M, v in curves.items()}
    return core.line_chart(series, title=title or f"16·sigmoid(CPB) along Δx (Δy = 0), head {head}",
                           xlabel="offset Δx (tokens)", ylabel="bias", markers=True)


def offset_bias_heatmap(grid, *, title: str | None = None, zmin: float | None = None,
                        zmax: float | None = None) -> go.Figure:
    """A (2M-1, 2M-1) bias over offsets (rows Δy, columns Δx)."""
    g = np.asarray(grid.detach().cpu() if hasattr(grid, "detach") else grid, dtype=float)
    M = (g.shape[0] + 1) // 2
    return core.heatmap(g, x=_offsets(M), y=_offsets(M), title=title, xlabel="Δx", ylabel="Δy",
                        colorbar_title="bias", zmin=zmin, zmax=zmax, height=380)


def query_bias_figure(bias, query: tuple[int, int], *, title: str | None = None) -> go.Figure:
    """The (M, M) bias of one query to every key of the window, the query marked with an x."""
    b = np.asarray(bias.detach().cpu() if hasattr(bias, "detach") else bias, dtype=float)
    fig = core.heatmap(b, title=title or f"bias of query {query} over the window", xlabel="key x",
                       ylabel="key y", colorbar_title="bias", height=380, colorscale="Inferno")
    fig.add_trace(go.Scatter(x=[query[1]], y=[query[0]], mode="markers", showlegend=False, hoverinfo="skip",
                             marker=dict(symbol="x", size=14, color="#00ffcc", line=dict(width=2))))
    return fig


def transfer_figure(records: Sequence[dict]) -> go.Figure:
    """Accuracy at 64/w4, 128/w8 without and with fine-tuning, per position-bias type."""
    groups = ["64 px / w4 (train)", "128 px / w8, no fine-tune", "128 px / w8, fine-tuned"]
    series = {r["variant"]: [r["acc_64_w4"], r["acc_128_w8_zero_shot"], r["acc_128_w8_finetuned"]]
              for r in records}
    return core.grouped_bar_chart(groups, series, title="Resolution / window transfer on shapes",
                                  ylabel="top-1 accuracy")


def activation_figure(records: Sequence[dict], phase: str = "trained") -> go.Figure:
    """Mean |activation| after each block, one line per variant."""
    if phase not in ("init", "trained"):
        raise ValueError("phase must be 'init' or 'trained'")
    series = {r["variant"]: (list(range(1, len(r[f"amp_{phase}"]) + 1)), r[f"amp_{phase}"]) for r in records}
    return core.line_chart(series, title=f"Activation amplitude by depth ({phase})", xlabel="block",
                           ylabel="mean |x|", markers=True)


def logit_range_figure(records: Sequence[dict], phase: str = "trained") -> go.Figure:
    """Per-block attention-logit range (min..max band, std line) per variant."""
    series = {}
    for r in records:
        st = r[f"logits_{phase}"]
        x = list(range(1, len(st) + 1))
        series[r["variant"]] = (x, [s["std"] for s in st], ([s["min"] for s in st], [s["max"] for s in st]))
    return core.line_chart(series, title=f"Attention logits by block ({phase}): std, band = min..max",
                           xlabel="block", ylabel="logit", markers=True)


def topk_figure(pairs: Sequence[tuple[str, float]], title: str = "top-5") -> go.Figure:
    labels = [p[0] for p in pairs]
    vals = [p[1] for p in pairs]
    return core.bar_chart(labels, vals, horizontal=True, title=title, xlabel="probability", text_fmt=".2f",
                          height=300)


def bias_panel(model, v1_tables: Mapping[str, object] | None, *, layer: int = 0, block: int = 0, head: int = 0,
               window: int = 8, pretrained_window: int = 4, query: tuple[int, int] = (0, 0)):
    """The app tab's / explorer's figures for one attention module of ``model``:
    (CPB bias over offsets, one query's bias over the window, V1 table interpolated to the same window
    or None, a one-line summary)."""
    from workbench import swin_v2

    attn = swin_v2.attention_module(model, layer, block)
    if not 0 <= head < attn.num_heads:
        raise ValueError(f"layer {layer} has {attn.num_heads} head(s); head must be in 0..{attn.num_heads - 1}")
    window, pretrained_window = int(window), int(pretrained_window)
    if not 2 <= window <= 32:
        raise ValueError(f"window must be between 2 and 32, got {window}")
    if not 0 <= pretrained_window <= 32:
        raise ValueError(f"pretrained window must be between 0 and 32 (0 = the window itself), got {pretrained_window}")
    qy, qx = (int(q) for q in query)
    qy, qx = min(max(qy, 0), window - 1), min(max(qx, 0), window - 1)
    cpb = swin_v2.bias_over_offsets(attn, window, pretrained_window)[head]
    q = swin_v2.query_bias(cpb, qy, qx)
    f1 = offset_bias_heatmap(cpb, title=f"16·sigmoid(CPB), layer {layer} block {block} head {head}, "
                                       f"window {window} (pretrained {pretrained_window or window})",
                             zmin=0, zmax=16)
    f2 = query_bias_figure(q, (qy, qx), title=f"bias of query ({qy}, {qx}) over the {window}x{window} window")
    f3 = None
    key = f"layers.{layer}.blocks.{block}.attn.relative_position_bias_table"
    if v1_tables and key in v1_tables:
        t = swin_v2.table_over_offsets(v1_tables[key], window)[head]
        src = (int(round(float(np.sqrt(v1_tables[key].shape[0])))) + 1) // 2
        f3 = offset_bias_heatmap(t, title=f"V1 parametric table ({src}x{src} trained) bicubic to window {window}")
    dist = float(cpb.max() - cpb.min())
    text = (f"CPB bias range {float(cpb.min()):.2f} .. {float(cpb.max()):.2f} (spread {dist:.2f}); "
            f"the MLP was trained with window {attn.window_size}, pretrained window "
            f"{attn.pretrained_window_size or attn.window_size}.")
    return f1, f2, f3, text
