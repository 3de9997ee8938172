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
# # 07 · Balanced Sparsity: pruning that GPUs (and CPUs) can actually use
#
# Yao, Cao, Xiao, Zhang, Nie, *Balanced Sparsity for Efficient DNN Inference on GPU*, AAAI 2019. Unstructured
# magnitude pruning keeps accuracy at high sparsity but leaves rows with very different numbers of nonzeros, so
# parallel kernels wait for the heaviest row (and need 8–12 bytes of index per nonzero); block pruning is fast but
# loses accuracy. **Balanced sparsity** splits every row of $W \in \mathbb{R}^{R\times C}$ into banks of $B$
# consecutive weights and keeps the same number in each:
#
# $$k = \max\big(1, \operatorname{round}((1-s)\,B)\big) \quad\text{largest } |w| \text{ per bank} \tag{1}$$
#
# Stored as values $V\in\mathbb{R}^{R\times C/B\times k}$ plus in-bank offsets $O$ (uint8 for $B\le 256$), the
# product is
#
# $$y_r = \sum_{b}\sum_{j<k} V_{r,b,j}\; x_{bB + O_{r,b,j}} \tag{3}$$
#
# — the same work for every row and every bank. Gradual pruning follows Zhu & Gupta's cubic schedule
# $s_t = s_f + (s_i - s_f)(1 - t/T)^3$ (2). The paper's headline: up to **3.1× practical speedup** on GPU at the
# accuracy of unstructured sparsity. Everything here runs `workbench.sparse` and reads the committed records
# (`workbench train sparse-study`, `workbench bench sparse`).

# %%
import numpy as np, torch
torch.set_num_threads(1); torch.manual_seed(0)
from workbench.sparse import prune, measure
from workbench.sparse.formats import BalancedMatrix
from workbench.studies import sparse as study
from workbench.viz import sparse as vz
name, W = measure.example_weight()          # a trained Swin V2 MLP weight, saved before pruning
print(name, tuple(W.shape), "bank 32, k at 90%:", prune.kept_per_bank(0.9, 32))

# %% [markdown]
# ## 1 · The patterns side by side
#
# The same trained weight pruned five ways at 87.5% sparsity (top-left 16 rows × 128 columns; red dotted lines are
# bank borders). Balanced and N:M keep exactly $k$ per bank; unstructured keeps the globally largest weights of the
# layer (dense clusters and empty stretches); block and vector keep whole 4×4 tiles / 4×1 columns.

# %%
pat, per_bank, per_row, summary = vz.pattern_panel(W, 0.875, 32, name=name)
print(summary)
pat

# %% [markdown]
# ## 2 · Why balance removes load imbalance
#
# A GPU (or CPU) kernel gives each thread a row (or a bank). Its run time is set by the *heaviest* row, so the
# useful measure is the row work max/mean: 1.00 for balanced and N:M by construction, well above 1 for unstructured.
# Per bank the balanced histogram is a single bar.

# %%
per_bank

# %%
per_row

# %% [markdown]
# ## 3 · The packed format and its products
#
# `BalancedMatrix` stores values `(rows, banks, k)` and offsets in the smallest integer type. At 4096×4096 and
# 90.6% sparsity (6 of 64 kept), fp32 values + uint8 offsets cost 5 bytes per nonzero against 8 for scipy's CSR
# (int32 columns) and 12 for torch's CSR (int64) — the ideal batch-1 speedup over dense is $1/(1.25(1-s)) \approx 8.5$.
# The CPU kernels (numba, compiled per bank geometry) are checked here against a float64 dense product.

# %%
g = torch.Generator().manual_seed(0)
A = torch.randn(512, 1024, generator=g)
bm = BalancedMatrix.from_dense(A, sparsity=0.9, bank_size=64)
x, X = torch.randn(1024, generator=g), torch.randn(1024, 16, generator=g)
dense = bm.to_dense().double()
print("values", tuple(bm.values.shape), bm.values.dtype, "| offsets", tuple(bm.offsets.shape), bm.offsets.dtype)
print(f"actual sparsity {bm.sparsity:.4f}; bytes per nonzero {bm.nbytes / bm.nnz:.1f}")
e1 = float((bm.matmul(x).double() - dense @ x.double()).abs().max())
e16 = float((bm.matmul(X).double() - dense @ X.double()).abs().max())
print("max |error| vs float64 below 1e-4 (fp32 rounding): batch 1", e1 < 1e-4, "| batch 16", e16 < 1e-4)
print("to_dense == W * mask:", torch.equal(bm.to_dense(), A * prune.balanced_mask(A, 0.9, 64)))

