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
# # 01 · Swin Transformer V2: scaling up capacity and resolution
#
# Liu et al., *Swin Transformer V2: Scaling Up Capacity and Resolution*, CVPR 2022. Swin V2 keeps Swin's
# shifted-window attention and changes three things so that models train stably when they get big and transfer
# when the window and image size grow:
#
# | | Swin V1 | Swin V2 |
# |---|---|---|
# | normalisation | pre-norm: $x \leftarrow x + \mathrm{Attn}(\mathrm{LN}(x))$ | **residual post-norm**: $x \leftarrow x + \mathrm{LN}(\mathrm{Attn}(x))$ |
# | attention logits | $q_i\cdot k_j/\sqrt{d} + B_{ij}$ | **scaled cosine**: $\cos(q_i, k_j)/\tau + B_{ij}$, $\tau$ learnable per head, $1/\tau \le 100$ |
# | position bias | learned table $\hat B \in \mathbb{R}^{(2M-1)^2}$ | **log-spaced continuous bias**: $B = 16\,\sigma(\mathcal{G}(\widehat{\Delta x}, \widehat{\Delta y}))$ |
#
# with the log-spaced coordinates $\widehat{\Delta x} = \operatorname{sign}(\Delta x)\,\log_2(1+|8\Delta x/(M_{pre}-1)|)/\log_2 8$,
# and $\mathcal{G}$ a 2-layer MLP (2 → 512 → heads). Everything below runs `workbench.swin_v2` — one code path
# whose switches (`attn`, `norm`, `bias`, `merge`) give V2, V1 and the paper's ablations — and reads the
# measured numbers from the committed study records (`workbench train swinv2-study`).

# %%
import math, torch
torch.set_num_threads(1); torch.manual_seed(0)
from workbench import swin_v2
from workbench.records import read_jsonl, studies_dir
from workbench.viz import swin_v2 as vz
REC = studies_dir("swin_v2")
m = swin_v2.create_model("swinv2_tiny_window8_256")
print(f"swinv2_tiny_window8_256: {sum(p.numel() for p in m.parameters()) / 1e6:.2f}M parameters, "
      f"{len(m.state_dict())} state-dict tensors (official key names)")
print([k for k in m.state_dict() if k.startswith("layers.0.blocks.1.")])

# %% [markdown]
# ## 1 · Residual post-norm: activations stay flat with depth
#
# With pre-norm every block *adds* its un-normalised output to the residual stream, so the amplitude grows with
# depth; residual post-norm normalises each branch before adding it (and its LayerNorm starts at zero, so every
# block is the identity at initialisation). Our measurement: a deep narrow one-stage Swin (12 blocks, width 16)
# at initialisation and after a short training on shapes; mean $|x|$ of the residual stream after each block.

# %%
acts = read_jsonl(REC / "activations.jsonl")
for r in acts:
    a0, a1 = r["amp_init"], r["amp_trained"]
    print(f"{r['variant']:<28} last/first block amplitude: init {a0[-1] / a0[0]:.2f}, trained {a1[-1] / a1[0]:.2f}")
vz.activation_figure(acts, "trained")

# %% [markdown]
# ## 2 · Scaled cosine attention: bounded logits
#
# $\mathrm{Sim}(q_i,k_j) = \cos(q_i,k_j)\cdot e^{\min(\tau_h,\ \log 100)}$ — the logit can never exceed the learned
# scale (initialised to 10), whatever the magnitude of $q$ and $k$. Dot-product logits have no such bound: they
# scale with $\|q\|\,\|k\|$. The same three models, logits before bias, mask and softmax:

# %%
for r in acts:
    lo = min(s["min"] for s in r["logits_trained"]); hi = max(s["max"] for s in r["logits_trained"])
    lo0 = min(s["min"] for s in r["logits_init"]); hi0 = max(s["max"] for s in r["logits_init"])
    print(f"{r['variant']:<28} logits init [{lo0:6.2f}, {hi0:6.2f}]  trained [{lo:6.2f}, {hi:6.2f}]")
