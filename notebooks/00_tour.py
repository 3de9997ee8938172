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
# | paper | notebook | app tab | module |
# |---|---|---|---|
# | Swin Transformer V2 | `01_swin_v2` | Swin V2 position bias | `workbench.swin_v2`, `workbench.vit` |
# | SimMIM | `02_simmim` | SimMIM reconstructions | `workbench.simmim` |
# | MoBY | `03_moby` | MoBY embeddings | `workbench.moby` |
# | Cross-Iteration BN | `04_cbn` | CBN statistics | `workbench.cbn` |
# | Disentangled Non-Local | `05_dnl` | DNL attention maps | `workbench.dnl` |
# | iCAR | `06_icar` | iCAR zero-shot | `workbench.icar` |
# | Balanced Sparsity | `07_balanced_sparsity` | Sparse speedup dashboard | `workbench.sparse` |
#
# **One flow for every paper:** data → model → study (records committed under `studies/`) → figure builders in
# `workbench.viz` → a notebook cell, a widget panel and an app tab that all call *the same function*.
#
# From a terminal: `workbench app` opens the app hub, `workbench lab` this notebook folder,
# `workbench train --list` the demo models and studies, `workbench bench --list` the benchmarks.

# %% tags=["nbval-ignore-output"]
import numpy as np
import torch

import workbench
from workbench import viz
from workbench.data import natural, shapes
from workbench.data import transforms as T

torch.set_num_threads(2)
print("workbench", workbench.__version__)

# %% [markdown]
# ## The shapes dataset
#
# Nothing is downloaded: most studies use **procedural shapes**, generated deterministically from a seed.
# Each sample has the class of its main object, a per-pixel mask (0 = background, class id + 1) and a caption
# built from its attributes — so one generator serves classification, segmentation, self-supervision and
# image–text alignment.

# %%
print("classes:", ", ".join(shapes.CLASSES))
print("colours:", ", ".join(shapes.COLORS))
print("sizes:", ", ".join(shapes.SIZES), "| backgrounds:", ", ".join(shapes.BACKGROUNDS))
data = shapes.generate(shapes.ShapesConfig(n=1000, size=64, seed=0))
print(data.images.shape, data.images.dtype, "labels", data.labels[:10].tolist())
for c in data.captions[:4]:
    print(" -", c)

# %%
viz.image_grid(list(data.images[:12]), titles=[shapes.CLASSES[l] for l in data.labels[:12]], cols=6,
               height_per_row=170, title="Twelve samples (seed 0)")

# %% [markdown]
# Classes are drawn uniformly; a chi-square statistic against the uniform distribution (9 degrees of
# freedom, 99.9% quantile 27.9) checks it on this draw:

# %%
counts = np.bincount(data.labels, minlength=len(shapes.CLASSES))
chi2 = (((counts - counts.mean()) ** 2) / counts.mean()).sum()
print("counts per class:", counts.tolist(), f"chi-square = {chi2:.2f}")
viz.bar_chart(shapes.CLASSES, counts, title="Samples per class (n = 1000)", ylabel="count", text_fmt=".0f")

# %% [markdown]
# ### Scenes with several objects
#
# `min_objects`/`max_objects` make multi-object scenes; the mask labels every object, the caption relates
# them ("above", "left of" ...). The DNL segmentation study and the iCAR captions use these.

# %%
scenes = shapes.generate(shapes.ShapesConfig(n=3, size=96, seed=7, min_objects=2, max_objects=3))
for c in scenes.captions:
    print(" -", c)
viz.image_grid([im for pair in zip(scenes.images, map(viz.colorize_labels, scenes.masks)) for im in pair],
               titles=["scene", "mask"] * 3, cols=6, height_per_row=190)

# %% [markdown]
# ## Real images that installed packages ship
#
# scikit-image and scikit-learn ship a handful of photos; `NaturalCrops` samples random resized crops from them
# (SimMIM pre-training, attention maps). scikit-learn's 8×8 digits are a small real labelled set.

# %%
print("photos:", ", ".join(natural.photo_names()))
photo = natural.load_photo("astronaut")
crops = natural.NaturalCrops(n=6, size=64, seed=0)
viz.image_grid([photo[::4, ::4]] + [crops[i] for i in range(5)], titles=["astronaut (512 px)"] + [f"crop {i}" for i in range(5)],
               cols=6, height_per_row=170)

# %%
xtr, ytr = natural.digits("train")
xte, yte = natural.digits("test")
print(f"digits: {len(xtr)} train / {len(xte)} test, images {tuple(xtr.shape[1:])}, classes {ytr.unique().tolist()}")

# %% [markdown]
# ## Augmentations in torch only
#
# `workbench.data.transforms` re-implements the usual image transforms with torch (no torchvision), each
# reproducible through a `torch.Generator`. Here is MoBY's asymmetric two-view recipe (view 1 always blurred;
# view 2 blurred with p = 0.1 and solarised with p = 0.2):

# %%
two_view = T.byol_two_view(96, normalize=False)
img = T.to_tensor(natural.load_photo("chelsea"))
g = torch.Generator().manual_seed(0)
views = [v for _ in range(3) for v in two_view(img, g)]
viz.image_grid(views, titles=["view 1", "view 2"] * 3, cols=6, height_per_row=170)

# %% [markdown]
# ## Explore
#
# Every paper notebook ends with an **Explore** panel that mirrors its app tab, built from the same
# `workbench` functions. The pattern is `workbench.widgets.explorer(controls, render)`; here is the shapes
# explorer (the hub's welcome tab calls the same `render_shape_sample`).

# %% tags=["nbval-ignore-output"]
from workbench.widgets import shapes_explorer

panel = shapes_explorer()
panel

# %% [markdown]
# The panel is a normal object: setting a control re-renders the figure, exactly like moving the slider.

# %%
panel.controls["shape"].value = "crescent"
panel.controls["color"].value = "cyan"
print(panel.message.value)
