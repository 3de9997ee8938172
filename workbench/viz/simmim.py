"""SimMIM figures: masks with their AvgDist, reconstructions, pre-training curves, the study plots.

Built on ``workbench.viz.core``; the notebook, the ipywidgets explorer and the app tab call these.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import plotly.graph_objects as go

from . import core

GREY = 0.5


def _colorize(values: np.ndarray, vmax: float | None = None, colorscale: str = "Inferno") -> np.ndarray:
    """(h, w) non-negative values (NaN = not shown) -> uint8 RGB via a plotly colour scale (NaN: grey)."""
    from plotly.colors import sample_colorscale, unlabel_rgb

    v = np.asarray(values, dtype=float)
    finite = np.isfinite(v)
    top = vmax if vmax is not None else (float(v[finite].max()) if finite.any() else 1.0)
    top = top if top > 0 else 1.0
    t = np.clip(np.where(finite, v, 0.0) / top, 0, 1)
    levels = np.round(t * 255).astype(int)
    lut = np.array([unlabel_rgb(c) for c in sample_colorscale(colorscale, list(np.linspace(0, 1, 256)))])
    rgb = lut[levels].astype(np.uint8)
    rgb[~finite] = 128
    return rgb


def masked_image(image: np.ndarray, pixel_mask: np.ndarray) -> np.ndarray:
    """Masked pixels shown grey, float (H, W, 3) in [0, 1]."""
    img = core.to_uint8_image(image).astype(np.float32) / 255
    m = np.asarray(pixel_mask, dtype=np.float32)[..., None]
    return img * (1 - m) + GREY * m


def masks_figure(image: np.ndarray, masks: Mapping[str, np.ndarray], avg_dists: Mapping[str, float] | None = None,
                 cols: int | None = None, title: str | None = None) -> go.Figure:
    """One panel per mask (pixel resolution) over ``image``; titles carry the AvgDist."""
    imgs, titles = [], []
    for name, m in masks.items():
        imgs.append(masked_image(image, m))
        d = avg_dists.get(name) if avg_dists else None
        frac = float(np.mean(m))
        titles.append(f"{name}<br>masked {100 * frac:.0f}%" + ("" if d is None else
                                                                f", AvgDist {'∞' if math.isinf(d) else f'{d:.1f}'}"))
    return core.image_grid(imgs, titles, cols=cols, title=title, height_per_row=230)


def error_image(rec, vmax: float | None = None) -> np.ndarray:
    """The per-patch error on masked patches as a colour image at pixel resolution (visible: grey)."""
    e = np.where(rec.token_mask == 1, rec.patch_error, np.nan)
    H = rec.original.shape[0]
    s = H // e.shape[0]
    return np.repeat(np.repeat(_colorize(e, vmax), s, axis=0), s, axis=1)


PANEL_TITLES = ("original", "masked input", "reconstruction", "composite", "error (masked patches)")
_GAP = 4


def _strip(images: Sequence[np.ndarray], gap: int = _GAP) -> np.ndarray:
    """Equal-sized images side by side with white gaps, uint8."""
    ims = [core.to_uint8_image(i) for i in images]
    h = ims[0].shape[0]
    sep = np.full((h, gap, 3), 255, dtype=np.uint8)
    parts = []
    for i, im in enumerate(ims):
        parts += [im] + ([sep] if i < len(ims) - 1 else [])
    return np.concatenate(parts, axis=1)


def reconstruction_figure(rec, title: str | None = None) -> go.Figure:
    """Original, masked input, reconstruction, composite and the masked-patch error map side by side.

    Drawn as ONE image trace (the five panels in a strip) with a plain layout: the app redraws this on every
    slider move, and a five-subplot figure with a full template costs several times the model's forward.
    """
    panels = [rec.original, rec.masked_input, rec.reconstruction, rec.composite, error_image(rec)]
    strip = _strip(panels)
    H, W = rec.original.shape[:2]
    if title is None:
        d = "∞" if math.isinf(rec.avg_dist) else f"{rec.avg_dist:.1f}"
        e = np.where(rec.token_mask == 1, rec.patch_error, np.nan)
        emax = float(np.nanmax(e)) if np.isfinite(e).any() else 0.0
        title = (f"masked {100 * rec.token_mask.mean():.0f}% · AvgDist {d} px · L1 loss {rec.loss:.3f} · "
                 f"error colour scale 0 – {emax:.2f}")
    ann = [dict(x=i * (W + _GAP) + W / 2, y=-2, xref="x", yref="y", text=t, showarrow=False, yanchor="bottom",
                font=dict(size=12)) for i, t in enumerate(PANEL_TITLES)]
    fig = go.Figure(go.Image(source=core._png_uri(strip), hoverinfo="skip"))
    fig.update_layout(template="none", title=dict(text=title, font=dict(size=14)), height=300,
                      margin=dict(l=5, r=5, t=70, b=5), annotations=ann,
                      xaxis=dict(visible=False), yaxis=dict(visible=False, scaleanchor="x"))
    return fig


def error_heatmap_figure(rec, title: str = "per-patch |target − prediction| (masked patches)") -> go.Figure:
    """The per-patch error of masked patches as a heat map (with a colour bar) over the image.

    Same picture as ``core.heatmap_over_image`` with a plain layout (cheap enough for every slider move).
    """
    e = np.where(rec.token_mask == 1, rec.patch_error, np.nan)
    img = core.to_uint8_image(rec.original)
    H, W = img.shape[:2]
    h, w = e.shape
    fig = go.Figure([go.Image(source=core._png_uri(img), hoverinfo="skip"),
                     go.Heatmap(z=e, x0=(W / w) / 2 - 0.5, dx=W / w, y0=(H / h) / 2 - 0.5, dy=H / h, opacity=0.75,
                                colorscale="Inferno", colorbar=dict(title="error"))])
    fig.update_layout(template="none", title=dict(text=title, font=dict(size=14)), height=360,
                      margin=dict(l=5, r=5, t=40, b=5), xaxis=dict(visible=False, range=[-0.5, W - 0.5]),
                      yaxis=dict(visible=False, range=[H - 0.5, -0.5], scaleanchor="x"))
    return fig


def reconstructions_figure(recs: Sequence, labels: Sequence[str]) -> go.Figure:
    """Rows of (masked input, composite, original) for several images."""
    imgs, titles = [], []
    for r, lab in zip(recs, labels):
        imgs += [r.masked_input, r.composite, r.original]
        titles += [f"{lab}: masked", f"{lab}: composite (loss {r.loss:.2f})", f"{lab}: original"]
    return core.image_grid(imgs, titles, cols=3, height_per_row=210)


def pretrain_curve_figure(curves: Mapping[str, Sequence[tuple[float, float]]],
                          title: str = "SimMIM pre-training loss") -> go.Figure:
    series = {name: ([c[0] for c in pts], [c[1] for c in pts]) for name, pts in curves.items() if pts}
    return core.line_chart(series, title=title, xlabel="optimizer step", ylabel="masked L1 loss (normalised pixels)")


def avgdist_grid_figure(rows: Sequence[dict], title: str = "AvgDist (pixels) by mask patch size and ratio") -> go.Figure:
    patches = sorted({r["mask_patch_size"] for r in rows})
    ratios = sorted({r["mask_ratio"] for r in rows})
    z = np.full((len(patches), len(ratios)), np.nan)
    for r in rows:
        v = r["avg_dist"]
        z[patches.index(r["mask_patch_size"]), ratios.index(r["mask_ratio"])] = v if math.isfinite(v) else np.nan
    return core.heatmap(z, x=[f"{r:.1f}" for r in ratios], y=[f"{p}px" for p in patches], title=title,
                        xlabel="mask ratio", ylabel="mask patch size", text_fmt=".1f", colorbar_title="AvgDist",
                        equal_aspect=False, height=340)


def accuracy_vs_avgdist_figure(records: Sequence[dict], task: str = "shapes",
                               title: str = "Fine-tuned accuracy vs AvgDist of the pre-training mask") -> go.Figure:
    """One series per mask patch size: (AvgDist, top-1) of the runs of the masking study."""
    by_patch: dict[int, list] = {}
    for r in records:
        if r.get("part") != "masking" or task not in r.get("acc", {}) or not math.isfinite(r.get("avg_dist", math.inf)):
            continue
        pc = r["pretrain"]
        if pc["head"] != "linear" or pc["loss"] != "l1" or not r["model"].startswith("swin"):
            continue
        by_patch.setdefault(pc["mask_patch_size"], []).append((r["avg_dist"], 100 * r["acc"][task], pc["mask_ratio"]))
    series = {}
    for p in sorted(by_patch):
        pts = sorted(by_patch[p])
        series[f"mask patch {p}px"] = ([a for a, _, _ in pts], [b for _, b, _ in pts])
    fig = core.line_chart(series, title=title, xlabel="AvgDist (pixels)", ylabel=f"{task} top-1 (%)", markers=True)
    scratch = [100 * r["acc"][task] for r in records if r.get("part") == "claim1" and not r.get("demo")
               and not r.get("pretrain") and r["model"].startswith("swin") and task in r.get("acc", {})]
    if scratch:
        fig.add_hline(y=scratch[0], line_dash="dash", line_color="gray", annotation_text="scratch")
    return fig


def finetune_bars_figure(records: Sequence[dict], title: str = "Fine-tuning: SimMIM pre-training vs scratch") -> go.Figure:
    rows = [r for r in records if r.get("part") == "claim1"]
    tasks = sorted({t for r in rows for t in r["acc"]}, reverse=True)
    series = {}
    for r in rows:
        name = f"{r['model'].split('_')[0]} {'SimMIM' if (r.get('demo') or r.get('pretrain')) else 'scratch'}"
        series[name] = [100 * r["acc"].get(t, float("nan")) for t in tasks]
    return core.grouped_bar_chart(tasks, series, title=title, ylabel="top-1 (%)")


def summary_markdown(rec, model: str | None = None) -> str:
    """The numbers shown under a reconstruction (app and explorer)."""
    d = "∞ (every pixel masked)" if math.isinf(rec.avg_dist) else f"{rec.avg_dist:.2f} px"
    m = rec.token_mask
    head = f"**{model}** · " if model else ""
    return (f"{head}masked tokens {int(m.sum())}/{m.size} ({100 * m.mean():.0f}%) · **AvgDist** {d} · "
            f"**loss** (masked L1, normalised pixels) {rec.loss:.4f}")
