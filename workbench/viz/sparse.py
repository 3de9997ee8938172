"""Figures for Balanced Sparsity (Yao et al., AAAI 2019): pruning patterns side by side, per-bank and per-row
nonzero counts (balanced is flat: equal work per bank and per row), speed curves from live and committed
measurements, and accuracy-vs-sparsity curves from the study. Used by notebook 07, the widgets and the app tab.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from workbench.viz.core import PALETTE, TEMPLATE, line_chart

METHOD_COLORS = {"dense": "#7f7f7f", "balanced": PALETTE[0], "unstructured": PALETTE[1], "block": PALETTE[2],
                 "vector": PALETTE[3], "nm": PALETTE[4 % len(PALETTE)], "csr": PALETTE[1], "csr_scipy": PALETTE[1],
                 "csr_torch": PALETTE[5 % len(PALETTE)], "bsr_scipy": PALETTE[2], "dense_torch": "#7f7f7f",
                 "dense_numpy": "#bcbd22"}
LABELS = {"nm": "N:M", "csr": "CSR (scipy)", "block": "block 4x4", "vector": "vector 4x1"}


def _np(a):
    return np.asarray(a.detach().cpu().float() if hasattr(a, "detach") else a, dtype=float)


def pattern_figure(W, masks: Mapping[str, object], *, rows: int = 32, cols: int = 64, bank_size: int | None = None,
                   title: str | None = None, grid_cols: int = 3) -> go.Figure:
    """|W| and the kept weights of every mask on the top-left ``rows x cols`` crop, in a grid of square-ish panels
    (bank borders dotted)."""
    Wa = np.abs(_np(W).reshape(_np(W).shape[0], -1))[:rows, :cols]
    names = ["|W|"] + [LABELS.get(m, m) for m in masks]
    nr = -(-len(names) // grid_cols)
    fig = make_subplots(rows=nr, cols=grid_cols, subplot_titles=names, vertical_spacing=0.12, horizontal_spacing=0.04)
    panels = [Wa] + [np.where(_np(mask).reshape(_np(mask).shape[0], -1)[:rows, :cols] > 0, Wa, np.nan)
                     for mask in masks.values()]
    for i, (z, name) in enumerate(zip(panels, ["|W|", *masks])):
        r, c = i // grid_cols + 1, i % grid_cols + 1
        fig.add_trace(go.Heatmap(z=z, colorscale="Greys" if i == 0 else "Viridis", showscale=False,
                                 hovertemplate="row %{y}, col %{x}: %{z:.3f}<extra>" + name + "</extra>"), r, c)
        if bank_size:
            for b in range(bank_size, Wa.shape[1], bank_size):
                fig.add_vline(x=b - 0.5, line_width=1, line_dash="dot", line_color="#d62728", row=r, col=c)
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_layout(template=TEMPLATE, title=title, height=80 + 230 * nr, margin=dict(l=20, r=20, t=80, b=20))
    return fig


def bank_histogram(balance: Mapping[str, dict], bank_size: int, *, key: str = "per_bank",
                   title: str | None = None) -> go.Figure:
    """Histogram of nonzeros per bank (``key='per_bank'``) or per row (``'per_row'``), one bar series per method:
    balanced (and N:M) is a single bar — every bank holds the same work."""
    fig = go.Figure()
    for m, d in balance.items():
        v = np.asarray(d[key], dtype=int)
        vals, counts = np.unique(v, return_counts=True)
        fig.add_trace(go.Bar(x=vals, y=counts / counts.sum(), name=f"{LABELS.get(m, m)} (max/mean {d['imbalance']:.2f})"
                             if key == "per_row" else LABELS.get(m, m), marker_color=METHOD_COLORS.get(m)))
    what = "bank" if key == "per_bank" else "row"
    fig.update_layout(template=TEMPLATE, barmode="group", height=360,
                      title=title or f"nonzeros per {what}" + (f" (bank of {bank_size})" if key == "per_bank" else ""),
                      xaxis_title=f"nonzeros in a {what}", yaxis_title=f"fraction of {what}s",
                      margin=dict(l=60, r=20, t=50, b=50), legend=dict(orientation="h", y=-0.25))
    return fig


def live_speed_figure(rows: Sequence[dict], *, gpu_rows: Sequence[dict] = (), size: int | None = None,
                      batch: int | None = None, title: str | None = None) -> go.Figure:
    """Speedup over dense vs sparsity: live CPU rows (``live_speed``) plus committed GPU records (dashed, same
    size/batch if present, device name in the legend)."""
    series = {}
    for m in dict.fromkeys(r["method"] for r in rows):
        pts = sorted((r["sparsity"], r["speedup"]) for r in rows if r["method"] == m)
        series[f"CPU {LABELS.get(m, m)}"] = ([p[0] for p in pts], [p[1] for p in pts])
    fig = line_chart(series, xlabel="sparsity", ylabel="speedup over dense (x)", markers=True, height=400,
                     title=title or (f"live CPU measurement, {size}x{size}, batch {batch}" if size else None))
    g = [r for r in gpu_rows if (size is None or r["size"] == size) and (batch is None or r["batch"] == batch)
         and r["method"] in ("balanced_fp32", "cusparse_csr", "bsr_torch")]
    for i, m in enumerate(dict.fromkeys(r["method"] for r in g)):
        pts = sorted((r["target"], r["speedup_vs_dense"]) for r in g if r["method"] == m)
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                 line=dict(dash="dash", color=PALETTE[(i + 3) % len(PALETTE)]),
                                 name=f"GPU {m} ({g[0].get('device', 'GPU')}, committed)"))
    fig.add_hline(y=1.0, line_dash="dot", line_color="gray")
    return fig


REFERENCE_ROWS = ("read_same_bytes", "kernel_into_y", "matmul_python_path")  # benchmark rows that are references, not products (drawn only on request)


def records_speed_figure(rows: Sequence[dict], *, x: str = "target", size: int = 4096, batch: int = 1,
                         target: float = 0.9, value: str = "median_ms", methods: Sequence[str] | None = None,
                         title: str | None = None) -> go.Figure:
    """Committed benchmark rows as curves: ``x='target'`` (sparsity sweep at ``size``/``batch``), ``'size'``
    (at ``target``/``batch``) or ``'batch'`` (at ``size``/``target``); ``value`` median_ms / speedup_vs_dense / gbps."""
    if x not in ("target", "size", "batch"):
        raise ValueError(f"x must be 'target', 'size' or 'batch', got {x!r}")
    fixed = {"target": ("size", size, "batch", batch), "size": ("target", target, "batch", batch),
             "batch": ("size", size, "target", target)}[x]
    sel = [r for r in rows if r[fixed[0]] == fixed[1] and r[fixed[2]] == fixed[3]]
    if not sel:
        raise ValueError(f"no committed records with {fixed[0]}={fixed[1]} and {fixed[2]}={fixed[3]}")
    series = {}
    for m in dict.fromkeys(r["method"] for r in sel):
        if (methods and m not in methods) or (not methods and m in REFERENCE_ROWS):
            continue
        pts = sorted((r[x], r[value]) for r in sel if r["method"] == m)
        series[m] = ([p[0] for p in pts], [p[1] for p in pts])
    label = {"median_ms": "time (ms, median)", "speedup_vs_dense": "speedup over best dense (x)", "gbps": "GB/s",
             "pct_bw": "% of the read-bandwidth bound"}[value]
    xl = {"target": "sparsity", "size": "matrix size (rows = cols)", "batch": "batch (columns of x)"}[x]
    fig = line_chart(series, xlabel=xl, ylabel=label, markers=True, log_y=value == "median_ms",
                     log_x=x in ("size", "batch"), height=400, title=title)
    if value == "speedup_vs_dense":
        fig.add_hline(y=1.0, line_dash="dot", line_color="gray")
    return fig


def accuracy_figure(curves: Mapping[str, Mapping[float, Sequence[float]]], dense: Sequence[float], *,
                    metric: str = "test accuracy", title: str | None = None) -> go.Figure:
    """Metric vs sparsity per method (``curves = {method: {sparsity: [value per seed]}}``, mean ± sd band) with the
    dense models' mean as a dashed line."""
    series = {}
    for m, by_s in curves.items():
        ss = sorted(by_s)
        means = [float(np.mean(by_s[s])) for s in ss]
        sds = [float(np.std(by_s[s], ddof=1)) if len(by_s[s]) > 1 else 0.0 for s in ss]
        series[LABELS.get(m, m)] = (ss, means, sds)
    fig = line_chart(series, xlabel="sparsity", ylabel=metric, markers=True, height=380, title=title)
    if len(dense):
        fig.add_hline(y=float(np.mean(dense)), line_dash="dash", line_color="gray", annotation_text="dense")
    return fig


