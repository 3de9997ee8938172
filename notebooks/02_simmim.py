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
# Xie et al., *SimMIM: A Simple Framework for Masked Image Modeling*, CVPR 2022. SimMIM hides random **large**
# patches of an image, lets the encoder see a learnable *mask token* in their place, and regresses the **raw
# pixels** of the hidden part with a **one-layer** head — no tokenizer, no decoder transformer.
#
# **Random masking with large mask patches.** An $S\times S$ image is cut into $(S/P_{mask})^2$ mask patches;
# $k=\lceil r\,(S/P_{mask})^2\rceil$ of them are drawn uniformly without replacement (mask ratio $r$), and the grid
# is repeated $P_{mask}/P_{model}$ times so that every encoder token $i$ gets $m_i\in\{0,1\}$.
#
# **Mask token.** After patch embedding $e_i$ the encoder sees $z_i = (1-m_i)\,e_i + m_i\,t$, with one learnable
# vector $t$.
#
# **One-layer head.** With encoder output stride $s$ (32 for Swin, the patch size for ViT),
# $\hat{x} = \mathrm{PixelShuffle}_s\big(W f(z)\big)$, $W$ a $1\times1$ convolution to $3s^2$ channels.
#
# **Loss on the masked pixels only** (the official normalisation; $M$ the pixel mask, $C = 3$ channels):
# $$\mathcal{L} = \frac{\sum_p |x_p-\hat{x}_p|\,M_p}{\sum_p M_p + 10^{-5}}\cdot\frac{1}{C}.$$
#
# **AvgDist** — how far a masked pixel is, on average, from the nearest visible one:
# $$\mathrm{AvgDist} = \frac{1}{|\{p: M_p=1\}|}\sum_{p:\,M_p=1}\ \min_{q:\,M_q=0}\lVert p-q\rVert_2 .$$
# The paper's finding: a *moderate* AvgDist (large mask patches at a ratio around 0.6) pre-trains best — small
# patches leave every masked pixel next to a visible one (the task becomes interpolation).
#
# Below: the claims and our verdicts, the masks and AvgDist computed live, the demo model of the app tab
# *SimMIM* (`workbench.demos.simmim`) filling in masked images, and its explorer.

# %%
import json

import numpy as np
import torch
from IPython.display import Markdown, display

torch.set_num_threads(1)
torch.manual_seed(0)

from workbench import report
from workbench import simmim as sm
from workbench.demos import simmim as demo
from workbench.viz import simmim as vz

PAPER = "simmim"
STUDY = report.packaged_studies() / PAPER

# %% [markdown]
# ## What the paper claims, and what we measured
#
# `workbench train simmim-study --commit --part labels --labels 2000 --ft-steps 1500` fine-tunes the SimMIM
# demo encoder (Swin V2 lite, 64 px, pre-trained below), and the same architecture from scratch, on 2,000
# labelled single-object shapes (10% of a 20,000-image set) — identical recipe and budget for both arms (1,500
# AdamW steps, warm-up + cosine, label smoothing; layer-wise lr decay 0.75 for the pre-trained encoder, as in
# the SwinV2 SimMIM recipe), three seeds. A second part pre-trains with 4, 16 and 32 px mask patches (AvgDist
# from small to large) and fine-tunes each. The verdicts follow the study protocol (paired differences over
# seeds, 95% intervals; a comparison counts only when the baseline is at least halfway from chance to perfect):

# %%
display(Markdown(report.claims_markdown(PAPER)))

# %%
report.claim_figure(report.claim(PAPER, "pretrain_vs_scratch_2000"))

