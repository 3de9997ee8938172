"""Figures for Cross-Iteration BN: statistics trajectories of one layer (current batch, naive window,
compensated window, true window), compensation errors, the loss, and the study's batch-size and ablation
plots. Inputs are the JSON forms written by ``workbench.studies.cbn`` (``diagnostic.json``, ``records.jsonl``)."""
from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from .core import PALETTE, TEMPLATE, bar_chart, grouped_bar_chart, line_chart

KINDS = (("cur", "current batch"), ("naive", "naive window"), ("comp", "compensated window (CBN)"),
         ("true", "true window"))
NORM_LABELS = {"bn": "BN", "naive": "naive window (ρ=0)", "cbn": "CBN (ρ=1)", "gn": "GroupNorm"}


def _channel_series(diag: Mapping, key: str, channel: int) -> np.ndarray:
    rows = diag[key]
    if not rows:
        return np.zeros(0)
    c = len(rows[0])
    if not 0 <= channel < c:
        raise ValueError(f"channel must be in [0, {c - 1}], got {channel}")
    return np.asarray([r[channel] for r in rows], dtype=float)


def num_channels(diag: Mapping) -> int:
    return len(diag["mu_cur"][0]) if diag.get("mu_cur") else 0


def trajectories_figure(diag: Mapping, channel: int = 0, *, height: int = 560) -> go.Figure:
    """μ and σ² of one channel per step: current batch, naive window, compensated window and the true
    window statistics; the shaded bands span each window estimate's error to the true value."""
    from plotly.subplots import make_subplots

    steps = np.asarray(diag["step"], dtype=float)
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=(f"mean μ, channel {channel}", f"variance σ², channel {channel}"))
    for row, stat in ((1, "mu"), (2, "var")):
        true = _channel_series(diag, f"{stat}_true", channel)
        series = {}
        for k, label in KINDS:
            y = _channel_series(diag, f"{stat}_{k}", channel)
            band = (np.minimum(y, true), np.maximum(y, true)) if k in ("naive", "comp") else None
            series[label] = (steps, y, band)
        sub = line_chart(series)
        for tr in sub.data:
            tr.showlegend = row == 1 and tr.showlegend is not False
            tr.legendgroup = tr.name
            fig.add_trace(tr, row=row, col=1)
    fig.update_layout(template=TEMPLATE, height=height, margin=dict(l=60, r=20, t=40, b=40),
                      legend=dict(orientation="h", y=-0.08))
    fig.update_xaxes(title_text="training step", row=2, col=1)
    return fig


def error_figure(diag: Mapping, *, height: int = 360) -> go.Figure:
    """Mean absolute error of the stored past statistics against their true values (recomputed with the
    current weights): naive vs compensated, for μ and ν = E[x²]; log scale."""
    steps = np.asarray(diag["step"], dtype=float)
    series = {}
    for key, label in (("err_mu_naive", "μ naive"), ("err_mu_comp", "μ compensated"),
                       ("err_nu_naive", "ν naive"), ("err_nu_comp", "ν compensated")):
        vals = np.asarray([np.nan if v is None else max(float(v), 1e-12) for v in diag[key]], dtype=float)
        series[label] = (steps, vals)
    return line_chart(series, title="error of past statistics vs. recomputed (per entry, mean over channels)",
                      xlabel="training step", ylabel="|estimate − true|", log_y=True, height=height)


def loss_figure(loss: Sequence[float], *, smooth: int = 10, height: int = 300) -> go.Figure:
    """Training loss per step with a moving average."""
    y = np.asarray(loss, dtype=float)
    x = np.arange(1, len(y) + 1, dtype=float)
    series = {"loss": (x, y)}
    if len(y) >= smooth > 1:
        k = np.ones(smooth) / smooth
        series[f"moving average ({smooth})"] = (x[smooth - 1:], np.convolve(y, k, mode="valid"))
    return line_chart(series, title="training loss", xlabel="step", ylabel="cross-entropy", height=height)


def _acc_by(records: Sequence[Mapping], norm: str) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for r in records:
        if r.get("part", "main") == "main" and r["norm"] == norm:
            out.setdefault(int(r["batch_size"]), []).append(100 * float(r["test_acc"]))
    return out


def batch_size_figure(records: Sequence[Mapping], *, height: int = 420) -> go.Figure:
    """Test accuracy vs. batch size per normalisation (mean over seeds, band = ±1 std)."""
    series = {}
    for norm, label in NORM_LABELS.items():
        acc = _acc_by(records, norm)
        if not acc:
            continue
        bs = sorted(acc)
        mean = [statistics.fmean(acc[b]) for b in bs]
        std = [statistics.stdev(acc[b]) if len(acc[b]) > 1 else 0.0 for b in bs]
        series[label] = (bs, mean, std)
    if not series:
        raise ValueError("no main-grid records to plot")
    fig = line_chart(series, title="test accuracy vs. batch size (digits, SmallResNet)", xlabel="batch size",
                     ylabel="test accuracy (%)", log_x=True, height=height, markers=True)
    fig.update_xaxes(tickvals=sorted({b for r in records for b in [int(r["batch_size"])]}))
    return fig