def crossover_figure(records: Sequence[dict], title: str | None = None) -> go.Figure:
    """The dispatcher's table: speedup of the balanced kernel over dense, one heatmap per sparsity (size x batch)."""
    sps = sorted({r["sparsity"] for r in records})
    sizes = sorted({r["size"] for r in records})
    batches = sorted({r["batch"] for r in records})
    fig = make_subplots(rows=1, cols=len(sps), subplot_titles=[f"sparsity {s:.3g}" for s in sps],
                        horizontal_spacing=0.06)
    for i, s in enumerate(sps):
        z = [[next((r["speedup"] for r in records if r["sparsity"] == s and r["size"] == n and r["batch"] == b),
                   np.nan) for b in batches] for n in sizes]
        fig.add_trace(go.Heatmap(z=z, x=[str(b) for b in batches], y=[str(n) for n in sizes], zmid=1.0,
                                 colorscale="RdBu", texttemplate="%{z:.1f}x", showscale=i == len(sps) - 1,
                                 colorbar=dict(title="speedup"),
                                 hovertemplate="size %{y}, batch %{x}: %{z:.2f}x<extra></extra>"), 1, i + 1)
    fig.update_xaxes(title_text="batch", type="category")
    fig.update_yaxes(title_text="size", type="category", col=1)
    fig.update_layout(template=TEMPLATE, height=360, margin=dict(l=60, r=20, t=70, b=50),
                      title=title or "Dispatcher table: balanced kernel vs dense (>1: sparse wins)")
    return fig
