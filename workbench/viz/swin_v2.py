"""Figures for Swin Transformer V2: position-bias maps, coordinate mappings, study plots, top-5 bars.

All numbers come from ``workbench.demos.swin_v2`` / study records; these builders only draw them (with the
generic builders of :mod:`workbench.viz.core`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from . import core


def _offsets(M: int) -> list[int]:
    return list(range(-(M - 1), M))


def coordinate_mapping_figure(curves: Mapping[str, tuple[Sequence[int], Sequence[float]]],
                              pretrained_window: int) -> go.Figure:
    """Normalised CPB input coordinate vs offset, ``curves = {label: (offsets, coordinates)}`` (coordinates
    normalised by the pretrained window, so larger windows extrapolate beyond ±1)."""
    fig = core.line_chart(dict(curves), title=f"CPB input coordinate (pretrained window {pretrained_window})",
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


def transfer_figure(summary: Mapping[str, Mapping[str, tuple[float, float]]]) -> go.Figure:
    """Accuracy (mean ± sd over seeds) per position bias, at the training window and after transfer.

    ``summary = {arm: {condition: (mean, sd)}}`` with conditions in display order."""
    arms = list(summary)
    groups = list(next(iter(summary.values())))
    series = {a: [summary[a][g][0] for g in groups] for a in arms}
    errors = {a: [summary[a][g][1] for g in groups] for a in arms}
    return core.grouped_bar_chart(groups, series, errors=errors, title="Window / resolution transfer (mean ± sd over seeds)",
                                  ylabel="top-1 accuracy", reference=0.1)


def activation_figure(curves: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str | None = None) -> go.Figure:
    """Residual-stream amplitude after each block: ``curves = {variant: (mean per block, sd per block)}``."""
    series = {k: (list(range(1, len(m) + 1)), list(m), list(sd)) for k, (m, sd) in curves.items()}
    return core.line_chart(series, title=title or "Activation amplitude by depth (mean ± sd over seeds)",
                           xlabel="block", ylabel="mean |x|", markers=True)


def topk_figure(pairs: Sequence[tuple[str, float]], title: str = "top-5") -> go.Figure:
    labels = [p[0] for p in pairs]
    vals = [p[1] for p in pairs]
    return core.bar_chart(labels, vals, horizontal=True, title=title, xlabel="probability", text_fmt=".2f",
                          height=300)