vz.logit_range_figure(acts, "trained")

# %% [markdown]
# The bound is a closed form we can check on any model, and the contrast is easy to provoke: multiply every
# q/k/v projection by 50 (as large weights would after a long, unstable training). Dot-product logits grow by
# 50² = 2500; cosine logits do not move past $\tau$.

# %%
x = torch.rand(4, 3, 64, 64)
for name in ("swinv2_lite_window4_64", "swin_lite_window4_64"):
    net = swin_v2.create_model(name).eval()
    before = max(l.abs().max().item() for l in swin_v2.attention_logits(net, x))
    with torch.no_grad():
        for a in net.modules():
            if isinstance(a, swin_v2.WindowAttention): a.qkv.weight.mul_(50)
    after = max(l.abs().max().item() for l in swin_v2.attention_logits(net, x))
    scale = max(torch.clamp(a.logit_scale, max=math.log(100)).exp().max().item()
                for a in net.modules() if isinstance(a, swin_v2.WindowAttention)) if net.cfg.attn == "cosine" else None
    print(f"{name:<24} ({net.cfg.attn:>6}): max |logit| {before:8.3f} -> {after:10.3f} after x50"
          + (f"  (bound tau = {scale:.1f})" if scale else ""))

# %% [markdown]
# ## 3 · Log-spaced continuous position bias
#
# The CPB is a *function* of the offset, so a model trained with window $M_{pre}$ can produce a bias for any
# window $M$. Coordinates are normalised by the pretrained window; the log spacing shrinks the range that the
# MLP must extrapolate to. For $M_{pre}=4$, a 16-window needs offsets up to 15: linear coordinates go to 5.0,
# log-spaced ones only to about 1.8.

# %%
for M in (8, 16):
    lin = swin_v2.relative_coords_table(M, 4, "linear").abs().max().item()
    log = swin_v2.relative_coords_table(M, 4, "log").abs().max().item()
    print(f"window {M:2d} from pretrained 4: max |coordinate| linear {lin:.2f}, log-spaced {log:.2f}")
vz.coordinate_mapping_figure(4, (4, 8, 16))

# %% [markdown]
# The demo model (`swinv2_micro_window4_64`, trained on 64 px shapes with window 4, the log-CPB run of the
# study) evaluated as a function: its stage-1 bias along $\Delta x$ for windows 4, 8 and 16.

