"""``workbench report``: one static HTML page with every paper's claims side by side.

For each claim of ``studies/<paper>/claims.json`` (written by the studies, see
:mod:`workbench.studies.protocol`): the paper's statement and number, our arms (mean ± sd over seeds), the
difference with its 95% interval, the verdict with its reason, a plot of the arms, and the command that
reproduces it. The page embeds plotly's JavaScript once and makes no network request, so it opens offline
from disk.
"""
from __future__ import annotations

import html
import json
import math
from pathlib import Path

from .records import studies_root

PAPERS = {  # folder -> (title, venue)
    "swin_v2": ("Swin Transformer V2", "CVPR 2022"),
    "simmim": ("SimMIM", "CVPR 2022"),
    "moby": ("MoBY: self-supervised learning with Swin Transformers", "arXiv 2021"),
    "cbn": ("Cross-Iteration Batch Normalization", "CVPR 2021"),
    "dnl": ("Disentangled Non-Local Neural Networks", "ECCV 2020"),
    "icar": ("iCAR / iCLIP", "CVPR 2023"),
    "sparse": ("Balanced Sparsity", "AAAI 2019"),
}
VERDICT_COLORS = {"reproduced": "#1a7f37", "partly": "#9a6700", "not reproduced": "#cf222e"}


def packaged_studies() -> Path:
    """The committed study folders shipped with the package, or ``$WORKBENCH_STUDIES`` (:func:`records.studies_root`)."""
    return studies_root()


def load_claims(studies: str | Path | None = None) -> dict[str, dict]:
    """``{paper: claims document}`` for every ``<paper>/claims.json`` under ``studies``, in paper order."""
    root = Path(studies) if studies is not None else packaged_studies()
    if not root.is_dir():
        raise FileNotFoundError(f"no study folder at {root}")
    docs = {}
    for paper in list(PAPERS) + sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in PAPERS):
        f = root / paper / "claims.json"
        if f.exists():
            docs[paper] = json.loads(f.read_text())
    return docs


def _num(v) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    a = abs(v)
    return f"{v:.3g}" if a >= 0.01 or a == 0 else f"{v:.2e}"


def claim_figure(c: dict):
    """A bar per arm (mean, sd as the error bar); the baseline and the method are coloured."""
    import plotly.graph_objects as go

    names = list(c["arms"])
    means = [c["arms"][a]["mean"] for a in names]
    sds = [c["arms"][a]["sd"] for a in names]
    colors = ["#0969da" if a == c["method"] else "#8c959f" if a == c["baseline"] else "#d0d7de" for a in names]
    fig = go.Figure(go.Bar(x=names, y=means, error_y=dict(type="data", array=sds, visible=True),
                           marker_color=colors, text=[_num(m) for m in means], textposition="outside",
                           hovertemplate="%{x}: %{y:.4g}<extra></extra>"))
    for level, label in ((c.get("chance"), "chance"), (c.get("perfect"), "perfect")):
        if level is not None:
            fig.add_hline(y=level, line_dash="dot", line_color="#57606a", annotation_text=label,
                          annotation_position="top left")
    fig.update_layout(height=300, margin=dict(l=40, r=10, t=30, b=90), yaxis_title=c["metric"],
                      title=dict(text=f"{c['metric']} ({'higher' if c['direction'] == 'higher' else 'lower'} is better)",
                                 font=dict(size=12)), showlegend=False)
    return fig


def _claim_html(c: dict, div: str) -> str:
    d = c.get("difference") or {}
    arms = "".join(f"<li><b>{html.escape(a)}</b>: {_num(s['mean'])} ± {_num(s['sd'])} (n = {s['n']})</li>"
                   for a, s in c["arms"].items())
    ci = d.get("ci95") or [float("nan"), float("nan")]
    color = VERDICT_COLORS.get(c["verdict"], "#57606a")
    return f"""
<div class="claim" id="{html.escape(c['id'])}">
  <h3>{html.escape(c['claim'])}</h3>
  <div class="row">
    <div class="text">
      <p><span class="verdict" style="background:{color}">{html.escape(c['verdict'])}</span></p>
      <p><b>Paper:</b> {html.escape(c['paper_value'])}</p>
      <p><b>Ours</b> ({html.escape(c['metric'])}):</p><ul>{arms}</ul>
      <p><b>{html.escape(c['method'])} − {html.escape(c['baseline'])}:</b> {_num(d.get('mean'))}
         (95% CI {_num(ci[0])} to {_num(ci[1])}, n = {d.get('n', '–')})</p>
      <p class="why">{html.escape(c['why'])}</p>
      <p><b>Reproduce:</b> <code>{html.escape(c['command'])}</code></p>
    </div>
    <div class="plot" id="{div}"></div>
  </div>
</div>"""