# %% [markdown]
# **Verdict on the recipe: not reproduced here.** With 1,500 fine-tuning steps the scratch baseline counts (about
# 0.72, well past halfway from chance), and the SimMIM-initialised encoder fine-tuned with the recipe's layer-wise
# lr decay ends about 0.12 *lower*, beyond the seed noise. What changed: with 600 steps (the previous records)
# scratch sat at 0.45 and no comparison counted; with 200 labels neither arm left chance in that budget, so that
# row is not judged.
#
# **A control, added after that verdict** (second row of the table): the decay multiplies the lr of each block
# by 0.75 per block above it, which in this 8-block encoder leaves the patch embedding 7.5% of the lr, so within
# 1,500 steps the pre-trained early layers can adapt only a little. The same pre-trained encoder fine-tuned
# without the decay reaches about 0.83 — 0.11 *above* scratch, beyond 2 SE. The pre-trained weights do help with few labels, as the
# paper says; what loses at this scale is a fine-tuning recipe made for long runs of deep models. The first
# verdict stays as judged: the control explains it, it does not replace it.

# %% [markdown]
# ## Masks and their AvgDist
#
# Five masks at ratio 0.6 over a 64 px photo (model patch 4 px): random masking with 4, 16 and 32 px mask
# patches, one central square, and BEiT's block-wise masking. The masks come from a seeded generator, and
# AvgDist is an exact Euclidean distance transform, so these numbers are the same on every machine:

# %%
photo, _ = demo.image("photo: astronaut")
masks = {
    "random 4 px": sm.make_mask("random", 64, 4, 4, 0.6, seed=0),
    "random 16 px": sm.make_mask("random", 64, 16, 4, 0.6, seed=0),
    "random 32 px": sm.make_mask("random", 64, 32, 4, 0.6, seed=0),
    "square": sm.make_mask("square", 64, 16, 4, 0.6),
    "block-wise": sm.make_mask("blockwise", 64, 8, 4, 0.6, seed=0),
}
pixel_masks = {k: sm.upsample_mask(m, 4) for k, m in masks.items()}
dists = {k: sm.avg_dist(m) for k, m in pixel_masks.items()}
for k, d in dists.items():
    print(f"{k:<13} masked {pixel_masks[k].mean():.3f} of the pixels, AvgDist {d:.2f} px")

# %% tags=["nbval-ignore-output"]
vz.masks_figure(photo, pixel_masks, dists, cols=5)

# %% [markdown]
# The distance transform against a brute-force float64 double loop, and the official 192 px setting
# (32 px mask patches, ratio 0.6: 22 of the 6×6 mask patches, 61.1% of the 48×48 tokens):

# %%
small = sm.upsample_mask(sm.MaskGenerator(24, 8, 4, 0.6)(seed=1), 4)
masked, visible = np.argwhere(small == 1), np.argwhere(small == 0)
brute = np.mean([np.sqrt(((visible - p) ** 2).sum(1)).min() for p in masked])
print("distance transform == brute force:", abs(sm.avg_dist(small) - brute) < 1e-9)
gen = sm.MaskGenerator(192, 32, 4, 0.6)
print(f"official: {gen.mask_count} of {gen.token_count} mask patches, {gen().mean():.3f} of the "
      f"{gen.token_grid}x{gen.token_grid} tokens masked")

# %% [markdown]
# AvgDist over mask patch size × ratio at 64 px (mean of 8 masks per cell, `avgdist.json` of the study). A 32 px
# mask patch makes a 2×2 grid at this size, so a ratio ≥ 0.8 masks everything (AvgDist = ∞, left blank):

# %%
vz.avgdist_grid_figure(json.loads((STUDY / "avgdist.json").read_text()))

# %% [markdown]
# ### The loss, by hand
#
# `sm.masked_loss` is the formula above; on random tensors it matches the sum written out in float64:

# %%
g = torch.Generator().manual_seed(0)
x, x_rec = torch.rand(2, 3, 16, 16, generator=g, dtype=torch.float64), torch.rand(2, 3, 16, 16, generator=g, dtype=torch.float64)
M = torch.from_numpy(sm.MaskGenerator(16, 8, 4, 0.5).batch(2, seed=0).numpy()).double()
Mpx = sm.upsample_mask(M, 4)
by_hand = ((x - x_rec).abs() * Mpx[:, None]).sum() / (Mpx.sum() + 1e-5) / 3
print("masked_loss == the formula:", bool(torch.isclose(sm.masked_loss(x, x_rec, Mpx), by_hand, atol=1e-12)))