# %%
from workbench.studies.swin_v2 import load_demo_model
demo, v1_tables = load_demo_model()
attn = demo.layers[0].blocks[0].attn
curves = {M: swin_v2.bias_over_offsets(attn, M, 4)[0, M - 1].numpy() for M in (4, 8, 16)}
print("bias at offset 0 for windows 4/8/16:", [round(float(c[len(c) // 2]), 3) for c in curves.values()])
vz.cpb_curve_figure(curves, head=0)

# %% [markdown]
# ## 4 · Loading official and timm checkpoints
#
# Our `state_dict()` uses the official key names (`layers.{i}.blocks.{j}.attn.cpb_mlp.0.weight`, downsample at
# the end of stages 0–2, `head.weight`). `convert_state_dict` also accepts timm's layout (downsample at the
# start of stages 1–3, `head.fc.*`), `rpe_mlp`-named SimMIM checkpoints and `{"model": ...}` wrappers, and drops
# the index/coordinate/mask buffers, which are rebuilt. Nothing can be downloaded here, so we build a timm-format
# state dict by applying timm's documented renames to our own model and load it back:

# %%
import re
src = swin_v2.create_model("swinv2_lite_window4_64").eval()
timm_sd = {}
for k, v in src.state_dict().items():
    mm = re.match(r"layers\.(\d+)\.downsample\.(.*)", k)
    k = f"layers.{int(mm.group(1)) + 1}.downsample.{mm.group(2)}" if mm else k
    timm_sd[k.replace("head.", "head.fc.") if k.startswith("head.") else k] = v
dst = swin_v2.create_model("swinv2_lite_window4_64").eval()
print(dst.load_state_dict(swin_v2.convert_state_dict(timm_sd), strict=True))
x = torch.rand(2, 3, 64, 64)
with torch.no_grad():
    print("max |logit difference| after the timm round trip:", (src(x) - dst(x)).abs().max().item())

# %% [markdown]
# The test suite (`tests/test_swin_v2.py`) checks the same model against an independent implementation: HF
# transformers' `Swinv2ForImageClassification`, built offline from the tiny window-8 config with our random
# weights mapped onto its names — logits agree to within 1e-4 (V1 likewise against HF's `SwinModel`).

# %% [markdown]
# ## 5 · Resolution and window transfer
#
# Train at 64 px with window 4, then build the model for 128 px with window 8 and load *nothing but the state
# dict*. The V1 table is resized bicubically (what users of the official code do by hand); the CPB models set
# `pretrained_window_sizes` to the training windows and evaluate the MLP at the new offsets. Then a short
# fine-tune at 128 px. Paper claim (Table 1): the log-spaced CPB degrades least.

# %%
tr = read_jsonl(REC / "transfer.jsonl")
print(f"{'position bias':<22} {'64/w4':>7} {'128/w8':>8} {'128/w8 ft':>10}")
for r in tr:
    print(f"{r['variant']:<22} {r['acc_64_w4']:7.3f} {r['acc_128_w8_zero_shot']:8.3f} {r['acc_128_w8_finetuned']:10.3f}")
vz.transfer_figure(tr)

# %%
print(open(REC / "README.md").read())

# %% [markdown]
# ## 6 · The fast path and its speed
#
# Attention runs through `torch.nn.functional.scaled_dot_product_attention`: the logit scale is folded into
# $q$ (so SDPA's own scale is 1), and the position bias plus the shift mask go in as the additive mask. The
# explicit path (`use_sdpa=False`) computes $\mathrm{softmax}(\tau\cos(q,k) + B + \text{mask})\,v$ step by step;
# they agree to float tolerance:

# %%
net = swin_v2.create_model("swinv2_lite_window8_128", drop_path_rate=0.0).eval()
with torch.no_grad():
    for n, p in net.named_parameters():
        if "norm" in n and n.endswith("weight"): p.fill_(1.0)      # wake the zero-initialised post-norms
    xx = torch.rand(2, 3, 128, 128)
    d = (net.set_sdpa(True)(xx) - net.set_sdpa(False)(xx)).abs().max().item()
print(f"max |SDPA - explicit| < 1e-4: {d < 1e-4}")

# %% [markdown]
# `workbench bench swinv2` times the tiny window-8 model at 256 px: our SDPA and explicit paths and HF
# transformers' Swinv2 (timm's cannot be imported here: it needs torchvision). The committed results:

# %%
from workbench.bench import load_results
res = load_results("swinv2")
print(res["title"], "|", res["machine"].get("cpu") or "", "|", res["machine"].get("gpu") or "no GPU")
for r in res["rows"]:
    print(f"batch {r['batch']:>2} {r['mode']:<17} {r['implementation']:<24} {r['images/s']:>8} img/s  x{r['speed vs HF']} vs HF")

# %% [markdown]
# ## Explore
#
# The same panel as the app tab *Swin V2 position bias* (`workbench app`): choose layer, block, head, window
# and pretrained window of the demo model and a query position (index = row · window + column); left: the CPB
# over offsets, middle: that query's bias over the window, right: the V1 table of the same training run
# bicubically resized to the window.

# %% tags=["nbval-ignore-output"]
from workbench.widgets.swin_v2 import bias_explorer
bias_explorer(demo, v1_tables)