def render(docs: dict[str, dict]) -> str:
    """The whole page as a string (plotly's JavaScript inlined once)."""
    from plotly.offline import get_plotlyjs

    sections, scripts, summary = [], [], []
    k = 0
    for paper, doc in docs.items():
        title, venue = PAPERS.get(paper, (paper, ""))
        claims = []
        for c in doc["claims"]:
            div = f"fig{k}"
            k += 1
            claims.append(_claim_html(c, div))
            fig = claim_figure(c).to_json()
            scripts.append(f"(function(){{var f={fig};Plotly.newPlot('{div}',f.data,f.layout,"
                           "{displaylogo:false,responsive:true});})();")
            summary.append(f"<tr><td>{html.escape(title)}</td><td><a href='#{html.escape(c['id'])}'>"
                           f"{html.escape(c['claim'])}</a></td><td style='color:{VERDICT_COLORS.get(c['verdict'])}'>"
                           f"{html.escape(c['verdict'])}</td></tr>")
        sections.append(f"<section id='{html.escape(paper)}'><h2>{html.escape(title)} "
                        f"<small>{html.escape(venue)}</small></h2>{''.join(claims)}</section>")
    counts = {v: sum(c["verdict"] == v for d in docs.values() for c in d["claims"]) for v in VERDICT_COLORS}
    head = ", ".join(f"{n} {v}" for v, n in counts.items())
    pending = [title for paper, (title, _) in PAPERS.items() if paper not in docs]
    if pending:
        head += (". Not judged yet (no committed claims.json; each paper's study writes one: "
                 "<code>workbench train --list</code>): " + ", ".join(html.escape(t) for t in pending))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Vision Workbench — claims and verdicts</title>
<style>
body{{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2em auto;max-width:1200px;color:#1f2328;padding:0 1em}}
h2 small{{font-weight:normal;color:#57606a;font-size:60%}} .claim{{border:1px solid #d0d7de;border-radius:6px;padding:0 1em 1em;margin:1em 0}}
.row{{display:flex;gap:1em;flex-wrap:wrap}} .text{{flex:1 1 480px}} .plot{{flex:1 1 420px;min-height:300px}}
.verdict{{color:white;padding:2px 8px;border-radius:10px;font-weight:600}} .why{{color:#57606a}}
code{{background:#f6f8fa;padding:2px 4px;border-radius:4px}} table{{border-collapse:collapse}} td{{padding:2px 8px;border-bottom:1px solid #eee}}
</style>
<script type="text/javascript">{get_plotlyjs()}</script></head><body>
<h1>Vision Workbench — the papers' claims, tested</h1>
<p>Each claim is tested under one protocol: normalised inputs and a warm-up + cosine schedule; every baseline at
least halfway from chance to perfect before a comparison counts; at least three seeds; mean ± sd; paired
differences with 95% intervals; <b>reproduced</b> only beyond two standard errors in the paper's direction,
<b>partly</b> when in that direction but within noise, <b>not reproduced</b> otherwise (the reason is given).
Laptop scale: small models, procedural data, minutes of CPU — a claim that does not show here may still hold at
the paper's scale. Totals: {head}.</p>
<table><tr><th>paper</th><th>claim</th><th>verdict</th></tr>{''.join(summary)}</table>
{''.join(sections)}
<script>{''.join(scripts)}</script>
</body></html>"""


def write_report(out: str | Path = "runs/report.html", studies: str | Path | None = None) -> Path:
    """Write the page for every ``<paper>/claims.json`` under ``studies`` (default: the committed ones); papers
    without one are named as not judged yet."""
    docs = load_claims(studies)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(docs))
    return out


def claims_markdown(paper: str, studies: str | Path | None = None) -> str:
    """A markdown table of one paper's claims (the paper's value, our arms, the difference, the verdict) for the
    notebooks; numbers rounded to three significant digits."""
    docs = load_claims(studies)
    if paper not in docs:
        raise FileNotFoundError(f"no claims.json for {paper!r}; run its study (workbench train ... --commit)")
    rows = ["| claim | paper | ours (mean ± sd over seeds) | difference (95% CI) | verdict |", "|---|---|---|---|---|"]
    for c in docs[paper]["claims"]:
        arms = "<br>".join(f"{html.escape(a)}: {_num(s['mean'])} ± {_num(s['sd'])} (n={s['n']})"
                           for a, s in c["arms"].items())
        d = c.get("difference") or {}
        ci = d.get("ci95") or [None, None]
        rows.append(f"| {c['claim']} | {c['paper_value']} | {arms} | {_num(d.get('mean'))} ({_num(ci[0])} to "
                    f"{_num(ci[1])}) | **{c['verdict']}** |")
    return "\n".join(rows)


def claim(paper: str, claim_id: str, studies: str | Path | None = None) -> dict:
    """One claims.json entry (e.g. to draw it with :func:`claim_figure` in a notebook)."""
    for c in load_claims(studies).get(paper, {}).get("claims", []):
        if c["id"] == claim_id:
            return c
    raise KeyError(f"no claim {claim_id!r} for {paper!r}")
