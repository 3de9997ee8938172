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
# # 05 · Disentangled Non-Local Neural Networks
#
# Yin, Yao, Cao, Li, Zhang, Lin, Hu, *Disentangled Non-Local Neural Networks*, ECCV 2020. A **non-local (NL)
# block** lets every position of a feature map look at every other one. The paper observes that its attention
# is the sum of two different things squeezed through one softmax — how two pixels *relate* and how *salient*
# one pixel is for everybody — and gives each its own softmax: the **disentangled non-local (DNL) block**.
#
# **The hidden split.** With queries $q_i = W_q x_i$, keys $k_j = W_k x_j$ and values $v_j = W_v x_j$, the
# embedded-Gaussian NL block is $\mathrm{NL}(x)_i = x_i + W_{out}\sum_j \omega(i, j)\,v_j$ with
# $\omega(i, j) = \operatorname{softmax}_j\big(q_i^\top k_j/\sqrt d\big)$. Writing $\mu_q, \mu_k$ for the means of the
# queries and keys over all positions,
#
# $$
# q_i^\top k_j = \underbrace{(q_i - \mu_q)^\top (k_j - \mu_k)}_{\text{whitened pairwise}}
#  + \underbrace{\mu_q^\top k_j}_{\text{unary}} + \underbrace{q_i^\top \mu_k - \mu_q^\top \mu_k}_{\text{the same for every } j},
# $$
#
# and a softmax over $j$ ignores what is constant in $j$:
# $\omega(i, j) = \operatorname{softmax}_j\big(((q_i - \mu_q)^\top (k_j - \mu_k) + \mu_q^\top k_j)/\sqrt d\big)$.
#
# **The DNL block** gives the whitened pairwise term its own softmax with a temperature $T$, and the unary term
# its own 1×1 convolution $W_m$:
#
# $$
# \mathrm{DNL}(x)_i = x_i + \gamma \sum_j \operatorname{softmax}_j\!\Big(\tfrac{(q_i-\mu_q)^\top(k_j-\mu_k)}{\sqrt d\, T}\Big) v_j
#  + \sum_j \operatorname{softmax}_j(W_m x_j)\, v_j ,
# $$
#
# with $T = 0.05$ and $\gamma$ starting at 0 (official code). The paper's visual finding: the whitened pairwise
# term attends **within the query's region**, the unary term highlights **boundaries**.
#
# Below: the identity checked live, the claims with our verdicts, and the two demo segmentation networks (NL and
# DNL heads) of the app tab *DNL* (`workbench.demos.dnl`), then the explorer.

# %%
import torch
from IPython.display import Markdown, display

torch.set_num_threads(1)
torch.manual_seed(0)

from workbench import dnl, report
from workbench.demos import dnl as demo

PAPER = "dnl"

# %% [markdown]
# ## The identity, checked
#
# Random queries and keys with non-zero means (float64): the NL attention equals the softmax of the two terms;
# the whitened term does not move when a constant vector is added to every key (or query), while the NL
# attention itself does.

# %%
g = torch.Generator().manual_seed(0)
q = torch.randn(2, 200, 16, generator=g, dtype=torch.float64) * 2 + 1.5
k = torch.randn(2, 200, 16, generator=g, dtype=torch.float64) * 2 - 0.7
scale = 1 / 16 ** 0.5
pairwise, unary = dnl.decompose_logits(q, k, scale)
nl = torch.softmax(q @ k.transpose(1, 2) * scale, dim=-1)
print("softmax(q.k) == softmax(whitened + unary):",
      bool(torch.allclose(nl, torch.softmax(pairwise + unary[:, None, :], dim=-1), atol=1e-12)))
c = torch.randn(16, generator=g, dtype=torch.float64) * 10
print("whitened term unchanged by k + c:", torch.allclose(dnl.decompose_logits(q, k + c, scale)[0], pairwise, atol=1e-9),
      "| by q + c:", torch.allclose(dnl.decompose_logits(q + c, k, scale)[0], pairwise, atol=1e-9))
print("the NL attention moves with q + c:",
      bool((torch.softmax((q + c) @ k.transpose(1, 2) * scale, -1) - nl).abs().max() > 1e-3))

# %% [markdown]
# No public implementation exposes the attention maps; `dnl.attention_maps(model, x, queries=...)` reads them
# through `workbench.inspect` (nothing is stored on the model). On a DNL block with random weights: every row of
# the pairwise map and the unary map is a distribution, and capturing does not change the output.

# %%
torch.manual_seed(0)
block = dnl.DNL2d(32, temperature=0.05)
for prm in block.parameters():
    torch.nn.init.normal_(prm, std=0.2)
