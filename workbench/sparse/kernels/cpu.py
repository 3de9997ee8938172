"""CPU kernels (numba, parallel over rows) for the balanced product y = W x, eq. (3) of formats.py.

Two kernels, both compiled per (k, bank_size) so the in-bank loop has a constant trip count and unrolls:

* ``spmv`` (batch 1): one output row per iteration; the k entries of a bank gather from the bank's slice
  x[b*B:(b+1)*B], which stays in L1, so the run time is the stream of values + offsets (5 bytes / nonzero).
* ``spmm`` (batch n): x is (in, n) row-major; every stored entry adds v * x[col, :] to y[r, :] — a
  contiguous, vectorised axpy over the batch, with y[r, :] kept in cache.

numba was chosen over a pure-torch gather (3–10x slower than dense, see the benchmark notes) and over
scipy's CSR (8 bytes/nonzero and load imbalance). Kernels know nothing of nn.Module or of masks.
"""
from __future__ import annotations

import functools

import numpy as np
import torch


@functools.lru_cache(maxsize=None)
def _spmv_kernel(K: int, BS: int):
    from numba import njit, prange

    @njit(parallel=True, fastmath=True, cache=False)
    def spmv(vals, offs, x, out):  # vals/offs (rows, banks*K), x (in,), out (rows,)
        rows, n = vals.shape
        nb = n // K
        for r in prange(rows):
            v = vals[r]
            o = offs[r]
            acc = v[0] * 0
            for b in range(nb):
                xb = b * BS
                e = b * K
                for j in range(K):
                    acc += v[e + j] * x[xb + o[e + j]]
            out[r] = acc

    return spmv


@functools.lru_cache(maxsize=None)
def _spmm_kernel(K: int, BS: int):
    from numba import njit, prange

    @njit(parallel=True, fastmath=True, cache=False)
    def spmm(vals, offs, x, out):  # x (in, n), out (rows, n)
        rows, nnz = vals.shape
        nb = nnz // K
        n = x.shape[1]
        for r in prange(rows):
            v = vals[r]
            o = offs[r]
            y = out[r]
            for t in range(n):
                y[t] = 0
            for b in range(nb):
                xb = b * BS
                e = b * K
                for j in range(K):
                    w = v[e + j]
                    xr = x[xb + o[e + j]]
                    for t in range(n):
                        y[t] += w * xr[t]

    return spmm


def _set_threads(threads: int | None):
    import numba
    if threads is None:
        return None
    old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    return old


def balanced_matmul(values: torch.Tensor, offsets: torch.Tensor, x: torch.Tensor, bank_size: int,
                    *, threads: int | None = None) -> torch.Tensor:
    """y = W x for CPU tensors; values/offsets (rows, banks, k), x (in,) or (in, n) contiguous, same dtype."""
    rows, banks, k = values.shape
    v = values.reshape(rows, banks * k).numpy()
    o = offsets.reshape(rows, banks * k).numpy()
    xn = x.detach().numpy()
    old = _set_threads(threads)
    try:
        if x.dim() == 1:
            out = np.empty(rows, dtype=xn.dtype)
            _spmv_kernel(k, bank_size)(v, o, xn, out)
        else:
            out = np.empty((rows, xn.shape[1]), dtype=xn.dtype)
            if xn.shape[1] == 1:
                _spmv_kernel(k, bank_size)(v, o, xn[:, 0], out[:, 0])
            else:
                _spmm_kernel(k, bank_size)(v, o, xn, out)
    finally:
        if old is not None:
            import numba
            numba.set_num_threads(old)
    return torch.from_numpy(out)
