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
# # 02 · SimMIM: masked image modelling with raw-pixel regression
#
# Xie et al., *SimMIM: A Simple Framework for Masked Image Modeling* (CVPR 2022). SimMIM hides random
# **large** patches of an image, lets the encoder see a learnable *mask token* in their place, and regresses the
# **raw pixels** of the hidden part with a **one-layer** head. No tokenizer, no decoder transformer.
#
# This notebook: the masking strategies and their **AvgDist**; the pre-training curve of our tiny Swin V2;
# reconstructions of bundled photos and shapes; the fine-tuning study (pre-trained vs scratch, masking, head and
# loss) read from the committed records in `studies/simmim/`; and an **Explore** panel that mirrors the
# "SimMIM reconstructions" app tab. Everything runs on CPU in well under a minute.

# %%
import json, math
from pathlib import Path

import numpy as np
import torch

torch.set_num_threads(1)
from workbench import simmim as sm
from workbench.checkpoints import load_demo
from workbench.studies import simmim as study
from workbench.viz import simmim as vz

ROOT = Path(study.REPO)
STUDY = ROOT / "studies" / "simmim"
records = [json.loads(l) for l in (STUDY / "records.jsonl").read_text().splitlines() if l.strip()]
grid = json.loads((STUDY / "avgdist.json").read_text())
print(f"{len(records)} study records, {len(grid)} AvgDist cells")

# %% [markdown]
# ## The method in equations
#
# **Random masking with large mask patches.** An $S\times S$ image is cut into $(S/P_{mask})^2$ mask patches;
# $k=\lceil r\,(S/P_{mask})^2\rceil$ of them are drawn uniformly without replacement (mask ratio $r$), and the
# grid is repeated $P_{mask}/P_{model}$ times so that each encoder token $i$ gets $m_i\in\{0,1\}$.
#
# **Mask token.** After patch embedding $e_i$, the encoder sees $z_i = (1-m_i)\,e_i + m_i\,t$ with one learnable
# vector $t$ — visible tokens are untouched.
#
# **One-layer head.** With encoder output stride $s$ (32 for Swin, the patch size for ViT),
# $\hat{x} = \mathrm{PixelShuffle}_s(W\,f(z))$, $W$ a $1\times1$ convolution to $s^2\cdot 3$ channels.
#
# **Loss on masked pixels only** (the official normalisation, $M$ the pixel mask, $C=3$):
# $$\mathcal{L} = \frac{\sum_p |x_p-\hat{x}_p|\,M_p}{\sum_p M_p + 10^{-5}}\cdot\frac{1}{C}.$$
#
# **AvgDist** — how far, on average, a masked pixel is from the nearest visible one:
# $$\mathrm{AvgDist} = \frac{1}{|\{p: M_p=1\}|}\sum_{p:M_p=1}\ \min_{q: M_q=0}\lVert p-q\rVert_2 .$$
# The paper's finding: a *moderate* AvgDist (large mask patches, ratio around 0.6) works best — small patches
# leave every masked pixel next to a visible one (the task is interpolation), too much masking leaves too little.

# %% [markdown]
# ## Masking strategies side by side

# %%
photo = sm.demo_image("photo: astronaut")
masks = {
    "random 16px r0.6": sm.make_mask("random", 64, 16, 4, 0.6, seed=0),
    "random 4px r0.6": sm.make_mask("random", 64, 4, 4, 0.6, seed=0),
    "random 32px r0.6": sm.make_mask("random", 64, 32, 4, 0.6, seed=0),
    "square r0.6": sm.make_mask("square", 64, 16, 4, 0.6),
    "block-wise r0.6": sm.make_mask("blockwise", 64, 8, 4, 0.6, seed=0),
}
pix = {k: sm.upsample_mask(m, 4) for k, m in masks.items()}
dists = {k: sm.avg_dist(m) for k, m in pix.items()}
for k, d in dists.items():
    print(f"{k:18s} masked {pix[k].mean():.3f}  AvgDist {d:.2f} px")
