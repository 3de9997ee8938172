# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Vision Workbench — a tour
#
# The workbench makes seven vision papers **runnable, visible and checkable** on a laptop CPU:
#
# | paper | notebook | app tab | code |
# |---|---|---|---|
# | Swin Transformer V2 (CVPR 2022) | `01_swin_v2` | Swin V2 | `workbench.swin_v2`, `workbench.vit` |
# | SimMIM (CVPR 2022) | `02_simmim` | SimMIM | `workbench.simmim` |
# | MoBY (2021) | `03_moby` | MoBY | `workbench.moby` |
# | Cross-Iteration BN (CVPR 2021) | `04_cbn` | CBN | `workbench.cbn` |
# | Disentangled Non-Local (ECCV 2020) | `05_dnl` | DNL | `workbench.dnl` |
# | iCAR / iCLIP (CVPR 2023) | `06_icar` | iCAR | `workbench.icar` |
# | Balanced Sparsity (AAAI 2019) | `07_balanced_sparsity` | Sparse | `workbench.sparse` |
#
# **One flow for every paper:** data (`workbench.data`) → backbones (`workbench.models`) → the paper's method →
# a *study* that tests the paper's claims and commits its records (`studies/<paper>/records.jsonl`,
# `claims.json`) → the *demos layer* (`workbench.demos.<paper>`), whose functions the app tab, the notebook and its
# explorer widget all call.

# %%
import numpy as np
import torch
from IPython.display import Markdown, display

torch.set_num_threads(1)
torch.manual_seed(0)

import workbench
from workbench import report, viz
from workbench.data import natural, shapes

print("workbench", workbench.__version__)

# %% [markdown]
# ## The shapes data
#
# Nothing is downloaded: most studies use **procedural shapes**, generated deterministically from a seed. Each
# sample has the class of its main object, a per-pixel mask (0 = background, class id + 1) and a caption built from
# its attributes — one generator serves classification, segmentation, self-supervision and image-text alignment.

# %%
print("classes:", ", ".join(shapes.CLASSES))
print("colours:", ", ".join(shapes.COLORS))
print("sizes:", ", ".join(shapes.SIZES), "| backgrounds:", ", ".join(shapes.BACKGROUNDS))
data = shapes.generate(shapes.ShapesConfig(n=1000, size=64, seed=0))
print(data.images.shape, data.images.dtype, "labels", data.labels[:10].tolist())
for c in data.captions[:4]:
    print(" -", c)

# %% tags=["nbval-ignore-output"]
viz.image_grid(list(data.images[:12]), titles=[shapes.CLASSES[i] for i in data.labels[:12]], cols=6,
               height_per_row=170, title="Twelve samples (seed 0)")

# %% [markdown]
# Classes are drawn uniformly; a chi-square statistic against the uniform distribution (9 degrees of freedom,
# 99.9% quantile 27.9) checks it on this draw. Multi-object scenes (`min_objects`, `max_objects`) label every
# object in the mask and relate them in the caption; the DNL study segments them.

# %%
counts = np.bincount(data.labels, minlength=len(shapes.CLASSES))
chi2 = (((counts - counts.mean()) ** 2) / counts.mean()).sum()
print("counts per class:", counts.tolist(), f"chi-square = {chi2:.2f}")
scenes = shapes.generate(shapes.ShapesConfig(n=3, size=96, seed=7, min_objects=2, max_objects=3))
for c in scenes.captions:
    print(" -", c)

# %% tags=["nbval-ignore-output"]
viz.image_grid([im for pair in zip(scenes.images, map(viz.colorize_labels, scenes.masks)) for im in pair],
               titles=["scene", "mask"] * 3, cols=6, height_per_row=190)

# %% [markdown]
# Real images come from installed packages: scikit-image and scikit-learn ship a handful of photos (SimMIM
# pre-training crops, the demos' photo inputs), and scikit-learn's 8×8 digits are a small real labelled set.

# %%
print("photos:", ", ".join(natural.photo_names()))
xtr, ytr = natural.digits("train")
xte, yte = natural.digits("test")
print(f"digits: {len(xtr)} train / {len(xte)} test, images {tuple(xtr.shape[1:])}, classes {ytr.unique().tolist()}")

# %% [markdown]
# ## The backbone registry
#
# `workbench.models.create_model(name, **overrides)` builds every Swin V2, Swin V1 and ViT configuration by name;
# SimMIM, MoBY, iCAR and the studies name a backbone without knowing which module defines it. Overrides are config
# fields: `img_size`, `num_classes` (0 gives pooled features), `window_size`, and for Swin `version="v1"` (pre-norm,
# dot-product attention, a bias table — Swin V1 with the same code path).