x = torch.randn(1, 32, 12, 15)
with torch.no_grad():
    plain = block(x)
    out, maps = dnl.attention_maps(block, x)
e = maps[""]
print("pairwise", tuple(e["pairwise"].shape), "| unary", tuple(e["unary"].shape), "| map", e["hw"])
print("output unchanged by the capture:", torch.allclose(out, plain, atol=1e-5))
print("rows sum to 1:", torch.allclose(e["pairwise"].sum(-1), torch.ones(1, 180), atol=1e-5),
      "| unary sums to 1:", torch.allclose(e["unary"].sum(-1), torch.ones(1), atol=1e-5))

# %% [markdown]
# ## What the paper claims, and what we measured
#
# The paper: on Cityscapes (ResNet-101) NL reaches 78.3 mIoU and DNL about 80.2; on COCO, DNL beats NL and GC.
# `workbench train dnl-study --commit`: multi-object shapes scenes (64 px, 3–4 objects), a small segmentation
# network (`dnl.SegNet`, output stride 4: 16×16 attention maps) with a head of each kind — none, NL, DNL, GC —
# over five seeds. Besides mIoU, the attention maps are measured against the scenes' masks: the share of an
# object query's pairwise attention on its own label, and the unary map's mass on boundary cells (cells whose
# pixels carry more than one label), each against what a uniform map would give.

# %%
display(Markdown(report.claims_markdown(PAPER)))

# %%
report.claim_figure(report.claim(PAPER, "dnl_vs_nl"))

# %%
report.claim_figure(report.claim(PAPER, "whitened_within_region"))

# %%
report.claim_figure(report.claim(PAPER, "unary_boundaries"))

# %% [markdown]
# Reading the records (five seeds per head): the four heads' mIoU lie within about 0.01 of each other and every
# paired difference's interval contains zero — on these small scenes a context block adds nothing measurable to
# segmentation, so the paper's mIoU ordering can be neither confirmed nor refuted here. The attention maps do
# separate: DNL's whitened pairwise term puts about twice NL's share of its mass on the query's own region
# (reproduced). The unary map's mass on boundary cells is that of a uniform map (not reproduced): on these scenes
# the learned unary term does not single out boundaries.

# %% [markdown]
# ## The demo networks' attention
#
# The app tab's panel on a shapes scene, one query on an object (row 44, column 46 of the 64 px input): NL's
# attention, DNL's whitened pairwise map, DNL's unary map and NL's implicit unary map ($\operatorname{softmax}_j
# \mu_q^\top k_j$), and both networks' segmentations. The maps are distributions over the 16×16 grid:

# %%
p = demo.panel("shapes scene", seed=0, temperature=0.05, query=(44, 46))
exp = p.values["exploration"]
print("query pixel", exp.query, "-> feature cell", exp.query_cell, "| temperature", exp.temperature)
for name, mp in exp.maps.items():
    print(f"{name:<18} {mp.shape}, sums to 1: {abs(float(mp.sum()) - 1) < 1e-4}")
for name in ("NL attention", "DNL pairwise"):
    s = exp.stats[name]
    print(f"{name:<18} share on the query's own label {s['share']:.2f} (uniform {s['uniform']:.2f})")

# %% tags=["nbval-ignore-output"]
p.figures["attention"]

# %% tags=["nbval-ignore-output"]
p.figures["segmentation"]

# %% [markdown]
# The temperature divides the whitened logits (lower is sharper); the app lets you change it on a private copy of
# the DNL model. Its entropy can only fall as $T$ falls:

# %%
import math

img, mask, _ = demo.image("shapes scene", 0)
entropies = []
for t in (1.0, 0.2, 0.05, 0.02):
    pw = torch.from_numpy(demo.explore(img, (44, 46), temperature=t).maps["DNL pairwise"]).double().flatten()
    entropies.append(float(-(pw * pw.clamp_min(1e-30).log()).sum()))
print(f"uniform entropy over 256 cells: {math.log(256):.3g} nats")
print("entropy falls as T falls (1, 0.2, 0.05, 0.02):", all(a >= b - 1e-6 for a, b in zip(entropies, entropies[1:])))

# %% [markdown]
# ## Explore
#
# The same controls as the app tab *DNL* (`workbench app`): image (a shapes scene by seed, or a bundled photo),
# the DNL temperature and the query — the app takes it from a click on the image, here from two sliders (pixels
# of the 64 px input). Built from `workbench.demos.dnl.panel`, like the app.

# %% tags=["nbval-ignore-output"]
from workbench.widgets.dnl import dnl_explorer

dnl_explorer(row=44, col=46)