vz.masks_figure(photo, pix, dists, cols=5)

# %% [markdown]
# AvgDist is the exact Euclidean distance transform (`scipy.ndimage.distance_transform_edt`). A brute-force
# float64 double loop over masked and visible pixels gives the same number (the unit tests do this on many masks):

# %%
small = sm.upsample_mask(sm.MaskGenerator(24, 8, 4, 0.6)(seed=1), 4)
masked, visible = np.argwhere(small == 1), np.argwhere(small == 0)
brute = np.mean([np.sqrt(((visible - p) ** 2).sum(1)).min() for p in masked])
print(f"EDT {sm.avg_dist(small):.6f}   brute force {brute:.6f}")
gen = sm.MaskGenerator(192, 32, 4, 0.6)  # the official Swin setting
print(f"official 192 px / 32 px / ratio 0.6: {gen.mask_count} of {gen.token_count} mask patches, "
      f"{gen().mean():.3f} of the tokens masked")

# %% [markdown]
# ### AvgDist over mask patch size × ratio (64 px input)
#
# From `studies/simmim/avgdist.json` (mean of 8 random masks per cell). At 64 px a 32 px mask patch is a 2×2
# grid, so ratios ≥ 0.8 mask every pixel (AvgDist = ∞, shown blank).

# %%
vz.avgdist_grid_figure(grid)

# %% [markdown]
# ## Pre-training

# %%
ck = load_demo("simmim_swinv2_lite", study.DEMO_COMMANDS["simmim_swinv2_lite"])
print("demo checkpoint made by:", ck.meta["command"].split(" --out-dir")[0])
curves = {}
for r in records:
    if r["part"] == "claim1" and r.get("demo"):
        curves[f"demo {r['model']} (4 epochs, 4,000 images)"] = r["curve"]
    if r["part"] == "masking" and (r["pretrain"]["mask_patch_size"], r["pretrain"]["mask_ratio"]) == (16, 0.6):
        curves["study Swin V2 lite, 1 epoch, 2,000 images"] = r["curve"]
last = ck.extra["history"][-1]
print(f"demo Swin V2 lite: {len(ck.extra['curve'])} logged steps, final epoch train loss {last['train_loss']:.3f}")
vz.pretrain_curve_figure(curves)

# %% [markdown]
# ## Reconstructions
#
# The demo model (tiny Swin V2, 64 px, mask patch 16, ratio 0.6) on bundled photos and rendered shapes; the
# *composite* keeps the visible pixels and pastes the prediction into the masked ones. At this scale the
# predictions are blurry — the head regresses the mean colour and coarse structure of each hidden patch.

# %%
model = sm.demo_model("Swin V2 lite (SimMIM)")
names = ["photo: astronaut", "photo: coffee", "shapes: star", "shapes: circle"]
recs = [sm.explore(sm.demo_image(n), "random", 0.6, 16, seed=i) for i, n in enumerate(names)]
zero = [float(sm.masked_loss(model.target(sm.normalize(torch.from_numpy(r.original).permute(2, 0, 1))[None]),
                             torch.zeros(1, 3, 64, 64), sm.upsample_mask(torch.from_numpy(r.token_mask)[None], 4)))
        for r in recs]
for n, r, z in zip(names, recs, zero):
    print(f"{n:18s} masked L1 {r.loss:.3f}   (predicting the ImageNet mean colour: {z:.3f})")
vz.reconstructions_figure(recs, [n.split(": ")[1] for n in names])

# %%
vz.reconstruction_figure(recs[0])

