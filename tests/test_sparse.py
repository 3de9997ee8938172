"""Tests of workbench.sparse (Balanced Sparsity): masks against slow loops, the packed format against float64
dense references, CPU kernels (C++ and numba), the dense/sparse dispatcher, sparse modules against masked dense
models, the CUDA kernels' launch plans and their CPU emulation against float64 products, and bad input.
No test times anything: speed is judged by `workbench bench sparse`."""
from __future__ import annotations

import copy
import io
import json
import os
import time
import warnings

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
    with pytest.raises(ValueError, match="shape"):  # the small-batch path passes what it does not take on
        bm.matmul(torch.randn(32, 2, 2))
    assert bm.matmul(torch.randn(32, 0)).shape == (8, 0)
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




@pytest.mark.parametrize("dispatch", ["auto", "sparse", "dense"])
def test_sparse_linear_paths_equal_masked_dense_float64(dispatch):
    """Every path of the layer (kernels, dense fallback) against a float64 masked dense Linear, batch 1..40."""
    torch.manual_seed(3)
    lin = nn.Linear(320, 96)  # 320 = 5 banks of 64
    sp = BalancedSparseLinear.from_linear(lin, 0.9, 64, dispatch=dispatch)
    W = (lin.weight * prune.balanced_mask(lin.weight, 0.9, 64)).double()
    for shape in ((320,), (1, 320), (3, 320), (2, 20, 320)):
        x = torch.randn(shape)
        ref = x.double() @ W.t() + lin.bias.double()
        with torch.no_grad():
            y = sp(x)
        assert y.shape == ref.shape and y.dtype == torch.float32
        torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)
        info = sp.path_info
        assert info["batch"] == int(np.prod(shape[:-1]))
        if dispatch != "auto":
            assert info["path"] == dispatch and "forced" in info["reason"]
        assert (info["kernel"] == "dense") == (info["path"] == "dense")


def test_sparsify_forced_sparse_kernels_equal_masked_dense():
    torch.manual_seed(4)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(128, 96, num_layers=2)
            self.fc = nn.Linear(96, 128)

        def forward(self, x):
            return self.fc(self.lstm(x)[0])

    net, dense = Net().eval(), Net().eval()
    dense.load_state_dict(net.state_dict())
    cfg = SparsifyConfig(sparsity=0.75, bank_size=32, dispatch="sparse")
    sparsify_(net, cfg)
    masked_dense_(dense, cfg)
    for T, B in ((5, 1), (3, 6)):
        x = torch.randn(T, B, 128)
        with torch.no_grad():
            torch.testing.assert_close(net(x).double(), dense(x).double(), rtol=1e-4, atol=1e-5)
    from workbench.sparse.nn import path_report
    rep = path_report(net)
    assert {r["layer"] for r in rep} == {"lstm.layers.0.ih", "lstm.layers.0.hh", "lstm.layers.1.ih",
                                        "lstm.layers.1.hh", "fc"}
    assert all(r["path"] == "sparse" and r["kernel"] != "dense" for r in rep)


# ---------------------------------------------------------------------------------------------- CPU kernels
def _cpu_kernels():
    from workbench.sparse.kernels import cpp, cpu
    cpu.library()
    st = cpp.status()
    ks = ["numba"]
    if st["backend"] == "cpp":
        ks.append("scalar")
        if st.get("avx2"):
            ks += ["gather", "spmm"]
        if st.get("avx512"):
            ks += ["tiles", "gspmm", "bspmm"]
    return ks


def _need_cpp_kernels():
    """Skip where the C++ kernels do not build (no compiler): ``test_kernel_skips_follow_the_cpu_and_the_compiler``
    checks that this happens only there."""
    if "scalar" not in _cpu_kernels():
        pytest.skip("no C++ kernels on this machine (covered by test_kernel_skips_follow_the_cpu_and_the_compiler)")


def test_kernel_skips_follow_the_cpu_and_the_compiler():
    """The skips of ``test_each_cpu_kernel_matches_float64`` hide nothing: the C++ backend is built wherever a C++
    compiler and Python's headers exist, and its AVX2 / AVX-512 kernels are reported exactly when the CPU's own
    flags (/proc/cpuinfo, read independently) have them."""
    import shutil
    import sysconfig
    from pathlib import Path

    _cpu_kernels()                       # builds (or loads) the library the kernel tests use
    from workbench.sparse.kernels import cpp

    st = cpp.status()
    compiler = shutil.which("c++") or shutil.which("g++")
    headers = (Path(sysconfig.get_paths()["include"]) / "Python.h").exists()
    if compiler and headers and not os.environ.get("WORKBENCH_SPARSE_BACKEND"):
        assert st["backend"] == "cpp", st["reason"]
    info = Path("/proc/cpuinfo")
    if st["backend"] == "cpp" and info.exists():
        flags = set()
        for line in info.read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
        assert st["avx2"] == ({"avx2", "fma"} <= flags)
        assert st["avx512"] == ("avx512f" in flags)