# %% [markdown]
# ## 4 · Accuracy at equal sparsity (the paper's first claim)
#
# Three tasks, each trained dense and then pruned gradually with fine-tuning (2 seeds; banks of 32, so the
# sparsities 50 / 75 / 87.5 / 93.75% are exact for every method): an MLP on digits (accuracy), a character-level
# LSTM language model on an offline corpus (perplexity, lower is better) and a tiny Swin V2 on shapes whose MLPs
# are pruned (accuracy). From `studies/sparse/accuracy.jsonl`:

# %%
records = measure.accuracy_records()
print(study.accuracy_table(records))

# %%
vz.accuracy_figure(records, "lstm")

# %%
vz.accuracy_figure(records, "mlp")

# %%
vz.accuracy_figure(records, "swin")

# %% [markdown]
# ## 5 · Speed (the paper's second claim), from the committed benchmark
#
# `workbench bench sparse` times $y = Wx$ with methods interleaved, caches flushed and medians, on this project's
# 2-core CPU (AMD EPYC, 2 threads): dense (best of torch and numpy BLAS), scipy CSR, torch CSR, scipy BSR (4×4
# blocks) and the balanced numba kernel. On a lent GPU the same script times cuBLAS, cuSPARSE and the CuPy kernels
# with CUDA events. `balanced_isolated` is the same kernel timed on its own right after: on this shared 2-core
# machine, a thread pool that has gone idle while another library's pool ran pays the scheduler's wake-up latency,
# which the interleaved `balanced` row includes (it hits batch 1 hardest, where a call lasts well under a
# millisecond).

# %%
cpu = measure.cpu_results()
print(cpu["notes"])
m = cpu["machine"]
print(f"\nmachine: {m['cpu']}, {m['cores']} cores, load before {m.get('load_avg_1m_before', float('nan')):.1f}, bandwidth {cpu['rows'][0]['bandwidth_gbps']:.1f} GB/s")
for r in cpu["rows"]:
    if r["size"] == 4096 and r["target"] == 0.9 and r["batch"] in (1, 128):
        print(f"batch {r['batch']:>3} {r['method']:<12} {r['median_ms']:8.3f} ms  {r['speedup_vs_dense']:5.2f}x dense  {r['gbps']:5.1f} GB/s")

# %%
vz.records_speed_figure(cpu["rows"], x="target", size=4096, batch=1, value="speedup_vs_dense",
                        title="CPU, 4096x4096, batch 1: speedup over the best dense BLAS")

# %%
vz.records_speed_figure(cpu["rows"], x="target", size=4096, batch=128, value="speedup_vs_dense",
                        title="CPU, 4096x4096, batch 128")

# %%
gpu = measure.gpu_records()
if gpu:
    print("GPU records from", gpu[0]["device"])
    fig = vz.records_speed_figure(gpu, x="target", size=4096, batch=1, value="speedup_vs_dense",
                                  title=f"GPU ({gpu[0]['device']}), 4096x4096, batch 1: speedup over cuBLAS fp32")
else:
    print("No GPU records are committed: this session had no GPU. The CuPy kernels (balanced.cu) compile with nvcc "
          "and `workbench bench sparse --device cuda` writes benchmarks/results/sparse_gpu.* on a GPU machine.")
    fig = None
fig

# %% [markdown]
# ## 6 · A sparse Swin V2 running inference
#
# The demo checkpoint (`workbench train sparse-demo`) is the tiny Swin V2 trained on shapes whose block MLPs were
# gradually pruned to 87.5% balanced sparsity. `sparsify_` replaces those `nn.Linear` layers by
# `BalancedSparseLinear` (packed values + uint8 offsets, numba kernels); the outputs equal the masked dense model's.

# %%
from workbench.sparse.nn import BalancedSparseLinear
sparse_model, ck = study.demo_model(sparse=True)
dense_model, _ = study.demo_model(sparse=False)
xs, ys = study._shapes(200, 12)
with torch.no_grad():
    ls, ld = sparse_model(xs), dense_model(xs)
n_sparse = sum(isinstance(m, BalancedSparseLinear) for m in sparse_model.modules())
print(f"{n_sparse} MLP layers replaced; max |logit difference| below 1e-4:", float((ls - ld).abs().max()) < 1e-4)
print(f"accuracy on 200 test shapes: sparse {float((ls.argmax(1) == ys).float().mean()):.3f}, "
      f"dense-masked {float((ld.argmax(1) == ys).float().mean()):.3f}")
print(f"recorded at training time: dense {ck.extra['dense_accuracy']:.3f}, 87.5% balanced {ck.extra['sparse_accuracy']:.3f}")

# %% [markdown]
# ## Explore
#
# The panel below mirrors the app tab "Sparse speedup dashboard" (`workbench app`): pruning patterns and
# histograms for any sparsity and bank size, a small live CPU measurement, the committed speed records and the
# accuracy curves — built from the same `workbench.sparse.measure` and `workbench.viz.sparse` functions.

# %% tags=["nbval-ignore-output"]
from workbench.widgets.sparse import sparse_explorer
panel = sparse_explorer()
panel.widget