# %% [markdown]
# ## The study: pre-training vs scratch, masking, head and loss
#
# `workbench train simmim-study` (1 CPU thread, about 10 minutes). Part 1 fine-tunes the two demo checkpoints
# (4 epochs of SimMIM on 4,000 unlabelled photo crops and shapes) and the same backbones from scratch for three
# epochs on 800 labelled images (shapes: 10 classes; scikit-learn digits upsampled to 64 px), layer-wise lr
# decay 0.75 for the pre-trained encoders — an identical fine-tuning budget. Parts 2 and 3 pre-train for one epoch
# on 2,000 images with each mask / head / loss and fine-tune on digits. The committed `studies/simmim/results.md`:

# %%
print((STUDY / "results.md").read_text())

# %%
vz.finetune_bars_figure(records)

# %%
vz.accuracy_vs_avgdist_figure(records, study.MASK_TASK)

# %%
claim = [r for r in records if r["part"] == "claim1"]
for model in sorted({r["model"] for r in claim}):
    s = next(r for r in claim if r["model"] == model and not r.get("demo"))
    p = next(r for r in claim if r["model"] == model and r.get("demo"))
    for task in ("shapes", "digits"):
        d = 100 * (p["acc"][task] - s["acc"][task])
        print(f"{model:24s} {task:7s} scratch {100 * s['acc'][task]:5.1f}%  SimMIM {100 * p['acc'][task]:5.1f}%  "
              f"difference {d:+5.1f} points")
T = study.MASK_TASK
mask_runs = sorted([r for r in records if r["part"] == "masking"], key=lambda r: r["avg_dist"])
best = max(mask_runs, key=lambda r: r["acc"][T])
print(f"best masking run: mask patch {best['pretrain']['mask_patch_size']} px, ratio {best['pretrain']['mask_ratio']}, "
      f"AvgDist {best['avg_dist']:.1f} px, {T} {100 * best['acc'][T]:.1f}%")
from scipy.stats import spearmanr
rho = spearmanr([r["avg_dist"] for r in mask_runs], [r["acc"][T] for r in mask_runs]).statistic
print(f"Spearman correlation of AvgDist and {T} accuracy over the {len(mask_runs)} masks: {rho:+.2f}")
print(f"total study CPU time: {sum(r['seconds'] for r in records) / 60:.1f} min")

# %% [markdown]
# **Reading the numbers.** These are single-seed runs with 500 pre-training steps (part 1) or only 62 (parts 2–3)
# and three epochs of fine-tuning; the test sets have 450–500 images, so one standard error is about 2 points.
# What the committed records show:
#
# * **Claim 1 (pre-train → fine-tune beats scratch) is not reproduced for the tiny Swin V2** at this budget: on
#   digits the two are within noise, and on shapes both stay near chance (10 classes) — three epochs are too few
#   for that task whatever the initialisation. The **tiny ViT** gains on digits (from barely learning to clearly
#   learning), the regime where the paper's argument — MIM helps data-hungry ViTs most — applies.
# * **Claim 2 (moderate AvgDist works best) goes the paper's way:** accuracy rises with AvgDist from 2 px (4 px
#   mask patches) to 15–20 px (32 px mask patches) and falls again at 27 px (16 px patches, ratio 0.9); the
#   held-out reconstruction loss grows monotonically with AvgDist — a harder task, not a better score, is what helps.
#   With one epoch of pre-training only the 32 px masks reach the from-scratch accuracy; the others stay below it.
# * **Claim 3:** the 2-layer head and the L2 loss land within noise of the linear head with L1, as in the paper's
#   ablation (where the simple choices are as good or better).
#
# The paper's gains come from 100–800 epochs on ImageNet-1K; this laptop study checks the mechanics and the
# direction of the effects, not their size.

# %% [markdown]
# ## Explore
#
# The same controls as the app tab "SimMIM reconstructions" (`workbench app`, or `python apps/simmim.py`):
# image, masking strategy, model, mask ratio, mask patch size and seed. Built from `workbench.simmim.explore`
# and `workbench.viz.simmim.reconstruction_figure`, like the app.

# %% tags=["nbval-ignore-output"]
from workbench.widgets.simmim import simmim_explorer

simmim_explorer()