def test_another_copy_of_the_package_reuses_the_built_kernel(tmp_path):
    """A checkout and an installed copy share one kernel cache: the second finds the first's library (the build
    folder is keyed by the source's content, and the source is built from a copy inside that folder, so torch's
    ninja file does not change with the package's path). Before, they rebuilt it in turn."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    from workbench.sparse.kernels import cpp

    st = cpp.status()
    so = Path(st["build_dir"] or tmp_path) / f"{Path(st['build_dir'] or tmp_path).name}.so"
    before = so.stat().st_mtime_ns if st["backend"] == "cpp" else None
    pkg = Path(cpp.__file__).resolve().parents[3] / "workbench"
    shutil.copytree(pkg, tmp_path / "workbench", ignore=shutil.ignore_patterns("assets", "__pycache__", "*.pyc"))
    code = ("import json; from workbench.sparse.kernels import cpp; st = cpp.status(); "
            "print(json.dumps({k: st[k] for k in ('backend', 'build_dir', 'cached')}), cpp.SOURCE)")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=600, check=True).stdout.split()
    other = json.loads(" ".join(out[:-1]))
    assert Path(out[-1]).resolve().is_relative_to(tmp_path)            # the copy's own source was used
    if st["backend"] != "cpp":   # no C++ kernel here (test_kernel_skips_follow_the_cpu_and_the_compiler says why)
        assert other["backend"] == st["backend"]                        # the copy falls back the same way
        return
    assert other == {"backend": "cpp", "build_dir": st["build_dir"], "cached": True}
    assert so.stat().st_mtime_ns == before                              # and nothing was rebuilt


@pytest.mark.parametrize("kernel", ["tiles", "gather", "spmm", "gspmm", "bspmm", "scalar", "numba"])
@pytest.mark.parametrize("idt", [torch.uint8, torch.int16, torch.int32])
def test_each_cpu_kernel_matches_float64(kernel, idt):
    if kernel not in _cpu_kernels():
        pytest.skip(f"the {kernel} kernel is not available on this machine")
    g = torch.Generator().manual_seed(11)
    B = 16 if kernel == "numba" else 32
    rows, cols = 37, 5 * B - 7  # a shorter (padded) last bank
    W = torch.randn(rows, cols, generator=g)
    ns = {"gather": [None, 1], "tiles": [None, 1, 2, 4, 7, 8], "spmm": [2, 9, 33, 70, 130],
          "gspmm": [None, 3, 8, 9, 16, 17, 32, 40, 63, 70],
          "bspmm": [None, 1, 9, 33, 70, 128, 130], "scalar": [None, 3, 70],
          "numba": [None, 5]}[kernel]
    # the AVX2 SpMM walks the banks with k fixed at compile time for k <= 8, and reads a column table above
    sparsities = (0.75, 0.9, 0.5) if kernel in ("spmm", "gspmm") else (0.75,)
    ks = set()
    for s in sparsities:
        bm = BalancedMatrix.from_dense(W, s, B, pad=True, index_dtype=idt)
        ks.add(bm.k)
        dense = bm.to_dense().double()
        for n in ns:
            x = torch.randn(cols, generator=g) if n is None else torch.randn(cols, n, generator=g)
            y = bm.matmul(x, kernel=kernel)
            torch.testing.assert_close(y.double(), dense @ x.double(), rtol=1e-5, atol=1e-5)
    if kernel in ("spmm", "gspmm"):
        assert min(ks) < 8 and 8 in ks and max(ks) > 8
        # full banks of a power-of-two size: n = 8, 16 and 32 take the specialised bank walks (offsets masked with
        # B - 1, the x stride known at compile time), 24 and 48 the general ones with a masked last vector
        W2 = torch.randn(rows, 4 * B, generator=g)
        for s in (0.75, 0.9):
            bm = BalancedMatrix.from_dense(W2, s, B, index_dtype=idt)
            dense = bm.to_dense().double()
            for n in (8, 16, 24, 32, 48):
                x = torch.randn(4 * B, n, generator=g)
                torch.testing.assert_close(bm.matmul(x, kernel=kernel).double(), dense @ x.double(), rtol=1e-5,
                                           atol=1e-5)
    if kernel == "gspmm":
        # more rows than one block of the kernel (1024 rows per block and task; 2 threads), 9 banks = 3 groups
        W3 = torch.randn(2600, 9 * B, generator=g)
        bm = BalancedMatrix.from_dense(W3, 0.9, B, index_dtype=idt)
        for n in (8, 16, 20):
            x = torch.randn(9 * B, n, generator=g)
            torch.testing.assert_close(bm.matmul(x, kernel=kernel).double(), bm.to_dense().double() @ x.double(),
                                       rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [1, 3, 4, 5, 6, 7, 8, 9, 16, 32, 40, 70, 130])
def test_cpu_linear_fuses_bias_and_batch_major_layout(n):
    from workbench.sparse.kernels import cpu
    g = torch.Generator().manual_seed(12)
    W = torch.randn(70, 128, generator=g)
    bm = BalancedMatrix.from_dense(W, 0.875, 64)
    x2 = torch.randn(n, 128, generator=g)
    bias = torch.randn(70, generator=g)
    y, kernel = cpu.linear(bm.values, bm.offsets, x2, 64, 128, bias=bias)
    ref = x2.double() @ bm.to_dense().double().t() + bias.double()
    assert kernel == cpu.kernel_for(n, torch.float32, 64)
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5)


def test_cpu_tiles_layout_is_a_reordering():
    from workbench.sparse.kernels import cpp
    bm = BalancedMatrix.from_dense(torch.randn(21, 64, generator=torch.Generator().manual_seed(13)), 0.5, 16)
    vt, ot = cpp.make_tiles(bm.values, bm.offsets)
    assert vt.shape == (2, 4, 8, 16) and ot.dtype == bm.offsets.dtype
    for r in range(21):
        assert torch.equal(vt[r // 16, :, :, r % 16], bm.values[r]) and torch.equal(ot[r // 16, :, :, r % 16], bm.offsets[r])
    assert (vt[1, :, :, 5:] == 0).all() and (ot[1, :, :, 5:] == 0).all()  # padded rows: value 0 at offset 0
    before = bm.cpu_tiles()[0].clone()
    bm.values.mul_(2)  # an in-place change rebuilds the cached layout
    torch.testing.assert_close(bm.cpu_tiles()[0], 2 * before)


def test_cpu_groups_layout_is_a_reordering():
    from workbench.sparse.kernels import cpp
    bm = BalancedMatrix.from_dense(torch.randn(5, 96, generator=torch.Generator().manual_seed(15)), 0.5, 16)
    vg, og = cpp.make_groups(bm.values, bm.offsets)  # 6 banks of k = 8 -> 2 groups of 4, the second half padding
    assert vg.shape == (2, 5, 32) and og.dtype == bm.offsets.dtype
    for r in range(5):
        for b in range(6):
            q, i = divmod(b, 4)
            assert torch.equal(vg[q, r, 8 * i:8 * i + 8], bm.values[r, b])
            assert torch.equal(og[q, r, 8 * i:8 * i + 8], bm.offsets[r, b])
    assert (vg[1, :, 16:] == 0).all() and (og[1, :, 16:] == 0).all()
    before = bm.cpu_groups()[0].clone()
    bm.values.mul_(2)  # an in-place change rebuilds the cached layout
    torch.testing.assert_close(bm.cpu_groups()[0], 2 * before)


def test_layout_copies_of_2mb_and_more_sit_on_aligned_private_memory(monkeypatch):
    """``cpp.contiguous_copy`` (the kernels' layouts): equal to ``.contiguous()``, never a view of its input, aligned
    to a huge page where huge pages are asked for (Linux), and an ordinary tensor once saved or copied."""
    import copy
    import gc
    import io

    from workbench.sparse.kernels import cpp
    src = torch.randn(1100, 640, generator=torch.Generator().manual_seed(3))   # 2.8 MB: a huge-page candidate
    for t in (src, src.t(), src[:8]):                                          # large/permuted/small
        out = cpp.contiguous_copy(t)
        assert torch.equal(out, t) and out.is_contiguous() and out.data_ptr() != t.data_ptr()
        big = t.numel() * 4 >= cpp.HUGE_MIN_BYTES
        assert (out.data_ptr() % cpp.HUGE_PAGE == 0) == (big and cpp.huge_pages_enabled())
        out.add_(1)
        assert not torch.equal(out, t)                                         # a copy, the source is untouched
    out = cpp.contiguous_copy(src.t())
    gc.collect()                                                               # the mapping lives as long as out
    assert torch.equal(out, src.t())
    buf = io.BytesIO()
    torch.save(out, buf)
    buf.seek(0)
    assert torch.equal(torch.load(buf, weights_only=True), src.t()) and torch.equal(copy.deepcopy(out), src.t())
    monkeypatch.setenv("WORKBENCH_HUGEPAGES", "0")
    assert not cpp.huge_pages_enabled()
    assert torch.equal(cpp.contiguous_copy(src.t()), src.t())


def test_small_batch_fast_path_matches_float64_and_follows_in_place_changes():
    """``BalancedMatrix.matmul`` resolves the kernel of every batch below bspmm once (tiles, gather or spmm, as the
    dispatcher picks them); its result must equal the float64 product at every batch, and an in-place change of the
    weights must not leave a stale layout or pointer behind."""
    from workbench.sparse.kernels import cpu
    g = torch.Generator().manual_seed(14)
    bm = BalancedMatrix.from_dense(torch.randn(50, 192, generator=g), 0.875, 64)
    xs = [torch.randn(192, generator=g)] + [torch.randn(192, n, generator=g) for n in (1, 2, 4, 5, 9, 63, 64)]
    for _ in range(2):  # first call builds, second uses the cached path
        for x in xs:
            torch.testing.assert_close(bm.matmul(x).double(), bm.to_dense().double() @ x.double(), rtol=1e-5,
                                       atol=1e-5)
    if "scalar" in _cpu_kernels():  # the C++ kernels run here: batches below bspmm took the fast path
        assert set(bm._cache["cpu_fast"][3]) == {cpu.kernel_for(n, torch.float32, 64) for n in (1, 2, 4, 5, 9, 63)}
    bm.values.mul_(-3)
    for x in xs:
        torch.testing.assert_close(bm.matmul(x).double(), bm.to_dense().double() @ x.double(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bm.matmul(xs[3]), bm.matmul(xs[3], kernel="numba"), rtol=1e-5, atol=1e-5)


def test_call_binding_equals_the_python_path_and_refuses_what_it_does_not_take():
    """The C++ Runner behind ``matmul`` (``balanced_call.cpp``) runs the very kernel the Python path calls, so its
    result is bit-identical to it (and close to float64); it answers None - and ``matmul`` goes the checked general
    way - for every x it must not take and once the weights changed or the library was reset."""
    from workbench.sparse.kernels import cpp
    _need_cpp_kernels()
    assert cpp.call_binding() is not None, cpp.call_status()   # wherever the kernels build, the binding builds
    g = torch.Generator().manual_seed(21)
    bm = BalancedMatrix.from_dense(torch.randn(70, 256, generator=g), 0.875, 64)
    xs = [torch.randn(256, generator=g)] + [torch.randn(256, n, generator=g) for n in (2, 8, 17)]
    for x in xs:
        bm.matmul(x)
    call = bm._cache["cpu_call"]
    for x in xs:
        y = call(x, bm.values, bm.offsets)
        assert y is not None and y.shape == (70,) + tuple(x.shape[1:])
        assert torch.equal(y, bm._cpu_fast()(x))
        torch.testing.assert_close(y.double(), bm.to_dense().double() @ x.double(), rtol=1e-5, atol=1e-5)
    x = xs[1]
    refused = {"not contiguous": torch.randn(2, 256).t(), "negative view": torch._neg_view(x),
               "batch of bspmm": torch.randn(256, 300), "float64": x.double(), "wrong rows": torch.randn(255),
               "3-D": x[None]}
    for why, bad in refused.items():
        assert call(bad, bm.values, bm.offsets) is None, why
        if why in ("float64", "wrong rows", "3-D", "not contiguous"):   # the general way says what is wrong
            with pytest.raises(ValueError):
                bm.matmul(bad)
        else:                                                            # or computes it
            torch.testing.assert_close(bm.matmul(bad).double(), bm.to_dense().double() @ bad.resolve_neg().double(),
                                       rtol=1e-5, atol=1e-5, msg=why)
    with pytest.raises(TypeError):
        call("not a tensor", bm.values, bm.offsets)
    bm.values.mul_(-2)                        # an in-place change: the Runner stops, matmul rebuilds one
    assert not call.valid_for(bm.values, bm.offsets) and call(x, bm.values, bm.offsets) is None
    torch.testing.assert_close(bm.matmul(x).double(), bm.to_dense().double() @ x.double(), rtol=1e-5, atol=1e-5)
    bm.values = bm.values.clone()             # new weights assigned: not the tensors the Runner was made for
    assert not bm._cache["cpu_call"].valid_for(bm.values, bm.offsets)
    torch.testing.assert_close(bm.matmul(x).double(), bm.to_dense().double() @ x.double(), rtol=1e-5, atol=1e-5)
    fresh = bm._cache["cpu_call"]
    assert fresh is not call and fresh.valid_for(bm.values, bm.offsets)
    cpp.reset()                               # a reset library: no Runner made before it takes calls
    try:
        assert not fresh.valid_for(bm.values, bm.offsets) and fresh(x, bm.values, bm.offsets) is None
        torch.testing.assert_close(bm.matmul(x).double(), bm.to_dense().double() @ x.double(), rtol=1e-5, atol=1e-5)
        assert bm._cache["cpu_call"].valid_for(bm.values, bm.offsets)
    finally:
        cpp.reset()


def test_sparse_linear_runner_equals_the_general_path_and_follows_the_layer():
    """After its first product at a batch, ``BalancedSparseLinear`` runs that batch as one C++ call (the Runner of
    ``balanced_call.cpp``, the same kernel): the result equals the general path's bit for bit and the float64 product
    of the masked weight; ``path_info`` names the batch that ran last; a dispatch change, new weights (in place or
    loaded), another dtype and a copy all leave no stale Runner behind."""
    from workbench.sparse.kernels import cpp
    _need_cpp_kernels()
    g = torch.Generator().manual_seed(24)
    dense = nn.Linear(256, 96)
    with torch.no_grad():
        dense.weight.copy_(torch.randn(96, 256, generator=g))
        dense.bias.copy_(torch.randn(96, generator=g))
    layer = BalancedSparseLinear.from_linear(dense, 0.875, 64, dispatch="sparse")

    def ref(x, lay=layer):
        b = 0.0 if lay.bias is None else lay.bias.double()
        return x.double() @ lay.dense_weight().double().t() + b

    xs = [torch.randn(1, 256, generator=g), torch.randn(256, generator=g), torch.randn(3, 256, generator=g),
          torch.randn(2, 2, 256, generator=g)]
    for x in xs:
        first = layer(x)                    # the general path, which hands the kernel to the Runner
        calls = layer._run.calls
        again = layer(x)                    # the Runner
        assert layer._run.calls == calls + 1 and torch.equal(again, first) and again.shape == first.shape
        torch.testing.assert_close(again.double(), ref(x), rtol=1e-5, atol=1e-4)
        n = x.numel() // 256
        assert layer.path_info["batch"] == n and layer.path_info["kernel"] == layer._plan(n, "cpu")[1]
    wide = torch.randn(40, 256, generator=g)
    layer(wide)                                                   # a batch the Runner does not hold
    assert layer.path_info["batch"] == 40
    layer(xs[0])
    assert layer.path_info["batch"] == 1                          # the Runner's, again

    with torch.no_grad():
        layer.values.mul_(-1)                                     # in place: the Runner stops, the product follows
    torch.testing.assert_close(layer(xs[0]).double(), ref(xs[0]), rtol=1e-5, atol=1e-4)
    other = BalancedSparseLinear.from_linear(nn.Linear(256, 96), 0.875, 64, dispatch="sparse")
    layer.load_state_dict(other.state_dict())                     # loaded weights
    assert layer._run is None
    layer(xs[0])
    torch.testing.assert_close(layer(xs[0]), other(xs[0]), rtol=0, atol=0)
    twin = copy.deepcopy(layer)                                   # a copy makes its own Runner
    assert twin._run is None and torch.equal(twin(xs[0]), layer(xs[0]))
    buf = io.BytesIO()
    torch.save(layer, buf)
    wide64 = layer.double()                                       # new buffers: the float64 kernels
    x64 = xs[0].double()
    for _ in range(2):
        torch.testing.assert_close(wide64(x64), ref(x64, wide64), rtol=1e-10, atol=1e-10)
    layer.float()
    layer.dispatch = "dense"                                      # the dense path from now on
    assert layer._run is None
    layer(xs[0])
    assert layer.path_info["kernel"] == "dense" and layer._run is None
    nobias = BalancedSparseLinear.from_linear(nn.Linear(256, 96, bias=False), 0.875, 64, dispatch="sparse")
    for _ in range(2):
        torch.testing.assert_close(nobias(xs[0]).double(), ref(xs[0], nobias), rtol=1e-5, atol=1e-4)
    assert nobias._run is not None and nobias._run.calls == 1
    assert cpp.call_status()["call"] == "cpp"


def test_without_the_call_binding_matmul_takes_the_python_path(monkeypatch, tmp_path):
    """A binding that does not build is recorded, and the products are the same kernels' through Python."""
    from workbench.sparse.kernels import cpp
    _need_cpp_kernels()
    bad = tmp_path / "balanced_call.cpp"
    bad.write_text("this is not C++ either\n")
    monkeypatch.setattr(cpp, "CALL_SOURCE", bad)
    monkeypatch.setattr(cpp, "_CALL", {"mod": None, "tried": False, "status": None})
    monkeypatch.setenv("WORKBENCH_KERNEL_CACHE", str(tmp_path / "cache"))
    assert cpp.call_binding() is None
    st = cpp.call_status()
    assert st["call"] == "python" and st["reason"].startswith("call binding build failed")
    g = torch.Generator().manual_seed(22)
    bm = BalancedMatrix.from_dense(torch.randn(40, 128, generator=g), 0.75, 32)
    for x in (torch.randn(128, generator=g), torch.randn(128, 3, generator=g)):
        for _ in range(2):
            torch.testing.assert_close(bm.matmul(x).double(), bm.to_dense().double() @ x.double(), rtol=1e-5,
                                       atol=1e-5)
    assert "cpu_call" not in bm._cache and bm._cache["cpu_fast"][4] is not None


def test_a_used_matrix_pickles_and_deep_copies_without_its_kernel_handles():
    """After products, ``_cache`` holds compiled-kernel handles (ctypes, the C++ Runner) that cannot be pickled: a
    copy (``copy.deepcopy``, ``torch.save`` of a model holding the matrix) leaves them out and rebuilds its own."""
    g = torch.Generator().manual_seed(23)
    bm = BalancedMatrix.from_dense(torch.randn(48, 128, generator=g), 0.75, 32)
    x = torch.randn(128, generator=g)
    y = bm.matmul(x)
    bm.matmul(x)
    twin = copy.deepcopy(bm)
    assert twin._cache == {} and twin.values.data_ptr() != bm.values.data_ptr()
    assert torch.equal(twin.matmul(x), y)
    buf = io.BytesIO()
    torch.save(bm, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=False)
    assert back._cache == {} and torch.equal(back.matmul(x), y)


def test_a_reload_finds_its_build_again():
    """torch's ``cpp_extension.load`` appends its libraries to the flag list it is given; the flags our build key
    hashes must not change with it, or every reload (``cpp.reset()``) rebuilds the library in a new folder."""
    from workbench.sparse.kernels import cpp
    _need_cpp_kernels()
    cpp.call_binding()
    before = (cpp.build_dir(), cpp.call_build_dir(), tuple(cpp.CFLAGS), tuple(cpp.LDFLAGS))
    cpp.reset()
    try:
        assert cpp.library() is not None
        st = cpp.status()
        assert st["cached"] and st["build_dir"] == str(before[0])
        assert (cpp.build_dir(), cpp.call_build_dir(), tuple(cpp.CFLAGS), tuple(cpp.LDFLAGS)) == before
    finally:
        cpp.reset()


def test_a_lock_left_by_a_killed_build_is_cleared_and_a_live_one_kept(tmp_path):
    from workbench.sparse.kernels import cpp
    lock = tmp_path / "lock"
    lock.touch()
    assert not cpp.clear_stale_lock(tmp_path) and lock.exists()        # a build in progress keeps its lock
    old = time.time() - 2 * cpp.STALE_LOCK_S
    os.utime(lock, (old, old))
    assert cpp.clear_stale_lock(tmp_path) and not lock.exists()       # a killed build's lock goes
    assert not cpp.clear_stale_lock(tmp_path)                          # nothing to clear


def test_numba_fallback_when_backend_forced(monkeypatch):
    from workbench.sparse.kernels import cpp, cpu
    monkeypatch.setenv("WORKBENCH_SPARSE_BACKEND", "numba")
    cpp.reset()
    try:
        st = cpu.backend()
        assert st["backend"] == "numba" and "WORKBENCH_SPARSE_BACKEND" in st["reason"]
        assert cpu.kernel_for(1, torch.float32, 64) == "numba"
        bm = BalancedMatrix.from_dense(torch.randn(9, 64), 0.75, 16)
        x = torch.randn(64, 3)
        torch.testing.assert_close(bm.matmul(x).double(), bm.to_dense().double() @ x.double(), rtol=1e-5, atol=1e-5)
    finally:
        monkeypatch.delenv("WORKBENCH_SPARSE_BACKEND")
        cpp.reset()


def test_failed_cpp_build_falls_back_with_a_recorded_reason(monkeypatch, tmp_path):
    from workbench.sparse.kernels import cpp, cpu
    bad = tmp_path / "balanced_cpu.cpp"
    bad.write_text("this is not C++\n")
    monkeypatch.setattr(cpp, "SOURCE", bad)
    monkeypatch.setenv("WORKBENCH_KERNEL_CACHE", str(tmp_path / "cache"))
    cpp.reset()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the fallback is silent
            st = cpu.backend()
        assert st["backend"] == "numba" and st["reason"].startswith("C++ build failed")
        bm = BalancedMatrix.from_dense(torch.randn(5, 32), 0.5, 16)
        x = torch.randn(32)
        torch.testing.assert_close(bm.matmul(x).double(), bm.to_dense().double() @ x.double(), rtol=1e-5, atol=1e-5)
        monkeypatch.setattr(cpp, "_compiler", lambda: None)
        cpp.reset()
        assert cpu.backend()["reason"] == "no C++ compiler (c++/g++) on PATH"
    finally:
        monkeypatch.undo()
        cpp.reset()


# ---------------------------------------------------------------------------------------------- dispatcher
def _table(speedup_of):
    sizes, batches, spars = [256, 1024, 4096], [1, 16, 256], [0.5, 0.75, 0.9]
    sp = [[[speedup_of(s, b, p) for p in spars] for b in batches] for s in sizes]
    return {"sizes": sizes, "batches": batches, "sparsities": spars, "speedup": sp, "backend": "cpp",
            "bank_size": 64, "source": "/x/table.json"}


def test_predict_interpolates_log_speedup_and_clamps():
    from workbench.sparse import dispatch
    t = _table(lambda s, b, p: (s / 256) * (1 - 0.5) / (1 - p) / b ** 0.5)  # log-linear in log2 size, linear in p
    for s in t["sizes"]:
        for b in t["batches"]:
            for p in t["sparsities"]:
                assert dispatch.predict(t, s, s, p, b) == pytest.approx(t["speedup"][t["sizes"].index(s)]
                                                                         [t["batches"].index(b)][t["sparsities"].index(p)])
    # geometric mean between grid points in log2(size) and log2(batch)
    assert dispatch.predict(t, 512, 512, 0.5, 1) == pytest.approx(np.sqrt(1 * 4))
    assert dispatch.predict(t, 256, 256, 0.5, 4) == pytest.approx(np.sqrt(1 * 0.25))
    # non-square: size = sqrt(rows * cols)
    assert dispatch.predict(t, 256, 4096, 0.5, 1) == dispatch.predict(t, 1024, 1024, 0.5, 1)
    # beyond the grid: clamped
    assert dispatch.predict(t, 16384, 16384, 0.5, 1024) == pytest.approx(t["speedup"][-1][-1][0])


def test_decide_picks_dense_where_sparse_loses(monkeypatch):
    from workbench.sparse import dispatch
    t = _table(lambda s, b, p: 3.0 if b < 256 else 0.8)
    monkeypatch.setattr(dispatch, "load_table", lambda device="cpu", refresh=False: t)
    d = dispatch.decide(1024, 1024, 0.9, 1, backend="cpp")
    assert d.path == "sparse" and d.predicted_speedup == pytest.approx(3.0) and "3.00x" in d.reason
    d = dispatch.decide(1024, 1024, 0.9, 256, backend="cpp")
    assert d.path == "dense" and "0.80x" in d.reason
    assert dispatch.decide(128, 128, 0.9, 1, backend="cpp").path == "dense"       # below the measured sizes
    assert dispatch.decide(1024, 1024, 0.25, 1, backend="cpp").path == "dense"   # below the measured sparsities
    d = dispatch.decide(1024, 1024, 0.9, 1, backend="numba")                     # table from another backend
    assert d.path == "sparse" and "margin 2.0x" in d.reason
    monkeypatch.setattr(dispatch, "load_table", lambda device="cpu", refresh=False: _table(lambda s, b, p: 1.5))
    assert dispatch.decide(1024, 1024, 0.9, 1, backend="numba").path == "dense"
    monkeypatch.setattr(dispatch, "load_table", lambda device="cpu", refresh=False: None)
    d = dispatch.decide(4096, 4096, 0.9, 1, device="cuda")
    assert d.path == "dense" and "no CUDA crossover table" in d.reason


def test_a_gpu_table_from_another_gpu_gets_the_wider_margin(monkeypatch):
    """The packaged CUDA table names the GPU it was measured on: there a 1.5x prediction picks the sparse path, on
    any other GPU (or none) it needs BACKEND_MARGIN."""
    from workbench.sparse import dispatch
    t = dict(_table(lambda s, b, p: 1.5), device="cuda", gpu="NVIDIA H200")
    monkeypatch.setattr(dispatch, "load_table", lambda device="cpu", refresh=False: t)
    monkeypatch.setattr(dispatch, "_gpu_name", lambda: "NVIDIA H200")
    assert dispatch.decide(1024, 1024, 0.9, 1, device="cuda").path == "sparse"
    monkeypatch.setattr(dispatch, "_gpu_name", lambda: "Tesla T4")
    d = dispatch.decide(1024, 1024, 0.9, 1, device="cuda")
    assert d.path == "dense" and "measured on NVIDIA H200: margin 2.0x" in d.reason


def test_the_packaged_gpu_table_is_valid_and_names_its_gpu():
    from workbench.sparse import dispatch
    if not dispatch.PACKAGED_CUDA.exists():
        pytest.fail("workbench/sparse/crossover_cuda.json is missing")
    t = dispatch._validate_table(json.loads(dispatch.PACKAGED_CUDA.read_text()))
    assert t["device"] == "cuda" and t["gpu"]
    for i in range(len(t["sizes"])):
        for j in range(len(t["batches"])):
            for q in range(len(t["sparsities"])):
                assert t["speedup"][i][j][q] == pytest.approx(t["dense_ms"][i][j] / t["sparse_ms"][i][j][q])


def test_a_table_timed_with_other_kernels_gets_the_wider_margin(monkeypatch):
    """The packaged table records which kernel it timed at each batch; on a CPU that runs another kernel there (an
    AVX2-only machine: gather / spmm instead of the AVX-512 tiles / bspmm) a 1.5x prediction must not be enough."""
    from workbench.sparse import dispatch
    from workbench.sparse.kernels import cpu
    t = _table(lambda s, b, p: 1.5)
    t["kernels"] = {f"{s}x{b}": ("tiles" if b == 1 else "bspmm" if b >= 64 else "spmm")
                    for s in t["sizes"] for b in t["batches"]}
    monkeypatch.setattr(dispatch, "load_table", lambda device="cpu", refresh=False: t)
    monkeypatch.setattr(cpu, "kernel_for", lambda n, dtype, bank, lib=None:
                        "tiles" if n == 1 else "bspmm" if n >= 64 else "spmm")    # the table's own machine
    assert dispatch.decide(1024, 1024, 0.9, 1, backend="cpp").path == "sparse"
    assert dispatch.decide(1024, 1024, 0.9, 100, backend="cpp").path == "sparse"
    monkeypatch.setattr(cpu, "kernel_for", lambda n, dtype, bank, lib=None: "gather" if n == 1 else "spmm")  # AVX2
    d = dispatch.decide(1024, 1024, 0.9, 1, backend="cpp")
    assert d.path == "dense" and "runs the gather kernel here, the table timed tiles" in d.reason
    assert dispatch.decide(1024, 1024, 0.9, 16, backend="cpp").path == "sparse"   # spmm both here and there
    d = dispatch.decide(1024, 1024, 0.9, 100, backend="cpp")                      # brackets 16 (spmm) and 256 (bspmm)
    assert d.path == "dense" and "batch 256 runs the spmm kernel here" in d.reason


def test_module_dispatch_follows_the_table(monkeypatch):
    from workbench.sparse import dispatch
    t = _table(lambda s, b, p: 4.0 if b == 1 else 0.5)
    monkeypatch.setattr(dispatch, "load_table", lambda device="cpu", refresh=False: t)
    lin = nn.Linear(512, 512)
    sp = BalancedSparseLinear.from_linear(lin, 0.9, 64)
    W = (lin.weight * prune.balanced_mask(lin.weight, 0.9, 64)).double()
    for n, path in ((1, "sparse"), (256, "dense")):
        x = torch.randn(n, 512)
        with torch.no_grad():
            torch.testing.assert_close(sp(x).double(), x.double() @ W.t() + lin.bias.double(), rtol=1e-5, atol=1e-5)
        assert sp.path_info["path"] == path


def test_packaged_crossover_table_is_valid():
    from workbench.sparse import dispatch
    t = json.loads(dispatch.PACKAGED.read_text())
    dispatch._validate_table(t)
    assert t["device"] == "cpu" and t["bank_size"] == 64 and t["backend"] in ("cpp", "numba")
    assert all(v > 0 for a in t["speedup"] for b in a for v in b)
    # its own dense / sparse medians give its speedups
    for i in range(len(t["sizes"])):
        for j in range(len(t["batches"])):
            for k in range(len(t["sparsities"])):
                assert t["speedup"][i][j][k] == pytest.approx(t["dense_ms"][i][j] / t["sparse_ms"][i][j][k])


def test_measure_table_records_consistent_speedups():
    from workbench.sparse import dispatch
    # batches 1, 3, 16, 70 run every CPU kernel family with its own weight layout (tiles, groups, bspmm's tiles)
    t = dispatch.measure_table(sizes=(128,), batches=(1, 3, 16, 70), sparsities=(0.5, 0.75), bank_size=32, rounds=1,
                               block=1, settle=0.0, threads=1)
    dispatch._validate_table(t)
    assert t["sparsities"] == [0.5, 0.75]
    for j in range(4):
        for k in range(2):
            assert t["speedup"][0][j][k] == pytest.approx(t["dense_ms"][0][j] / t["sparse_ms"][0][j][k])
    recs = dispatch.crossover_records(t)
    assert len(recs) == 8 and {r["path"] for r in recs} <= {"sparse", "dense"}
    assert all((r["path"] == "sparse") == (r["speedup"] >= dispatch.MARGIN) for r in recs)


def test_cpu_crossover_on_layers_times_the_layers_a_model_runs(monkeypatch):
    """``measure.crossover_table_cpu`` times ``nn.Linear`` against ``BalancedSparseLinear`` forced sparse (made
    before the timing, so each sparse layer holds its plan), and its table is as consistent as the functional one."""
    from workbench.sparse import dispatch, measure
    from workbench.sparse import nn as snn
    made = []
    real = snn.BalancedSparseLinear.__init__

    def spy(self, *a, **k):
        real(self, *a, **k)
        made.append(self)
    monkeypatch.setattr(snn.BalancedSparseLinear, "__init__", spy)
    t = measure.crossover_table_cpu(sizes=(128,), batches=(1, 3), sparsities=(0.5, 0.75), bank_size=32, rounds=1,
                                    block=1, settle=0.0, threads=1)
    dispatch._validate_table(t)
    assert t["timed"] == "layers" and len(made) == 2
    assert all(m.dispatch == "sparse" and {k[1] for k in m._decisions} == {1, 3} for m in made)
    for j in range(2):
        for k in range(2):
            assert t["speedup"][0][j][k] == pytest.approx(t["dense_ms"][0][j] / t["sparse_ms"][0][j][k])


# ---------------------------------------------------------------------------------------------- measurements
def test_measure_records_are_consistent():
    from workbench.sparse import measure
    m = measure.micro_speedup(256, 0.9, 1, threads=1, rounds=1, block=1, settle=0.0, flush_mb=0,
                              bandwidth_gbps=10.0)
    t = m["times_ms"]
    assert set(t) == {"dense_torch", "dense_numpy", "csr_scipy", "csr_torch", "balanced"}
    best = min(t["dense_torch"], t["dense_numpy"])
    assert m["speedup_vs_dense"] == pytest.approx(best / t["balanced"])
    assert m["speedup_vs_csr_scipy"] == pytest.approx(t["csr_scipy"] / t["balanced"])
    assert m["pct_bw"] == pytest.approx(100 * m["bytes"] / (t["balanced"] / 1e3) / 1e9 / 10.0)
    assert m["bytes"] == 256 * 24 * 5 + 2 * 256 * 4  # k=6 of 64 per bank, 4 banks, fp32 + uint8; x and y
    r = measure.model_speedup("mlp", 0.9, 64, size=256, layers=2, threads=1, rounds=1, block=1, settle=0.0,
                              flush_mb=0, dispatch="sparse")
    assert r["max_abs_err"] < 1e-4 and r["speedup"] == pytest.approx(r["dense_ms"] / r["sparse_ms"])
    assert [p["layer"] for p in r["paths"]] == ["net.0", "net.2"] and all(p["path"] == "sparse" for p in r["paths"])
    d = measure.decision(4096, 4096, 0.906, 1)
    assert d["path"] in ("sparse", "dense") and d["reason"].startswith(d["path"])
    cm = measure.crossover_map()
    assert cm["records"] and {"size", "batch", "sparsity", "speedup", "path"} <= set(cm["records"][0])


# ---------------------------------------------------------------------------------------------- bad input
def test_conv_weights_validated_like_matrices():
    w = torch.randn(4, 3, 3, 3)
    w[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        prune.balanced_mask(w, 0.5, 9)
    with pytest.raises(ValueError, match="floating-point"):
        prune.balanced_mask(torch.ones(4, 3, 3, 3, dtype=torch.int64), 0.5, 9)
    with pytest.raises(ValueError, match="empty"):
        prune.balanced_mask(torch.randn(0, 3, 3, 3), 0.5, 9)


def test_realized_sparsity_far_from_request_warns():
    with pytest.warns(UserWarning, match="realizes 0.9844"):
        prune.balanced_mask(torch.randn(4, 64), 0.999, 64)     # k = 1 of 64
    with pytest.warns(UserWarning, match="realizes 0.4"):
        prune.balanced_mask(torch.randn(4, 10), 0.9, 64, pad=True)  # bank larger than the row: 6 of 10 kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prune.balanced_mask(torch.randn(4, 64), 0.90625, 64)   # exact: no warning
        p = prune.Pruner(nn.Sequential(nn.Linear(64, 8)), prune.PruneConfig("balanced", 0.75, bank_size=16))
        p.update(0.3)  # an intermediate step of a gradual schedule: rounding is expected, no warning


def test_balanced_matrix_from_parts_validates_offsets():
    bm = BalancedMatrix.from_dense(torch.randn(4, 32), 0.5, 16)
    bad = bm.offsets.clone()
    bad[1, 0, 2] = 200
    with pytest.raises(ValueError, match=r"offsets must lie in \[0, 16\)"):
        BalancedMatrix(bm.values, bad, bm.shape, 16)
    neg = bm.offsets.to(torch.int16)
    neg[0, 1, 0] = -1
    with pytest.raises(ValueError, match="offsets must lie"):
        BalancedMatrix(bm.values, neg, bm.shape, 16)
    # padded last bank: 20 columns = banks of 16 + 4; an offset >= 4 in the last bank points past the row
    bp = BalancedMatrix.from_dense(torch.randn(3, 20), 0.5, 16, pad=True)
    last = bp.offsets.clone()
    last[0, 1, 0] = 7
    with pytest.raises(ValueError, match="past column 19"):
        BalancedMatrix(bp.values, last, bp.shape, 16)
    with pytest.raises(ValueError, match="banks of 16 do not cover"):
        BalancedMatrix(bm.values, bm.offsets, (4, 64), 16)
    with pytest.raises(ValueError, match="rows"):
        BalancedMatrix(bm.values, bm.offsets, (5, 32), 16)
    with pytest.raises(ValueError, match=r"\(rows, banks, k\)"):
        BalancedMatrix(bm.values, bm.offsets[..., :3], bm.shape, 16)
    with pytest.raises(ValueError, match="require grad"):
        BalancedMatrix(bm.values.clone().requires_grad_(), bm.offsets, bm.shape, 16)
    with pytest.raises(ValueError, match="empty"):
        BalancedMatrix(bm.values[:0], bm.offsets[:0], (0, 32), 16)


def test_empty_weights_rejected():
    with pytest.raises(ValueError, match="empty"):
        BalancedMatrix.from_dense(torch.randn(0, 64), 0.5, 16)
    with pytest.raises(ValueError, match="empty"):
        BalancedSparseLinear.from_linear(nn.Linear(0, 8), 0.5, 16)


def test_loading_corrupt_offsets_is_refused():
    sp = BalancedSparseLinear.from_linear(nn.Linear(32, 8), 0.5, 16)
    sd = sp.state_dict()
    sd["offsets"] = sd["offsets"].clone()
    sd["offsets"][0, 0, 0] = 99
    with pytest.raises(ValueError, match="offsets must lie"):
        sp.load_state_dict(sd)


def test_bad_dispatch_mode_rejected():
    with pytest.raises(ValueError, match="dispatch"):
        sparsify_(nn.Sequential(nn.Linear(64, 64)), SparsifyConfig(dispatch="fast"))
    bm = BalancedMatrix.from_dense(torch.randn(4, 32), 0.5, 16)
    with pytest.raises(ValueError, match="unknown CPU kernel"):
        bm.matmul(torch.randn(32), kernel="magic")


# ---------------------------------------------------------------------------------------------- CUDA plans
def test_spmm_tile_width_follows_the_batch():
    from workbench.sparse.kernels import gpu
    for n, tn in ((2, 8), (3, 8), (8, 8), (9, 16), (20, 32), (33, 64), (500, 64)):
        p = gpu.plan_spmm(4096, 4096, 64, 6, 64, n, torch.float32, torch.uint8, smem_limit=227 * 1024)
        assert p.kind == "tile" and p.tn == tn and p.grid[0] == -(-n // tn)


def test_spmm_shared_memory_plan_and_opt_in():
    from workbench.sparse.kernels import gpu
    for lim in (48 * 1024, 99 * 1024, 227 * 1024):
        for dt in (torch.float32, torch.float16, torch.bfloat16):
            for B, k in ((16, 4), (64, 6), (256, 26), (1024, 16)):
                p = gpu.plan_spmm(1000, 4 * B, 4, k, B, 128, dt, torch.int16, smem_limit=lim)
                if p.kind == "tile":
                    assert p.smem == gpu.spmm_smem_bytes(p.tn, p.G, B, k, dt, torch.int16) <= lim
                    assert 1 <= p.G <= 4
    # above 48 KB only with the opt-in: 64-column fp32 tiles of bank 64 stage more banks when allowed
    small = gpu.plan_spmm(4096, 4096, 64, 6, 64, 128, torch.float32, torch.uint8, smem_limit=48 * 1024)
    big = gpu.plan_spmm(4096, 4096, 64, 6, 64, 128, torch.float32, torch.uint8, smem_limit=227 * 1024)
    assert small.smem <= 48 * 1024 < big.smem and big.G > small.G
    # a bank too large for even one stage of an 8-column tile: the fallback
    assert gpu.plan_spmm(10, 32768, 1, 16, 32768, 4, torch.float32, torch.int16).kind == "fallback"
    with pytest.raises(ValueError, match="fallback"):
        gpu.plan_spmm(10, 32768, 1, 16, 32768, 4, torch.float32, torch.int16, kernel="spmm")


def test_launch_grids_cover_any_number_of_rows():
    from workbench.sparse.kernels import gpu
    for rows in (1, 65535, 65536, 70000, 5_000_000):
        p = gpu.plan_spmm(rows, 4096, 64, 6, 64, 32, torch.float16, torch.uint8, smem_limit=227 * 1024)
        gx, gy, gz = p.grid
        assert gy <= 65535 and gz <= 65535 and gy * gz * gpu.TILE_ROWS >= rows
        f = gpu.plan_spmm(rows, 4096, 64, 6, 64, 32, torch.float16, torch.uint8, kernel="fallback")
        assert f.grid[0] <= 2 ** 31 - 1
        s = gpu.plan_spmv(rows, 64, 6, torch.float32)
        assert s.blocks <= 2 ** 31 - 1 and s.lanes in (1, 2, 4, 8, 16, 32)


def test_spmv_plan_vectorises_only_aligned_rows():
    from workbench.sparse.kernels import gpu
    assert gpu.plan_spmv(10, 64, 6, torch.float32).vec == 4          # 384 entries: 16-byte rows
    assert gpu.plan_spmv(10, 64, 6, torch.float16).vec == 8
    assert gpu.plan_spmv(10, 5, 3, torch.float32).vec == 1           # 15 entries per row
    assert gpu.plan_spmv(10, 64, 6, torch.float32, aligned=False).vec == 1
    assert gpu.plan_spmv(10, 64, 6, torch.float32).lanes == 32       # 96 vector loads: ~3 per lane
    assert gpu.plan_spmv(10, 24, 6, torch.float32).lanes == 16       # the LSTM's 1500-wide rows: 36 loads


# ---------------------------------------------------------------------------------------------- CUDA emulation
@pytest.mark.parametrize("dt", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("idt", [torch.uint8, torch.int16, torch.int32])
def test_emulated_spmv_matches_float64(dt, idt):
    from workbench.sparse.kernels import gpu, gpu_emulate
    g = torch.Generator().manual_seed(20)
    for rows, cols, B, s in ((131, 3 * 64 + 20, 64, 0.9), (40, 1500, 64, 0.9), (9, 40, 8, 0.5)):
        bm = BalancedMatrix.from_dense(torch.randn(rows, cols, generator=g), s, B, pad=True, index_dtype=idt)
        v = bm.values.to(dt)
        x = torch.randn(cols, generator=g).to(dt)
        ref = BalancedMatrix(v, bm.offsets, bm.shape, B).to_dense().double() @ x.double()
        plans = [gpu.plan_spmv(rows, bm.banks, bm.k, dt, aligned=al) for al in (True, False)]
        # x in shared memory, the grid capped below the rows' blocks (each block walks several rows)
        plans.append(gpu.plan_spmv(rows, bm.banks, bm.k, dt, cols=cols, smem_limit=48 * 1024, resident=2))
        for p in plans:
            torch.testing.assert_close(gpu_emulate.emulate_spmv(v, bm.offsets, x, B, cols, p), ref,
                                       rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dt,idt", [(torch.float32, torch.uint8), (torch.float16, torch.int16),
                                    (torch.bfloat16, torch.int32)])
def test_emulated_spmvn_matches_float64(dt, idt):
    """spmvn (batches 2..32, the spmv scheme with n accumulators per lane), x in global or shared memory, 16-byte
    or scalar x loads."""
    from workbench.sparse.kernels import gpu, gpu_emulate
    g = torch.Generator().manual_seed(24)
    rows, cols, B = 70, 3 * 64 + 20, 64
    bm = BalancedMatrix.from_dense(torch.randn(rows, cols, generator=g), 0.875, B, pad=True, index_dtype=idt)
    v = bm.values.to(dt)
    for n in (2, 3, 8, 9, 16, 32):
        x = torch.randn(cols, n, generator=g).to(dt)
        ref = BalancedMatrix(v, bm.offsets, bm.shape, B).to_dense().double() @ x.double()
        for limit in (0, 227 * 1024):
            p = gpu.plan_spmv(rows, bm.banks, bm.k, dt, cols=cols, smem_limit=limit, resident=3, n=n)
            assert p.nc == (8 if n <= 8 else 32) and bool(p.smem) == bool(limit)
            assert p.xvec == ((n * dt.itemsize) % 16 == 0)
            torch.testing.assert_close(gpu_emulate.emulate_spmv(v, bm.offsets, x, B, cols, p), ref,
                                       rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="no spmv entry point"):
        gpu.plan_spmv(rows, bm.banks, bm.k, dt, n=33)
    with pytest.raises(ValueError, match="no spmv entry point"):
        gpu.plan_spmv(rows, bm.banks, bm.k, dt, n=4, aligned=False)


def test_spmv_plan_stages_x_in_shared_memory_when_it_fits():
    from workbench.sparse.kernels import gpu
    opt_in = 227 * 1024
    p = gpu.plan_spmv(16384, 256, 6, torch.float32, cols=16384, smem_limit=opt_in, resident=396)
    assert (p.name, p.smem, p.blocks) == ("bs_spmv_k_sx", 16384 * 4, 396)   # 64 KB of x; one wave of blocks
    assert gpu.plan_spmv(16384, 256, 6, torch.float32, cols=16384, smem_limit=48 * 1024).smem == 0  # no opt-in
    assert gpu.plan_spmv(100, 1000, 6, torch.float32, cols=64000, smem_limit=opt_in).smem == 0       # 250 KB
    assert gpu.plan_spmv(100, 10, 5, torch.float32, cols=640, smem_limit=opt_in).smem == 0   # scalar loads
    p = gpu.plan_spmv(4096, 64, 6, torch.bfloat16, cols=4095, smem_limit=opt_in, resident=1056)
    assert (p.smem, p.blocks) == (4096 * 2, 256)    # padded to 16 bytes; 16 rows a block (16 lanes each) < resident


@pytest.mark.parametrize("dt,idt", [(torch.float32, torch.uint8), (torch.float16, torch.int16),
                                    (torch.bfloat16, torch.int32)])
@pytest.mark.parametrize("n", [2, 3, 17, 70])
def test_emulated_spmm_tiles_and_fallback_match_float64(dt, idt, n):
    from workbench.sparse.kernels import gpu, gpu_emulate
    g = torch.Generator().manual_seed(21)
    rows, cols, B = 131, 3 * 64 + 20, 64
    bm = BalancedMatrix.from_dense(torch.randn(rows, cols, generator=g), 0.9, B, pad=True, index_dtype=idt)
    v = bm.values.to(dt)
    x = torch.randn(cols, n, generator=g).to(dt)
    ref = BalancedMatrix(v, bm.offsets, bm.shape, B).to_dense().double() @ x.double()
    plans = [gpu.plan_spmm(rows, cols, bm.banks, bm.k, B, n, dt, idt, smem_limit=lim, aligned=al)
             for lim in (48 * 1024, 227 * 1024) for al in (True, False)]
    plans.append(gpu.plan_spmm(rows, cols, bm.banks, bm.k, B, n, dt, idt, kernel="fallback"))
    assert {p.kind for p in plans} == {"tile", "fallback"}
    for p in plans:
        torch.testing.assert_close(gpu_emulate.emulate_spmm(v, bm.offsets, x, B, cols, p), ref, rtol=1e-12,
                                   atol=1e-12)


def test_emulated_kernels_skip_out_of_range_offsets():
    """The kernels' bounds check: an entry whose offset is not below the bank size or whose column is not below
    cols (a corrupt offset) contributes nothing."""
    from workbench.sparse.kernels import gpu, gpu_emulate
    g = torch.Generator().manual_seed(22)
    bm = BalancedMatrix.from_dense(torch.randn(70, 100, generator=g), 0.75, 32, pad=True, index_dtype=torch.int16)
    offs = bm.offsets.clone()
    offs[3, 1, 0] = 40      # beyond its bank of 32
    offs[5, 3, 1] = 10      # last bank holds columns 96..99: column 106 is past the row
    offs[7, 0, 2] = -3      # negative (int16): read as unsigned, out of range
    keep = torch.ones_like(bm.values, dtype=torch.bool)
    keep[3, 1, 0] = keep[5, 3, 1] = keep[7, 0, 2] = False
    ref_bm = BalancedMatrix(bm.values * keep, bm.offsets, bm.shape, 32)
    x1 = torch.randn(100, generator=g)
    xn = torch.randn(100, 9, generator=g)
    y1 = gpu_emulate.emulate_spmv(bm.values, offs, x1, 32, 100, gpu.plan_spmv(70, bm.banks, bm.k, torch.float32))
    torch.testing.assert_close(y1, ref_bm.to_dense().double() @ x1.double(), rtol=1e-12, atol=1e-12)
    for kernel in ("spmm", "fallback"):
        p = gpu.plan_spmm(70, 100, bm.banks, bm.k, 32, 9, torch.float32, torch.int16, kernel=kernel)
        yn = gpu_emulate.emulate_spmm(bm.values, offs, xn, 32, 100, p)
        torch.testing.assert_close(yn, ref_bm.to_dense().double() @ xn.double(), rtol=1e-12, atol=1e-12)


def test_emulated_spmv_over_65535_rows():
    from workbench.sparse.kernels import gpu, gpu_emulate
    g = torch.Generator().manual_seed(23)
    bm = BalancedMatrix.from_dense(torch.randn(70000, 64, generator=g), 0.75, 32)
    x = torch.randn(64, generator=g)
    y = gpu_emulate.emulate_spmv(bm.values, bm.offsets, x, 32, 64, gpu.plan_spmv(70000, bm.banks, bm.k, torch.float32))
    torch.testing.assert_close(y, bm.to_dense().double() @ x.double(), rtol=1e-12, atol=1e-12)


def test_spmv_variants_match_float64_in_emulation():
    """Every launch the GPU A/B times (bench sparse --variants) computes W x: emulated from its plan, compared with
    float64, for both value widths it can meet; and every entry point it names exists in balanced.cu."""
    import re

    from workbench.sparse.kernels import gpu, gpu_emulate
    g = torch.Generator().manual_seed(31)
    entries = set(re.findall(r"BS_SPMV\((\w+)_##SUF", gpu.SOURCE.read_text()))
    for dt in (torch.float32, torch.float16):
        rows, cols, B = 70, 8 * 64, 64
        bm = BalancedMatrix.from_dense(torch.randn(rows, cols, generator=g), 0.9, B)
        v, x = bm.values.to(dt), torch.randn(cols, generator=g).to(dt)
        ref = BalancedMatrix(v, bm.offsets, bm.shape, B).to_dense().double() @ x.double()
        plans = gpu.spmv_variants(rows, bm.banks, bm.k, dt, cols, smem_limit=48 * 1024,
                                  resident=lambda name, smem: 2)
        assert list(plans) == list(gpu.SPMV_VARIANTS)
        assert [p.vec for p in plans.values()] == [16 // dt.itemsize] * 2 + [1, 1]
        assert [bool(p.smem) for p in plans.values()] == [True, False, False, True]
        for sx, glob in (("vec_sx", "vec_global"), ("v1_sx", "v1_global")):  # capped to the resident blocks
            assert plans[sx].blocks == min(2, plans[glob].blocks) and plans[sx].lanes == plans[glob].lanes
        assert plans["v1_global"].blocks > 2
        for name, p in plans.items():
            assert p.name in entries, name
            torch.testing.assert_close(gpu_emulate.emulate_spmv(v, bm.offsets, x, B, cols, p), ref,
                                       rtol=1e-12, atol=1e-12)
        # x too large for shared memory: only the global-memory variants
        assert list(gpu.spmv_variants(rows, bm.banks, bm.k, dt, cols, smem_limit=256)) == ["vec_global",
                                                                                           "v1_global"]
    with pytest.raises(ValueError, match="vector loads"):
        gpu.spmv_variants(10, 5, 3, torch.float32, 5 * 8, smem_limit=0)   # 15 entries per row


def test_gather_lines_counts_distinct_lines_per_warp_gather():
    """The A/B's model of the gathers' L1 cost, against a plain loop over the kernel's lane -> entry mapping; and
    the claim it is printed for: on the benchmark's 90.6% matrix, scalar loads touch under half the lines."""
    from workbench.benchmarks.sparse import gather_lines
    g = torch.Generator().manual_seed(32)
    B, banks, k = 64, 20, 6
    offs = torch.stack([torch.sort(torch.randperm(B, generator=g)[:k]).values for _ in range(3 * banks)])
    offs = offs.reshape(3, banks, k).to(torch.uint8)
    for vec in (1, 4):
        counts = []
        for r in range(3):
            chunks = banks * k // vec
            for c0 in range(0, chunks, 32):
                for i in range(vec):
                    seen = set()
                    for c in range(c0, min(c0 + 32, chunks)):
                        e = c * vec + i
                        seen.add(((e // k) * B + int(offs[r, e // k, e % k])) * 4 // 128)
                    counts.append(len(seen))
        assert gather_lines(offs, B, vec) == pytest.approx(sum(counts) / len(counts))
    bm = BalancedMatrix.from_dense(torch.randn(8, 4096, generator=g), 0.9, 64)
    assert gather_lines(bm.offsets, 64, 1) < 0.5 * gather_lines(bm.offsets, 64, 4)


def test_variant_notes_pick_the_fastest_correct_variant():
    from workbench.benchmarks.sparse import variant_notes

    def row(method, ms, err=0.0, u=None):
        return dict(size=4096, method=method, kernel="k", u=u, queued_ms=ms, speedup_vs_dense=0.033 / ms,
                    speedup_vs_cusparse=0.019 / ms, pct_bw=10.0, max_rel_err=err)
    rows = [row("cublas_fp32", 0.033), row("cusparse_csr", 0.019), row("balanced", 0.010),
            row("vec_global_u2", 0.0100, u=2), row("v1_global_u8", 0.0066, u=8), row("v1_sx_u16", 0.005, 0.3, 16)]
    text = variant_notes(rows)
    assert "fastest variant v1_global_u8 6.6 us (1.52x the planner's), 5.00x cuBLAS, 2.88x cuSPARSE" in text
    assert "WRONG RESULTS (excluded): v1_sx_u16" in text


def test_variants_benchmark_needs_a_gpu(monkeypatch):
    from workbench.benchmarks import sparse as bench_sparse
    from workbench.sparse.kernels import gpu
    monkeypatch.setattr(gpu, "available", lambda: False)
    for device in ("cuda", "cpu"):
        with pytest.raises(SystemExit, match="needs --device cuda and a CUDA device"):
            bench_sparse.main(["--variants", "--device", device])


# ---------------------------------------------------------------------------------------------- CUDA (real GPU)
def test_gpu_pair_index_follows_the_source():
    """gpu.PAIRS[i] names the (value, offset) pair that -DBS_ONE=i keeps in balanced.cu, so one module per pair
    holds the entry points it is asked for."""
    import re

    from workbench.sparse.kernels import gpu
    found = re.findall(r"#if !defined\(BS_ONE\) \|\| BS_ONE == (\d+)\nBS_ALL\((\w+),", gpu.SOURCE.read_text())
    assert [(int(i), pair) for i, pair in found] == list(enumerate(gpu.PAIRS))
    assert len(gpu.PAIRS) == len(gpu.VALUE_SUFFIX) * len(gpu.INDEX_SUFFIX) == 9


def _cuda_ok() -> bool:
    from workbench.sparse.kernels import gpu
    return gpu.available()


needs_gpu = pytest.mark.skipif(not _cuda_ok(), reason="needs a CUDA GPU (CuPy with a visible device)")


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("idt", [torch.uint8, torch.int16, torch.int32])
@pytest.mark.parametrize("kernel,n", [("spmv", None), ("spmv_global", None), ("auto", 1), ("spmvn", 3),
                                      ("spmvn_global", 8), ("spmvn", 32), ("auto", 20), ("spmm", 3), ("spmm", 70),
                                      ("fallback", 33), ("auto", 128)])
def test_gpu_kernels_match_float64(dtype, idt, kernel, n):
    g = torch.Generator().manual_seed(9)
    rows, cols, B = 131, 3 * 64 + 20, 64
    W = torch.randn(rows, cols, generator=g)
    bm = BalancedMatrix.from_dense(W, 0.9, B, pad=True, index_dtype=idt).to("cuda", dtype)
    x = torch.randn(cols, generator=g) if n is None else torch.randn(cols, n, generator=g)
    xc = x.to("cuda", dtype)
    y = bm.matmul(xc, kernel=kernel)
    ref = bm.to_dense().double() @ xc.double()
    tol = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}[dtype]
    torch.testing.assert_close(y.double(), ref, rtol=tol, atol=tol * 10)


@needs_gpu
@pytest.mark.parametrize("u", [1, 16])
def test_gpu_spmv_variants_match_float64(u):
    """The GPU A/B's launches (every variant, the extreme loads-in-flight values) on a real GPU."""
    from workbench.sparse.kernels import gpu
    g = torch.Generator().manual_seed(33)
    for rows, cols in ((131, 8 * 64), (2000, 64 * 64)):
        bm = BalancedMatrix.from_dense(torch.randn(rows, cols, generator=g), 0.9, 64).to("cuda")
        x = torch.randn(cols, generator=g).cuda()
        ref = bm.to_dense().double() @ x.double()
        plans = gpu.spmv_variants(rows, bm.banks, bm.k, torch.float32, cols, smem_limit=gpu.smem_optin_limit(),
                                  resident=lambda name, smem: 4)
        assert len(plans) == 4
        for name, p in plans.items():
            y = gpu.run_spmv_plan(bm.values, bm.offsets, x, 64, cols, p, u=u)
            torch.testing.assert_close(y.double(), ref, rtol=1e-4, atol=1e-4, msg=name)


@needs_gpu
def test_gpu_large_tiles_use_the_opt_in_and_many_rows_work():
    from workbench.sparse.kernels import gpu
    g = torch.Generator().manual_seed(10)
    bm = BalancedMatrix.from_dense(torch.randn(70000, 256, generator=g), 0.9, 64).to("cuda")
    x = torch.randn(256, 128, generator=g).cuda()
    p = gpu.plan_spmm(70000, 256, bm.banks, bm.k, 64, 128, torch.float32, torch.uint8,
                      smem_limit=gpu.smem_optin_limit())
    if gpu.smem_optin_limit() > 48 * 1024:
        assert p.smem > 48 * 1024
    ref = bm.to_dense().double() @ x.double()
    for kernel in ("spmm", "fallback"):
        torch.testing.assert_close(bm.matmul(x, kernel=kernel).double(), ref, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(bm.matmul(x[:, 0].contiguous()).double(), ref[:, 0], rtol=1e-4, atol=1e-3)


@needs_gpu
def test_gpu_sparsify_equals_masked_dense():
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 128)).cuda().eval()
    dense = nn.Sequential(nn.Linear(128, 256), nn.GELU(), nn.Linear(256, 128)).cuda().eval()
    dense.load_state_dict(net.state_dict())
    cfg = SparsifyConfig(sparsity=0.9, bank_size=64, dispatch="sparse")
    sparsify_(net, cfg)
    masked_dense_(dense, cfg)
    for n in (1, 16):
        x = torch.randn(n, 128, device="cuda")
        with torch.no_grad():
            torch.testing.assert_close(net(x), dense(x), rtol=1e-4, atol=1e-4)
        assert net[0].path_info["kernel"] == "cuda"


@needs_gpu
def test_gpu_crossover_measurement_times_both_paths():
    from workbench.sparse import dispatch, measure
    t = measure.crossover_table_cuda(sizes=(256, 512), batches=(1, 16), sparsities=(0.5, 0.90625), rounds=1,
                                     calls=2)
    dispatch._validate_table(t)
    assert t["gpu"] == torch.cuda.get_device_name() and t["sparsities"] == [0.5, 0.90625]
    for i in range(2):
        for j in range(2):
            assert t["dense_ms"][i][j] > 0
            assert t["speedup"][i][j] == pytest.approx([t["dense_ms"][i][j] / v for v in t["sparse_ms"][i][j]])


@needs_gpu
def test_gpu_bad_input():
    bm = BalancedMatrix.from_dense(torch.randn(8, 32), 0.5, 16)
    with pytest.raises(ValueError, match="cuda|cpu"):
        bm.matmul(torch.randn(32, device="cuda"))
    bmc = bm.to("cuda")
    with pytest.raises(ValueError, match="dtype"):
        bmc.matmul(torch.randn(32, device="cuda", dtype=torch.float64))
    with pytest.raises(ValueError, match="unknown GPU kernel"):
        bmc.matmul(torch.randn(32, device="cuda"), kernel="magic")


def test_speed_summary_reads_the_ratios_off_the_records():
    from workbench.demos import sparse as demo

    def row(batch, method, ms, **kw):
        return dict(size=4096, batch=batch, target=0.9, method=method, median_ms=ms, **kw)

    rows = [row(1, "balanced", 0.5, speedup_vs_dense=4.0, pct_bw=50.0, kernel="tiles"), row(1, "csr_scipy", 1.5),
            row(1, "csr_torch", 1.0), row(1, "read_same_bytes", 0.4),
            row(128, "balanced", 5.0, speedup_vs_dense=5.0, kernel="bspmm"), row(128, "csr_torch", 17.5),
            dict(size=4096, batch=1, target=0.9, method="model_mlp_dense", median_ms=12.0),
            dict(size=4096, batch=1, target=0.9, method="model_mlp_sparse", median_ms=2.0)]
    lines = demo.speed_summary(rows).splitlines()
    assert lines[0] == ("batch 1: 0.5 ms, 4x the best dense, 3x scipy CSR, 2x torch CSR, 50% of the read bandwidth "
                        "(80% of the rate of a plain threaded read of the same bytes)")
    assert lines[1] == "batch 128 (bspmm): 5x the best dense, 3.5x torch CSR"
    assert lines[2].endswith("6x the dense model")
    rows[3] = row(1, "read_same_bytes", 0.5)  # percentages print whole (not "1e+02%")
    assert "(100% of the rate" in demo.speed_summary(rows).splitlines()[0]
    rows.append(row(1, "kernel_into_y", 0.45, pct_bw=61.4))
    assert demo.speed_summary(rows).splitlines()[0].endswith("; the kernel alone, into a preallocated y: 61%")
    assert demo.speed_summary([]).startswith("No committed CPU benchmark")


def test_timed_blocks_opens_each_block_with_untimed_calls():
    from workbench.sparse.timing import timed_blocks
    calls = {"a": 0, "b": 0}

    def make(k):
        def f():
            calls[k] += 1
        return f

    out = timed_blocks({k: make(k) for k in calls}, rounds=3, block=4, settle=0, block_warmup=2)
    assert all(len(v) == 12 for v in out.values())          # only the block's own calls are timed
    assert calls == {"a": 1 + 3 * (2 + 4), "b": 1 + 3 * (2 + 4)}   # one initial warm-up, two per block