def window_ablation_figure(summary_window: Mapping, *, height: int = 380) -> go.Figure:
    """Grouped bars: test accuracy per window size, naive vs compensated (``summarize(...)["window"]``,
    keys ``(norm, window)``)."""
    ws = sorted({w for (_, w) in summary_window})
    series, errors = {}, {}
    for norm, label in (("naive", "naive (ρ=0)"), ("cbn", "CBN (ρ=1)")):
        vals = [summary_window.get((norm, w), []) for w in ws]
        series[label] = [100 * statistics.fmean(v) if v else float("nan") for v in vals]
        errors[label] = [100 * statistics.stdev(v) if len(v) > 1 else 0.0 for v in vals]
    fig = grouped_bar_chart([f"k={w}" for w in ws], series, errors=errors, title="window size (batch 4)",
                            xlabel="window (iterations pooled)", ylabel="test accuracy (%)", height=height)
    lo = min(v for s in series.values() for v in s if v == v)
    fig.update_yaxes(range=[max(0.0, lo - 3), 100])
    return fig


def burnin_figure(summary_burnin: Mapping, *, height: int = 340) -> go.Figure:
    bes = sorted(summary_burnin)
    vals = [100 * statistics.fmean(summary_burnin[b]) for b in bes]
    errs = [100 * statistics.stdev(summary_burnin[b]) if len(summary_burnin[b]) > 1 else 0.0 for b in bes]
    fig = bar_chart([f"{b:g} epochs" for b in bes], vals, errors=errs, title="burn-in (batch 4, window 4)",
                    xlabel="plain-BN burn-in", ylabel="test accuracy (%)", text_fmt=".1f", height=height)
    fig.update_yaxes(range=[max(0.0, min(vals) - 3), 100])
    return fig


def compensation_demo_figure(errors: Mapping[str, Sequence[float]], labels: Sequence[str], *,
                             height: int = 360) -> go.Figure:
    """Grouped bars of compensation errors (e.g. ``{"naive": [...], "compensated": [...]}`` over
    ``labels`` such as ``["μ", "ν"]``), log scale."""
    fig = grouped_bar_chart(list(labels), {k: [max(float(v), 1e-12) for v in vals] for k, vals in errors.items()},
                            title="error of a past batch's statistics after one SGD step",
                            ylabel="mean |estimate − true|", height=height)
    fig.update_yaxes(type="log")
    return fig


__all__ = ["diagnostic_summary", "trajectories_figure", "error_figure", "loss_figure", "batch_size_figure", "window_ablation_figure",
           "burnin_figure", "compensation_demo_figure", "num_channels", "KINDS", "NORM_LABELS", "PALETTE"]


def diagnostic_summary(diag: Mapping) -> str:
    """Markdown: the run's settings and the mean per-entry errors of naive vs compensated statistics."""
    cfg = diag.get("config", {})
    def mean(key):
        vals = [float(v) for v in diag.get(key, []) if v is not None]
        return statistics.fmean(vals) if vals else float("nan")

    e = {k: mean(k) for k in ("err_mu_naive", "err_mu_comp", "err_nu_naive", "err_nu_comp")}
    loss = diag.get("loss", [])
    tail = statistics.fmean(loss[-20:]) if loss else float("nan")
    sb = cfg.get("stat_batch")
    group = (f" in statistics groups of {sb} image{'s' if sb != 1 else ''} (record: the first group)"
             if sb and sb != cfg.get("batch_size") else "")
    lines = [f"**batch** {cfg.get('batch_size')}{group} · **window** {cfg.get('window')} · **ρ** {cfg.get('rho')} · "
             f"**burn-in** {cfg.get('burnin')} steps · **layer** `{cfg.get('layer')}` · {len(diag.get('step', []))} steps "
             f"· final loss (mean of last 20) {tail:.3f}",
             "",
             "| mean per-entry error vs. recomputed | naive | compensated | ratio |",
             "|---|---|---|---|"]
    for s, lab in (("mu", "μ = E[x]"), ("nu", "ν = E[x²]")):
        n, c = e[f"err_{s}_naive"], e[f"err_{s}_comp"]
        r = n / c if c > 0 else float("nan")
        ratio = "–" if r != r else (f"{r:.1e}× smaller" if r >= 1000 else f"{r:.1f}× smaller")
        lines.append(f"| {lab} | {n:.2e} | {c:.2e} | {ratio} |")
    return "\n".join(lines)