# %%
from workbench.models import create_model, model_names

print("swin:", ", ".join(model_names("swin")))
print("vit: ", ", ".join(model_names("vit")))
for name, kw in (("swinv2_micro_window4_64", {}), ("swinv2_lite_window4_64", {}),
                 ("swinv2_lite_window4_64", {"version": "v1"}), ("vit_lite_patch8_64", {})):
    m = create_model(name, **kw)
    print(f"{name:<24} {str(kw or ''):<18} {sum(p.numel() for p in m.parameters()) / 1e6:.2f}M parameters")

# %% [markdown]
# ## One claim per paper
#
# Every study follows one protocol (`workbench.studies.protocol`): at least three seeds per arm, mean ± sd, paired
# differences with 95% intervals, and a verdict — **reproduced** beyond two standard errors in the paper's
# direction, **partly** in that direction but within noise, **not reproduced** otherwise, and never counted when the
# baseline is not at least halfway from chance to perfect. The committed verdicts:

# %%
docs = report.load_claims()
rows = ["| paper | claims | reproduced | partly | not reproduced |", "|---|---|---|---|---|"]
for paper, doc in docs.items():
    v = [c["verdict"] for c in doc["claims"]]
    rows.append(f"| {report.PAPERS[paper][0]} | {len(v)} | {v.count('reproduced')} | {v.count('partly')} | "
                f"{v.count('not reproduced')} |")
display(Markdown("\n".join(rows)))

# %% [markdown]
# One figure per paper — each bar is an arm (mean over seeds, sd as the error bar), the method in blue and the
# baseline in grey; the paper notebooks show every claim with its numbers.

# %%
HEADLINES = {"swin_v2": "transfer_128_w8_vs_table", "simmim": "pretrain_vs_scratch_2000",
             "moby": "moby_vs_random_knn", "cbn": "cbn_vs_bn_b1", "dnl": "dnl_vs_nl",
             "icar": "zero_shot_vs_shallow", "sparse": "mlp_balanced_vs_unstructured_0.875"}
headline = {p: report.claim(p, i) for p, i in HEADLINES.items()}
for p, c in headline.items():
    print(f"{report.PAPERS[p][0]}: {c['claim']} -> {c['verdict']}")

# %%
report.claim_figure(headline["swin_v2"]).update_layout(title_text="Swin V2: " + headline["swin_v2"]["metric"])

# %%
report.claim_figure(headline["simmim"]).update_layout(title_text="SimMIM: " + headline["simmim"]["metric"])

# %%
report.claim_figure(headline["moby"]).update_layout(title_text="MoBY: " + headline["moby"]["metric"])

# %%
report.claim_figure(headline["cbn"]).update_layout(title_text="CBN: " + headline["cbn"]["metric"])

# %%
report.claim_figure(headline["dnl"]).update_layout(title_text="DNL: " + headline["dnl"]["metric"])

# %%
report.claim_figure(headline["icar"]).update_layout(title_text="iCAR: " + headline["icar"]["metric"])

# %%
report.claim_figure(headline["sparse"]).update_layout(title_text="Balanced sparsity: " + headline["sparse"]["metric"])

# %% [markdown]
# ## Running things yourself
#
# From a terminal in the checkout (`make app` installs everything into `.venv` first):
#
# | | command |
# |---|---|
# | the app hub (every paper's tab) | `workbench app` (or `make app`), then open http://127.0.0.1:7860 |
# | one paper's app | `workbench app --tab simmim` |
# | these notebooks in JupyterLab | `workbench lab` |
# | the demo models and the studies | `workbench train --list`, then e.g. `workbench train dnl-study --budget-min 10` (writes `runs/dnl/`; `--commit` writes `studies/dnl/`) |
# | every claim on one offline page | `workbench report` (writes `runs/report.html`) |
# | benchmarks | `workbench bench --list`, e.g. `workbench bench sparse` |
#
# A study cut off mid-way continues with `--resume`; `--budget-min` scales its schedule to a CPU budget. To read a
# study run elsewhere in these notebooks, set `WORKBENCH_STUDIES` to its folder before starting Jupyter.
#
# ## Explore
#
# Every paper notebook ends with an explorer that mirrors its app tab, built from the same `workbench.demos`
# functions (`workbench.widgets.explorer(controls, render)`). Here is the shapes explorer; the hub's welcome tab
# calls the same panel function, `workbench.demos.common.shape_sample_panel`.

# %% tags=["nbval-ignore-output"]
from workbench.widgets.core import shapes_explorer

shapes_explorer()
