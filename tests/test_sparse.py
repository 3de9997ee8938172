"""Tests of workbench.sparse (Balanced Sparsity): masks against slow loops, the packed format against float64
dense references, CPU kernels, sparse modules against masked dense models, and bad input."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from torch import nn

from workbench.sparse import prune
from workbench.sparse.formats import BalancedMatrix, index_dtype_for
from workbench.sparse.nn import (
    BalancedSparseLinear,
    BalancedSparseLSTM,
    SparsifyConfig,
    masked_dense_,
    sparsify_,
)

torch.set_num_threads(1)


def _slow_balanced(W: torch.Tensor, sparsity: float, B: int) -> torch.Tensor:
    """Loop oracle: for every bank, keep the k largest |w|, ties by lower column (python sort)."""
    k = max(1, int(round((1 - sparsity) * B)))
    rows, cols = W.shape
    out = torch.zeros(rows, cols, dtype=torch.bool)
    for r in range(rows):
        for b0 in range(0, cols, B):
            idx = list(range(b0, min(cols, b0 + B)))
            idx.sort(key=lambda c: (-abs(float(W[r, c])), c))
            for c in idx[:k]:
                out[r, c] = True
    return out


# ---------------------------------------------------------------------------------------------- masks
@pytest.mark.parametrize("shape,B,s", [((7, 64), 16, 0.75), ((5, 96), 32, 0.9), ((3, 40), 8, 0.5), ((4, 64), 64, 0.95)])
def test_balanced_mask_matches_loop_and_is_balanced(shape, B, s):
    g = torch.Generator().manual_seed(0)
    W = torch.randn(shape, generator=g)
    m = prune.balanced_mask(W, s, B)
    assert torch.equal(m, _slow_balanced(W, s, B))
    k = prune.kept_per_bank(s, B)
    assert (prune.bank_counts(m, B) == k).all()
    # the kept ones are the largest: min kept |w| >= max dropped |w| inside every bank
    a = W.abs().reshape(shape[0], -1, B)
    mb = m.reshape(shape[0], -1, B)
    kept_min = torch.where(mb, a, torch.full_like(a, np.inf)).amin(-1)
    drop_max = torch.where(~mb, a, torch.full_like(a, -1.0)).amax(-1)
    assert (kept_min >= drop_max).all()


def test_balanced_mask_ties_are_deterministic():
    W = torch.ones(3, 16)
    m = prune.balanced_mask(W, 0.75, 8)
    expect = torch.zeros(3, 16, dtype=torch.bool)
    expect[:, 0:2] = True
    expect[:, 8:10] = True
    assert torch.equal(m, expect)
    assert torch.equal(m, _slow_balanced(W, 0.75, 8))


def test_balanced_mask_padding():
    W = torch.randn(4, 50, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="not a multiple of bank_size"):
        prune.balanced_mask(W, 0.5, 16)
    m = prune.balanced_mask(W, 0.5, 16, pad=True)
    assert torch.equal(m, _slow_balanced(W, 0.5, 16))
    assert (m[:, 48:].sum(1) == 2).all()  # last bank has only 2 weights: both kept (min(k, len))


def test_nm_mask_is_2_of_4():
    W = torch.randn(6, 32, generator=torch.Generator().manual_seed(2))
    m = prune.nm_mask(W, 2, 4)
    assert (m.reshape(6, 8, 4).sum(-1) == 2).all()
    assert torch.equal(m, _slow_balanced(W, 0.5, 4))
    assert torch.equal(prune.make_mask(W, "nm", 0.5, bank_size=4), m)


def test_unstructured_and_global_masks():
    g = torch.Generator().manual_seed(3)
    W = torch.randn(10, 20, generator=g)
    m = prune.unstructured_mask(W, 0.9)
    assert int(m.sum()) == 20
    thr = W.abs().flatten().sort(descending=True).values[19]
    assert torch.equal(m, W.abs() >= thr)
    ws = {"a": torch.randn(4, 5, generator=g), "b": 3 * torch.randn(6, 2, generator=g)}
    gm = prune.global_masks(ws, 0.5)
    allv = torch.cat([w.abs().flatten() for w in ws.values()])
    t = allv.sort(descending=True).values[15]
    for n, w in ws.items():
        assert torch.equal(gm[n], w.abs() >= t)


def test_block_and_vector_masks():
    g = torch.Generator().manual_seed(4)
    W = torch.randn(8, 12, generator=g)
    m = prune.block_mask(W, 0.5, (2, 3))
    tiles = W.abs().reshape(4, 2, 4, 3).mean((1, 3))
    keep = tiles >= tiles.flatten().sort(descending=True).values[7]
    assert torch.equal(m, keep[:, None, :, None].expand(4, 2, 4, 3).reshape(8, 12))
    v = prune.vector_mask(W, 0.75, 4)
    cols = v.reshape(2, 4, 12)
    assert ((cols.sum(1) == 0) | (cols.sum(1) == 4)).all()  # whole 4x1 vectors
    assert int(v.sum()) == 24


def test_conv_mask_uses_im2col_matrix():
    conv = nn.Conv2d(3, 8, 3)  # im2col row length 27 -> bank 9
    m = prune.balanced_mask(conv.weight, 2 / 3, 9)
    assert m.shape == conv.weight.shape
    assert (m.reshape(8, 3, 9).sum(-1) == 3).all()


def test_cubic_schedule_closed_form():
    assert prune.cubic_sparsity(0, 10, 0.9) == 0.0
    assert prune.cubic_sparsity(10, 10, 0.9) == pytest.approx(0.9)
    assert prune.cubic_sparsity(5, 10, 0.9) == pytest.approx(0.9 - 0.9 * 0.5 ** 3)
    vals = [prune.cubic_sparsity(t, 10, 0.8, 0.1) for t in range(11)]
    assert all(b >= a for a, b in zip(vals, vals[1:]))


def test_pruner_keeps_pattern_through_updates():
    model = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 4))
    p = prune.Pruner(model, prune.PruneConfig("balanced", 0.75, bank_size=8))
    p.update(0.75)
    for n, w in p.weights.items():
        assert torch.equal(w != 0, p.masks[n] & (w != 0))
        assert (prune.bank_counts(p.masks[n], 8) == 2).all()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    p.apply()
    assert torch.equal(model[0].weight != 0, p.masks["0.weight"])
    assert p.sparsity() == pytest.approx(0.75)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "x"])
def test_bad_sparsity_rejected(bad):
    with pytest.raises(ValueError, match="sparsity"):
        prune.balanced_mask(torch.randn(2, 8), bad, 4)


def test_bad_weights_rejected():
    with pytest.raises(ValueError, match="2-D"):
        prune.balanced_mask(torch.randn(8), 0.5, 4)
    with pytest.raises(ValueError, match="NaN"):
        prune.balanced_mask(torch.tensor([[float("nan"), 1.0, 2.0, 3.0]]), 0.5, 4)
    with pytest.raises(ValueError, match="unknown pruning method"):
        prune.make_mask(torch.randn(2, 8), "random", 0.5)


# ---------------------------------------------------------------------------------------------- format
@pytest.mark.parametrize("B,idt", [(16, torch.uint8), (64, torch.int16), (32, torch.int32), (256, None)])
def test_roundtrip_to_dense_equals_masked(B, idt):
    g = torch.Generator().manual_seed(5)
    W = torch.randn(9, 2 * B, generator=g)
    bm = BalancedMatrix.from_dense(W, 0.8, B, index_dtype=idt)
    assert bm.offsets.dtype == (idt or torch.uint8)
    assert torch.equal(bm.to_dense(), W * prune.balanced_mask(W, 0.8, B))
    k = prune.kept_per_bank(0.8, B)
    assert bm.values.shape == (9, 2, k)
    assert bm.nbytes == 9 * 2 * k * (4 + bm.offsets.element_size())
    assert bm.sparsity == pytest.approx(1 - k / B)


def test_index_dtype_choice():
    assert index_dtype_for(256) == torch.uint8
    assert index_dtype_for(257) == torch.int16
    assert index_dtype_for(40000) == torch.int32
    with pytest.raises(ValueError, match="does not fit"):
        BalancedMatrix.from_dense(torch.randn(2, 512), 0.5, 512, index_dtype=torch.uint8)


def test_from_mask_rejects_unbalanced_and_pads():
    W = torch.randn(4, 16)
    m = prune.unstructured_mask(W, 0.5)
    m[0, :8] = True
    m[0, 8:] = False
    with pytest.raises(ValueError, match="not balanced"):
        BalancedMatrix.from_mask(W, m, 8)
    W2 = torch.randn(3, 21, generator=torch.Generator().manual_seed(6))
    bm = BalancedMatrix.from_dense(W2, 0.5, 8, pad=True)
    assert torch.equal(bm.to_dense(), W2 * prune.balanced_mask(W2, 0.5, 8, pad=True))
    x = torch.randn(21, dtype=torch.float32)
    torch.testing.assert_close(bm.matmul(x).double(), bm.to_dense().double() @ x.double(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("idt", [torch.uint8, torch.int16, torch.int32])
@pytest.mark.parametrize("n", [None, 1, 5, 33])
def test_cpu_matmul_matches_float64_dense(dtype, idt, n):
    g = torch.Generator().manual_seed(7)
    rows, cols, B = 37, 96, 32
    W = torch.randn(rows, cols, generator=g, dtype=dtype)
    bm = BalancedMatrix.from_dense(W, 0.85, B, index_dtype=idt)
    x = torch.randn(cols, generator=g, dtype=dtype) if n is None else torch.randn(cols, n, generator=g, dtype=dtype)
    y = bm.matmul(x)
    ref = bm.to_dense().double() @ x.double()
    assert y.shape == ref.shape and y.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(y.double(), ref, rtol=tol, atol=tol)
    torch.testing.assert_close(bm.matmul_reference(x), ref, rtol=1e-12, atol=1e-12)


def test_cpu_matmul_random_shapes_and_threads():
    rng = np.random.default_rng(8)
    for _ in range(4):
        B = int(rng.choice([8, 16]))  # few (k, B) geometries: each one is a numba compile
        rows, cols = int(rng.integers(1, 50)), B * int(rng.integers(1, 5))
        s = float(rng.choice([0.5, 0.75]))
        W = torch.from_numpy(rng.standard_normal((rows, cols)).astype(np.float32))
        bm = BalancedMatrix.from_dense(W, s, B)
        for x in (torch.randn(cols), torch.randn(cols, 3)):
            ref = (W * prune.balanced_mask(W, s, B)).double() @ x.double()
            torch.testing.assert_close(bm.matmul(x, threads=1).double(), ref, rtol=1e-5, atol=1e-5)


def test_matmul_bad_input():
    bm = BalancedMatrix.from_dense(torch.randn(8, 32), 0.5, 16)
    with pytest.raises(ValueError, match="shape"):
        bm.matmul(torch.randn(31))
    with pytest.raises(ValueError, match="dtype"):
        bm.matmul(torch.randn(32, dtype=torch.float64))
    with pytest.raises(ValueError, match="contiguous"):
        bm.matmul(torch.randn(4, 32).t())
    with pytest.raises(ValueError, match="torch tensor"):
        bm.matmul(np.zeros(32, np.float32))
    with pytest.raises(ValueError, match="not supported"):
        BalancedMatrix.from_dense(torch.randn(8, 32).half(), 0.5, 16).matmul(torch.randn(32).half())
    with pytest.raises(ValueError, match="bank_size"):
        BalancedMatrix.from_dense(torch.randn(8, 30), 0.5, 16)


# ---------------------------------------------------------------------------------------------- modules
def test_sparse_linear_equals_masked_dense():
    torch.manual_seed(0)
    lin = nn.Linear(48, 20)
    sp = BalancedSparseLinear.from_linear(lin, 0.75, 16)
    ref = nn.Linear(48, 20)
    ref.load_state_dict(lin.state_dict())
    with torch.no_grad():
        ref.weight.mul_(prune.balanced_mask(ref.weight, 0.75, 16))
    for x in (torch.randn(48), torch.randn(1, 48), torch.randn(2, 3, 48)):
        torch.testing.assert_close(sp(x), ref(x), rtol=1e-5, atol=1e-5)
    assert torch.equal(sp.dense_weight(), ref.weight)


def test_sparsify_mlp_and_lstm_equal_masked_dense():
    torch.manual_seed(1)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(30, 32)
            self.lstm = nn.LSTM(32, 32, num_layers=2)
            self.mlp = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
            self.head = nn.Linear(32, 30)

        def forward(self, t):
            h, _ = self.lstm(self.emb(t))
            return self.head(h + self.mlp(h))

    net = Net().eval()
    dense = Net().eval()
    dense.load_state_dict(net.state_dict())
    cfg = SparsifyConfig(sparsity=0.75, bank_size=16, exclude=r"^head$")
    replaced = sparsify_(net, cfg)
    assert set(replaced) == {"lstm", "mlp.0", "mlp.2"}
    assert set(masked_dense_(dense, cfg)) == set(replaced)
    assert isinstance(net.lstm, BalancedSparseLSTM) and isinstance(net.mlp[0], BalancedSparseLinear)
    assert isinstance(net.head, nn.Linear)
    t = torch.randint(0, 30, (7, 3))
    with torch.no_grad():
        torch.testing.assert_close(net(t), dense(t), rtol=1e-4, atol=1e-5)


def test_sparsify_conv_free_model_errors():
    with pytest.raises(ValueError, match="no Linear"):
        sparsify_(nn.Sequential(nn.ReLU()), SparsifyConfig())
    with pytest.raises(ValueError, match="wrap"):
        sparsify_(nn.Linear(4, 4), SparsifyConfig())


def test_sparse_linear_state_dict_roundtrip():
    lin = nn.Linear(32, 8)
    sp = BalancedSparseLinear.from_linear(lin, 0.5, 8)
    sd = sp.state_dict()
    assert sd["offsets"].dtype == torch.uint8
    sp2 = BalancedSparseLinear.from_linear(nn.Linear(32, 8), 0.5, 8)
    sp2.load_state_dict(sd)
    x = torch.randn(5, 32)
    assert torch.equal(sp(x), sp2(x))


# ---------------------------------------------------------------------------------------------- CUDA
def _cuda_ok() -> bool:
    from workbench.sparse.kernels import gpu
    return gpu.available()


needs_gpu = pytest.mark.skipif(not _cuda_ok(), reason="needs a CUDA GPU")


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("idt", [torch.uint8, torch.int16, torch.int32])
@pytest.mark.parametrize("kernel,n", [("spmv", None), ("spmv", 1), ("spmm", 7), ("spmm", 70), ("simple", 33), ("auto", 128)])
def test_gpu_kernels_match_torch(dtype, idt, kernel, n):
    from workbench.sparse.kernels import gpu
    g = torch.Generator().manual_seed(9)
    rows, cols, B = 131, 3 * 64 + 20, 64
    W = torch.randn(rows, cols, generator=g)
    bm = BalancedMatrix.from_dense(W, 0.9, B, pad=True, index_dtype=idt).to("cuda", dtype)
    x = torch.randn(cols, generator=g) if n is None else torch.randn(cols, n, generator=g)
    xc = x.to("cuda", dtype)
    y = gpu.balanced_matmul(bm.values, bm.offsets, xc, B, cols, kernel=kernel) if kernel != "auto" else bm.matmul(xc)
    ref = bm.to_dense().double() @ xc.double()
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(y.double(), ref, rtol=tol, atol=tol * 10)


@needs_gpu
def test_gpu_sparsify_equals_masked_dense():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 128)).cuda().eval()
    dense = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 128)).cuda().eval()
    dense.load_state_dict(net.state_dict())
    cfg = SparsifyConfig(sparsity=0.9, bank_size=64)
    sparsify_(net, cfg)
    masked_dense_(dense, cfg)
    x = torch.randn(16, 128, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(net(x), dense(x), rtol=1e-4, atol=1e-4)


@needs_gpu
def test_gpu_bad_input():
    bm = BalancedMatrix.from_dense(torch.randn(8, 32), 0.5, 16)
    with pytest.raises(ValueError, match="cuda|cpu"):
        bm.matmul(torch.randn(32, device="cuda"))
    bmc = bm.to("cuda")
    with pytest.raises(ValueError, match="dtype"):
        bmc.matmul(torch.randn(32, device="cuda", dtype=torch.float64))