# %% [markdown]
# ## The demo model fills in masked images
#
# The committed demo model (Swin V2 lite, 64 px, 16 px mask patches at ratio 0.6) was pre-trained by
# `workbench train simmim-demo --save-demo` on shapes scenes and crops of the bundled photos. Its checkpoint
# stores what it measured on unseen images: the masked-pixel L1 (pixels in [0, 1]) of SimMIM against two
# classical inpainters on the same masks — biharmonic inpainting and the mean visible colour.

# %%
net, info = demo.model()
for name, s in (info.get("inpainting") or {}).items():
    print(f"{name:<7} SimMIM {s['simmim']:.3g}, biharmonic {s['biharmonic']:.3g}, mean colour {s['mean_fill']:.3g} "
          f"-> {s['ratio_to_biharmonic']:.3g}x the biharmonic error")
curve = info.get("curve") or []
step = max(1, len(curve) // 300)
print(f"pre-training curve: {len(curve)} logged steps")

# %%
vz.pretrain_curve_figure({"SimMIM demo (Swin V2 lite)": curve[::step]})

# %% [markdown]
# The app tab's panel on a shapes scene and on a photo: the same `demo.panel` function. The mask and its
# AvgDist are exact; the errors come from the model (rounded):

# %%
panels = {src: demo.panel(src, "random", 0.6, 16, seed=3) for src in ("shapes scene", "photo: coffee")}
for src, p in panels.items():
    rec = p.values["rec"]
    print(f"{src:<13} masked {int(rec.token_mask.sum())}/{rec.token_mask.size} tokens, AvgDist {rec.avg_dist:.2f} px | "
          f"L1 SimMIM {p.values['l1']:.2g}, biharmonic {p.values['biharmonic']:.2g}, mean colour {p.values['mean_fill']:.2g}")

# %% tags=["nbval-ignore-output"]
panels["shapes scene"].figures["reconstruction"]

# %% tags=["nbval-ignore-output"]
panels["photo: coffee"].figures["reconstruction"]

# %% tags=["nbval-ignore-output"]
panels["photo: coffee"].figures["error"]

# %% [markdown]
# ## AvgDist and fine-tuning
#
# The masking part of the study (`workbench train simmim-study --commit --part masking --labels 2000
# --ft-steps 1500 --mask-steps 800`, three seeds, ~6.5 CPU-minutes per run) pre-trains with small, default and
# large mask patches — AvgDist about 2, 7.5 and 19 px at 64 px and ratio 0.6; the paper's Fig. 4 peaks at 10–20 px
# at 192 px — for 800 steps each, then fine-tunes each on the 2,000 labels with the recipe above (layer-wise decay
# included):

# %%
report.claim_figure(report.claim(PAPER, "avgdist_default_vs_4px"))

# %% [markdown]
# **Verdict: not reproduced, and mostly not counting.** Accuracy *falls* as AvgDist grows: 4 px patches about
# 0.61, 16 px 0.58, 32 px 0.54 — the opposite of the paper's peak at a moderate AvgDist; the 16 px arm is below
# the 4 px one by 0.03, beyond 2 SE. By the protocol neither claim counts, because the 32 px arm ends just below
# halfway from chance (0.54, 49% of the way) and the claims were set up before the runs with all three masks as
# baselines. Every masked arm also ends below training from scratch (0.72), as the recipe's arm does above. Why
# this differs from the paper is not established; what differs: 800 pre-training steps of a 2.3 M-parameter encoder
# on flat-coloured shapes, where a small AvgDist makes the pretext task local colour continuation, against 100+
# epochs of Swin-B on ImageNet. A run without the layer-wise decay (the control above) would test whether the
# ordering holds when the pre-trained weights can help; it was not run.

# %% [markdown]
# ## Explore
#
# The same controls as the app tab *SimMIM* (`workbench app`): image, masking strategy, model, mask ratio, mask
# patch size and seed, drawn by `workbench.demos.simmim.panel` like the app.

# %% tags=["nbval-ignore-output"]
from workbench.widgets.simmim import simmim_explorer

simmim_explorer()
