"""iCAR figures: zero-shot probabilities with / without descriptions, retrieved captions, the study table."""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from .core import bar_chart, grouped_bar_chart, heatmap, image_grid

METRIC_LABELS = {
    "seen_acc": "seen-class accuracy",
    "zs_names": "zero-shot (names)",
    "zs_desc": "zero-shot (name: description)",
    "fs1": "1-shot",
    "fs5": "5-shot",
    "r1": "image→text R@1",
    "r5": "image→text R@5",
}


def probability_chart(names: Sequence[str], with_desc: Sequence[float], names_only: Sequence[float] | None = None,
                      *, title: str | None = "predicted probabilities", height: int = 380) -> go.Figure:
    """Class probabilities as bars; a second series for the same classes described by their names only."""
    if len(names) != len(with_desc) or (names_only is not None and len(names_only) != len(names)):
        raise ValueError("one probability per class name is needed")
    series = {"name: description": [float(v) for v in with_desc]}
    if names_only is not None:
        series["name only"] = [float(v) for v in names_only]
    fig = grouped_bar_chart(list(names), series, title=title, ylabel="probability", height=height)
    fig.update_yaxes(range=[0, 1])
    return fig


def caption_chart(captions: Sequence[str], scores: Sequence[float], *, title: str | None = "top captions",
                  height: int | None = None) -> go.Figure:
    """Retrieved captions (best first) as horizontal bars of their cosine similarity to the image."""
    fig = bar_chart(list(captions), [float(s) for s in scores], horizontal=True, title=title,
                    xlabel="cosine similarity", text_fmt=".3f", height=height or 90 + 40 * len(captions))
    fig.update_layout(margin=dict(l=330, r=20, t=50 if title else 20, b=50))
    return fig


def zero_shot_heatmap(probs, image_titles: Sequence[str], class_names: Sequence[str], *,
                      title: str | None = None) -> go.Figure:
    """Probabilities (images x classes) as a heat map with the values written in the cells."""
    p = np.asarray(probs, dtype=float)
    if p.shape != (len(image_titles), len(class_names)):
        raise ValueError(f"probabilities of shape {p.shape} do not match {len(image_titles)} images x "
                         f"{len(class_names)} classes")
    return heatmap(p, x=list(class_names), y=list(image_titles), title=title, colorscale="Blues", text_fmt=".2f")


def study_chart(rows: Sequence[dict], metrics: Sequence[str] = ("seen_acc", "zs_desc", "fs1", "r1"), *,
                title: str | None = "iCAR study (mean over seeds, error bar = std)") -> go.Figure:
    """Methods (x) x metrics (colours) from :func:`workbench.studies.icar.summarize` rows; missing = 0 bar."""
    groups = [r["label"] for r in rows]
    series, errors = {}, {}
    for k in metrics:
        vals = [r[k] for r in rows]
        series[METRIC_LABELS.get(k, k)] = [0.0 if math.isnan(v) else 100 * v for v in vals]
        errors[METRIC_LABELS.get(k, k)] = [0.0 if math.isnan(r[k + "_std"]) else 100 * r[k + "_std"] for r in rows]
    fig = grouped_bar_chart(groups, series, errors=errors, title=title, ylabel="%", height=460)
    fig.update_xaxes(tickangle=-20)
    return fig


def images_with_titles(images, titles: Sequence[str], cols: int | None = None) -> go.Figure:
    return image_grid(list(images), titles=list(titles), cols=cols, height_per_row=170)


def probability_markdown(report: dict, top: int = 10) -> str:
    """The numbers behind the charts: a markdown table of the class probabilities and the notices."""
    rows = sorted(zip(report["names"], report["with_desc"], report["names_only"]), key=lambda r: -r[1])[:top]
    lines = ["| class | p (name: description) | p (name only) |", "|---|---|---|"]
    lines += [f"| {n} | {a:.3f} | {b:.3f} |" for n, a, b in rows]
    notes = "".join(f"\n\n*{n}*" for n in report.get("notices", []))
    return "\n".join(lines) + notes
