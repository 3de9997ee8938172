"""CPU emulation of the CUDA kernels in ``balanced.cu`` (Balanced Sparsity, Yao et al., AAAI 2019), for machines
without a GPU.

Each function follows its kernel statement by statement — the same launch plan (from ``gpu.plan_spmv`` /
``gpu.plan_spmm``), the same block / stage / thread decomposition, the same shared-memory layout (padding included;
unwritten shared memory is NaN, so a read of a slot the kernel never fills shows up in the result), the same
bounds checks on offsets and the same warp-shuffle reduction — vectorised with numpy over the threads of a block,
accumulating in float64. Tests compare the result with float64 dense products, so the index math, tiling and
alignment claims of the plans are checked even where no kernel can run. It does not model timing, memory
coalescing or fp32 rounding.
"""
from __future__ import annotations

import numpy as np
import torch

from workbench.sparse.kernels.gpu import (
    THREADS,
    TILE_ROWS,
    SpmmPlan,
    SpmvPlan,
    _esize,
    _pad16,
)

_UNSIGNED_MASK = {torch.uint8: 0xFF, torch.int16: 0xFFFF, torch.int32: 0xFFFFFFFF}


def _unsigned(offsets: torch.Tensor) -> np.ndarray:
    """bs_u<I>(): offsets read as unsigned (a negative int16/int32 becomes huge and fails the bound check)."""
    return offsets.to(torch.int64).numpy() & _UNSIGNED_MASK[offsets.dtype]


def _shfl_down_reduce(acc: np.ndarray, lanes: int) -> np.ndarray:
    """for (s = lanes/2; s > 0; s >>= 1) acc += __shfl_down_sync(mask, acc, s, lanes): a lane whose source lane + s
    falls outside the width gets its own value back (CUDA semantics). acc: (..., lanes). Returns lane 0."""
    acc = acc.copy()
    s = lanes >> 1
    idx = np.arange(lanes)
    while s > 0:
        src = np.where(idx + s < lanes, idx + s, idx)
        acc = acc + acc[..., src]
        s >>= 1
    return acc[..., 0]


