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
# # 06 · iCAR: a classifier whose class weights are written in words
#
# Wei, Cao, Zhang, Yao, Xie, Hu, Guo, *iCAR: Bridging Image Classification and Image-text Alignment for Visual
# Recognition* (published as **iCLIP**, CVPR 2023). The paper fuses an image classifier with CLIP-style image-text
# alignment in one model, through three adaptations of the classifier:
#
# 1. a **cosine classifier** instead of a linear one: $z_c = \tau\cos(f, w_c) = \tau\,\dfrac{f^\top w_c}{\lVert f\rVert\,\lVert w_c\rVert}$,
#    so $|z_c| \le \tau$ — the same form as an image-text similarity;
# 2. the class weights are **written by a text encoder** $g$ (a meta-network) from the class text,
#    $w_c = g(\text{text}_c)$ — the *same* encoder that embeds captions for the alignment task;
# 3. each class name is **enriched with a description** ("star: a shape with five sharp points").
#
# Both tasks then train in one batch through the shared encoders (**deep fusion**). For $N$ image-caption pairs
# with $S_{ij} = \tau_a \cos(f(x_i), g(t_j))$ the alignment loss is the symmetric cross-entropy
#
# $$\mathcal{L}_{align} = \tfrac12\Big[-\tfrac1N\sum_i \log\operatorname{softmax}_j S_{ij}\Big|_{j=i}
# \; - \; \tfrac1N\sum_j \log\operatorname{softmax}_i S_{ij}\Big|_{i=j}\Big],$$
#
# and the classification loss is the cross-entropy of $\tau\cos(f(x), g(\text{text}_c))$ over the classes. A new
# class costs one pass of the text encoder: nothing is retrained.
#
# Below: the adaptations checked on the demo model of the app tab *iCAR* (`workbench.demos.icar`), the claims
# with our verdicts, and the explorer.

# %%
import torch
import torch.nn.functional as F
from IPython.display import Markdown, display

torch.set_num_threads(1)
torch.manual_seed(0)

from workbench import icar, report
from workbench.data import shapes
from workbench.demos import icar as demo

PAPER = "icar"
model, tok, captions, extra = demo.bundle()
print(f"demo model: method {model.cfg.method!r}, image encoder {model.cfg.image_encoder} ({model.cfg.image_size} px), "
      f"vocabulary {len(tok)} words, {len(captions)} distinct captions to retrieve from")
print("held-out classes (never a label in training):", ", ".join(demo.held_out()))
m = extra["metrics"]
print(f"its test set: seen classes {m['seen_acc']:.1%} (7-way); held-out classes zero-shot {m['zs_names']:.1%} "
      f"with names, {m['zs_desc']:.1%} with descriptions (3-way)")

# %% [markdown]
# ## What the paper claims, and what we measured
#
# `workbench train icar-study --commit` trains every method on shapes with captions — a linear and a cosine
# classifier, classification with text-written weights, alignment alone, shallow fusion (separate heads) and iCAR
# deep fusion with and without descriptions — over three seeds. Ring, pentagon and crescent are never labelled:
# recognising them is zero-shot (3-way, chance 1/3). A second part removes those classes from training entirely,
# so their *names* are never seen, and asks whether descriptions let the model recognise them anyway.

# %%
display(Markdown(report.claims_markdown(PAPER)))

# %%
report.claim_figure(report.claim(PAPER, "zero_shot_vs_shallow"))

# %%
report.claim_figure(report.claim(PAPER, "descriptions_help"))

# %% [markdown]
# ## Adaptation 1 — the cosine classifier is bounded
#
# The logits of the demo model for one image and the ten class texts, against the learned $\tau$:

# %%
img = shapes.render("star", "green", "large", "checkered", seed=3, image_size=model.cfg.image_size)["image"]
x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
classes = [icar.ClassText(n, shapes.CLASS_DESCRIPTIONS[n]) for n in shapes.CLASSES]
with torch.no_grad():
    z_img = model.encode_image(x)
    w = model.encode_text(tok.batch(icar.class_texts(classes), model.cfg.context_length))
    tau = float(model.tau_cls())
    logits = icar.cosine_logits(z_img, w, tau)[0]
    big = icar.cosine_logits(1000 * z_img, 0.001 * w, tau)[0]
print(f"every |logit| <= tau: {bool(logits.abs().max() <= tau * (1 + 1e-6))}; "
      f"unchanged when features x1000 and weights /1000: {torch.allclose(logits, big, atol=1e-4)}")
print("prediction:", shapes.CLASSES[int(logits.argmax())])

# %% [markdown]
# ## Adaptation 2 — the text encoder writes the class weights
#
# Text is split into lower-case words and punctuation with a vocabulary built from the training captions and the
# class texts (nothing downloaded); texts longer than the context are truncated to their first words (the app says
# so). Because the softmax runs over whatever list of class texts we give, adding a class keeps the odds between the
# old ones:

# %%
t = "hexagon: a shape with six equal sides, like a honeycomb cell"
ids = tok.encode(t, model.cfg.context_length)
print(ids)
print(tok.decode(ids))
print("unknown words in 'a zorblax shape':", tok.unknown_words("a zorblax shape"))
p3 = icar.predict_proba(model, tok, x, [["star", ""], ["circle", ""], ["square", ""]], use_descriptions=False)[0]
p4 = icar.predict_proba(model, tok, x, [["star", ""], ["circle", ""], ["square", ""], ["moon", ""]],
                        use_descriptions=False)[0]
print("odds star : circle unchanged by a fourth class:", bool(torch.isclose(p3[0] / p3[1], p4[0] / p4[1], rtol=1e-4)))

# %% [markdown]
# The alignment loss, written out in float64 for four pairs, matches `icar.contrastive_loss`:

# %%
g = torch.Generator().manual_seed(0)
a, b = torch.randn(4, 8, generator=g, dtype=torch.float64), torch.randn(4, 8, generator=g, dtype=torch.float64)
S = 10 * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
by_hand = 0.5 * (-S.log_softmax(1).diag().mean() - S.log_softmax(0).diag().mean())
print("contrastive_loss == the formula:", bool(torch.isclose(icar.contrastive_loss(a, b, 10.0), by_hand)))

# %% [markdown]
# ## Adaptation 3 — descriptions, on the app tab's panel
#
# `demo.panel` scores an image against the class table twice — "name: description" and names only — and retrieves
# the nearest captions. A ring is a held-out class: its name was never a label in training.

# %%
p = demo.panel(demo.example_names()[0], k=3)
rep = p.values
best = max(range(len(rep["names"])), key=lambda i: rep["with_desc"][i])
print(f"{demo.example_names()[0]} -> top-1 with descriptions: {rep['names'][best]}")
print(f"{len(rep['captions'])} nearest captions retrieved; notices: {rep['notices']}")

# %% tags=["nbval-ignore-output"]
p.figures["probabilities"]

# %% tags=["nbval-ignore-output"]
p.figures["captions"]

# %% [markdown]
# ## Explore
#
# The same controls as the app tab *iCAR* (`workbench app`): pick a shapes image and edit the class list — rename a
# class, change a description, add one — and see the zero-shot probabilities with and without descriptions and the
# nearest captions (`workbench.demos.icar.panel`, like the app).

# %% tags=["nbval-ignore-output"]
from workbench.widgets.icar import icar_explorer

icar_explorer()