def emulate_spmv(values: torch.Tensor, offsets: torch.Tensor, x: torch.Tensor, bank_size: int, cols: int,
                 plan: SpmvPlan) -> torch.Tensor:
    """bs_spmv_impl: x (cols,) -> y (rows,), or for spmvn (``plan.nc > 1``) x (cols, n) -> y (rows, n); float64."""
    rows, banks, k = values.shape
    nnz = banks * k
    vec, lanes = plan.vec, plan.lanes
    es = _esize(values.dtype)
    if nnz % vec:
        raise AssertionError("plan violates the kernel's precondition nnz % VEC == 0")
    if vec > 1 and (nnz * es) % 16:
        raise AssertionError("vector loads planned on rows that do not start on 16-byte boundaries")
    n = 1 if x.dim() == 1 else x.shape[1]
    if (plan.nc == 1) != (x.dim() == 1) or n > plan.nc:
        raise AssertionError(f"an entry point for {plan.nc} columns planned for x of shape {tuple(x.shape)}")
    if plan.xvec and (n * es) % 16:
        raise AssertionError("16-byte loads planned on x rows that are not multiples of 16 bytes")
    V = values.reshape(rows, nnz).double().numpy()
    O = _unsigned(offsets.reshape(rows, nnz))
    xv = x.double().numpy().reshape(cols, n)
    nchunks = nnz // vec
    if plan.smem and plan.smem < cols * n * es:
        raise AssertionError("x is staged in shared memory that cannot hold it")
    groups = plan.blocks * plan.threads // lanes
    # grid-stride coverage: group g handles rows g, g + groups, ...
    visited = np.zeros(rows, dtype=np.int64)
    for g in range(min(groups, rows)):
        visited[g::groups] += 1
    if not (visited == 1).all():
        raise AssertionError("the spmv grid does not visit every row exactly once")
    part = np.zeros((rows, n, lanes))
    for lane in range(lanes):
        for c in range(lane, nchunks, lanes):
            for i in range(vec):
                e = c * vec + i
                col = (e // k) * bank_size + O[:, e]
                ok = (O[:, e] < bank_size) & (col < cols)
                part[:, :, lane] += np.where(ok, V[:, e], 0.0)[:, None] * xv[np.where(ok, col, 0)]
    y = _shfl_down_reduce(part, lanes)
    return torch.from_numpy(y[:, 0] if x.dim() == 1 else y)


def emulate_spmm(values: torch.Tensor, offsets: torch.Tensor, x: torch.Tensor, bank_size: int, cols: int,
                 plan: SpmmPlan) -> torch.Tensor:
    """bs_spmm_impl (plan.kind == "tile") or bs_spmm_fallback_impl: x (cols, n) -> y (rows, n) float64."""
    if plan.kind == "fallback":
        return _emulate_fallback(values, offsets, x, bank_size, cols, plan)
    rows, banks, k = values.shape
    n = x.shape[1]
    nnz = banks * k
    es, isz = _esize(values.dtype), _esize(offsets.dtype)
    TN, CPT, G = plan.tn, plan.cpt, plan.G
    TNT = TN // CPT
    TY = THREADS // TNT
    TR = TILE_ROWS
    RPT = TR // TY
    if TNT * TY != THREADS or RPT * TY != TR:
        raise AssertionError("tile geometry does not tile the block")
    TNP = _pad16(TN, es) + 16 // es
    GK = G * k
    GKP, GKO = _pad16(GK, es), _pad16(GK, isz)
    stage_bytes = G * bank_size * TNP * es + TR * GKP * es + TR * GKO * isz
    if 2 * stage_bytes != plan.smem:
        raise AssertionError(f"planned shared memory {plan.smem} != the kernel's layout {2 * stage_bytes}")
    Vf = values.reshape(-1).double().numpy()
    Of = _unsigned(offsets.reshape(-1))
    X = x.double().numpy()
    y = np.full((rows, n), np.nan)
    written = np.zeros((rows, n), dtype=np.int64)
    gx, gy, gz = plan.grid
    nstages = -(-banks // G)
    # thread (tx, ty) owns rows ty + i*TY and columns tx*CPT + c: together every (row, column) of the tile once
    own = np.zeros((TR, TN), dtype=np.int64)
    for ty in range(TY):
        for i in range(RPT):
            own[ty + i * TY, :] += 1
    if not (own == 1).all():
        raise AssertionError("threads do not cover the tile exactly once")
    for bz in range(gz):
        for by in range(gy):
            for bx in range(gx):
                col0 = bx * TN
                row0 = (by + bz * gy) * TR
                if row0 >= rows:
                    continue
                acc = np.zeros((TR, TN))
                for s in range(nstages):
                    xs = np.full((G * bank_size, TNP), np.nan)
                    ws = np.full((TR, GKP), np.nan)
                    os_ = np.full((TR, GKO), -1, dtype=np.int64)  # never-written offsets read as huge
                    b0 = s * G
                    gb = min(G, banks - b0)
                    valid_c = max(0, min(TN, n - col0))
                    for rr in range(G * bank_size):
                        gr = b0 * bank_size + rr
                        if rr < gb * bank_size and gr < cols:
                            if plan.x_vec and valid_c == TN and ((gr * n + col0) * es % plan.x_vec
                                                                 or TN * es % plan.x_vec):
                                raise AssertionError("x copies planned on misaligned rows")
                            xs[rr, :TN] = 0.0
                            xs[rr, :valid_c] = X[gr, col0:col0 + valid_c]
                        else:
                            xs[rr, :TN] = 0.0
                    gk = gb * k
                    for rr in range(TR):
                        gr = row0 + rr
                        if gr < rows:
                            base = gr * nnz + b0 * k
                            for vb, sz, what in ((plan.v_vec, es, "values"), (plan.o_vec, isz, "offsets")):
                                if vb and gk == GK and (base * sz % vb or GK * sz % vb):
                                    raise AssertionError(f"{what} copies planned on misaligned rows")
                            ws[rr, :GK] = 0.0
                            ws[rr, :gk] = Vf[base:base + gk]
                            os_[rr, :GK] = 0
                            os_[rr, :gk] = Of[base:base + gk]
                        else:
                            ws[rr, :GK] = 0.0
                            os_[rr, :GK] = 0
                    for bl in range(gb):
                        gbase = (s * G + bl) * bank_size
                        for jj in range(k):
                            o = os_[:, bl * k + jj]                      # (TR,)
                            if (o < 0).any():
                                raise AssertionError("read of a shared-memory offset the kernel never wrote")
                            ok = (o >= 0) & (o < bank_size) & (gbase + o < cols)
                            w = ws[:, bl * k + jj]
                            xr = xs[np.where(ok, bl * bank_size + o, 0), :TN]  # (TR, TN)
                            acc += np.where(ok[:, None], w[:, None] * xr, 0.0)
                r_hi = min(rows, row0 + TR)
                c_hi = min(n, col0 + TN)
                if r_hi > row0 and c_hi > col0:
                    y[row0:r_hi, col0:c_hi] = acc[:r_hi - row0, :c_hi - col0]
                    written[row0:r_hi, col0:c_hi] += 1
    if not (written == 1).all():
        raise AssertionError("the spmm grid does not write every output exactly once")
    return torch.from_numpy(y)


def _emulate_fallback(values, offsets, x, bank_size, cols, plan: SpmmPlan) -> torch.Tensor:
    rows, banks, k = values.shape
    n = x.shape[1]
    nnz = banks * k
    V = values.reshape(rows, nnz).double().numpy()
    O = _unsigned(offsets.reshape(rows, nnz))
    X = x.double().numpy()
    chunks = -(-n // 32)
    warps = plan.grid[0] * plan.block[0] // 32
    y = np.full((rows, n), np.nan)
    written = np.zeros((rows, n), dtype=np.int64)
    for w0 in range(min(warps, rows * chunks)):
        for w in range(w0, rows * chunks, warps):
            r, ch = divmod(w, chunks)
            c = ch * 32 + np.arange(32)
            live = c < n
            col = (np.arange(nnz) // k) * bank_size + O[r]
            ok = (O[r] < bank_size) & (col < cols)
            acc = (V[r, ok][:, None] * X[col[ok]][:, np.where(live, c, 0)]).sum(0)
            y[r, c[live]] = acc[live]
            written[r, c[live]] += 1
    if not (written == 1).all():
        raise AssertionError("the fallback grid does not write every output exactly once")
    return torch.from_numpy(y)
