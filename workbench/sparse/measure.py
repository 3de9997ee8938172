"""Measurements and records behind the Balanced Sparsity notebook and dashboard.

* ``live_speed``: a small, bounded CPU measurement of y = W x (dense vs CSR vs block vs balanced) over sparsity —
  the live part of the "Sparse speedup" dashboard (sizes above ``LIVE_MAX_SIZE`` are refused: the committed
  benchmark records cover them);
* ``masks_for``: every pruning pattern of one weight matrix at one sparsity, with per-bank and per-row counts
  (the load-balance picture: balanced rows all hold the same work);
* readers of the committed records: CPU/GPU benchmark rows and the accuracy study.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from workbench.sparse import prune
from workbench.sparse.formats import BalancedMatrix

LIVE_MAX_SIZE = 2048
LIVE_MAX_BATCH = 128
LIVE_METHODS = ("dense", "csr", "block", "balanced")
PATTERN_METHODS = ("unstructured", "balanced", "block", "vector", "nm")
DEMO_COMMAND = "workbench train sparse-demo"


def _check_live(size: int, batch: int, bank_size: int, sparsities) -> None:
    if not isinstance(size, (int, np.integer)) or size < bank_size:
        raise ValueError(f"matrix size must be an integer >= the bank size {bank_size}, got {size!r}")
    if size > LIVE_MAX_SIZE:
        raise ValueError(f"{size}x{size} is too large for a live measurement here (max {LIVE_MAX_SIZE}); "
                         "the committed benchmark records (workbench bench sparse) cover larger sizes")
    if size % bank_size:
        raise ValueError(f"matrix size {size} is not a multiple of the bank size {bank_size}")
    if not (1 <= batch <= LIVE_MAX_BATCH):
        raise ValueError(f"batch must be between 1 and {LIVE_MAX_BATCH}, got {batch}")
    if not sparsities:
        raise ValueError("choose at least one sparsity")
    for s in sparsities:
        if not (0.0 <= float(s) < 1.0):
            raise ValueError(f"sparsity must be in [0, 1), got {s}")


def live_speed(size: int = 1024, batch: int = 1, sparsities=(0.5, 0.75, 0.9, 0.95), bank_size: int = 64,
               methods=LIVE_METHODS, repeats: int = 7, threads: int = 1, progress=None, seed: int = 0) -> list[dict]:
    """Median CPU time of y = W x per method and sparsity, plus the speedup over dense (best of torch/numpy).

    ``progress(fraction, text)`` is called after every sparsity (the app's progress bar)."""
    import scipy.sparse as sp

    from workbench import bench
    size, batch, bank_size = int(size), int(batch), int(bank_size)
    _check_live(size, batch, bank_size, sparsities)
    unknown = set(methods) - set(LIVE_METHODS)
    if unknown or not methods:
        raise ValueError(f"methods must be chosen from {LIVE_METHODS}, got {list(methods)}")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(size, size, generator=g)
    x = torch.randn(size, generator=g) if batch == 1 else torch.randn(size, batch, generator=g)
    Wn, xn = W.numpy(), x.numpy()
    rows = []
    try:
        dense_t = bench.interleaved({"torch": lambda: W @ x, "numpy": lambda: Wn @ xn}, repeats=repeats, warmup=1,
                                    setup=lambda: bench.flush_cache(16))
        dense = min(bench.summarize(v)["median"] for v in dense_t.values())
        for i, s in enumerate(sparsities):
            s = float(s)
            mask = prune.balanced_mask(W, s, bank_size)
            bm = BalancedMatrix.from_mask(W, mask, bank_size)
            fns = {}
            if "csr" in methods:
                csr = sp.csr_matrix((W * mask).numpy())
                fns["csr"] = lambda csr=csr: csr @ xn
            if "block" in methods:
                bsr = sp.bsr_matrix((W * prune.block_mask(W, s, (4, 4))).numpy(), blocksize=(4, 4))
                fns["block"] = lambda bsr=bsr: bsr @ xn
            if "balanced" in methods:
                fns["balanced"] = lambda bm=bm: bm.matmul(x, threads=threads)
            t = bench.interleaved(fns, repeats=repeats, warmup=1, setup=lambda: bench.flush_cache(16)) if fns else {}
            if "dense" in methods:
                rows.append(dict(sparsity=s, method="dense", median_ms=dense * 1e3, speedup=1.0))
            for k, v in t.items():
                med = bench.summarize(v)["median"]
                rows.append(dict(sparsity=s, method=k, median_ms=med * 1e3, speedup=dense / med))
            if progress is not None:
                progress((i + 1) / len(sparsities), f"sparsity {s:.2f} done")
    finally:
        torch.set_num_threads(old)
    return rows


def masks_for(W: torch.Tensor, sparsity: float, bank_size: int = 16, block: tuple[int, int] = (4, 4),
              methods=PATTERN_METHODS) -> dict[str, torch.Tensor]:
    """Every pruning pattern of W at one sparsity (``nm`` keeps k of every bank_size, eq. 1)."""
    return {m: prune.make_mask(W, m, sparsity, bank_size=bank_size, block=block, pad=True) for m in methods}


def load_balance(masks: dict[str, torch.Tensor], bank_size: int) -> dict[str, dict]:
    """Per method: nonzeros per bank and per row, and the imbalance max/mean of the per-row work (1 = even)."""
    out = {}
    for m, mask in masks.items():
        M = mask.reshape(mask.shape[0], -1)
        cols = M.shape[1] - M.shape[1] % bank_size
        per_bank = M[:, :cols].reshape(M.shape[0], -1, bank_size).sum(-1).flatten()
        per_row = M.sum(1).to(torch.float64)
        out[m] = dict(per_bank=per_bank.numpy(), per_row=per_row.numpy(),
                      imbalance=float(per_row.max() / per_row.mean()) if per_row.mean() > 0 else math.nan)
    return out


def example_weight(name: str | None = None) -> tuple[str, torch.Tensor]:
    """A trained dense weight matrix from the demo checkpoint (saved before pruning)."""
    from workbench.checkpoints import load_demo
    ck = load_demo("sparse_swin", DEMO_COMMAND)
    ex = ck.extra.get("dense_examples") or {}
    if not ex:
        raise ValueError(f"the demo checkpoint has no dense example weights; rerun `{DEMO_COMMAND}`")
    key = name if name in ex else sorted(ex)[0]
    return key, ex[key].float()


def cpu_results() -> dict:
    """The committed CPU benchmark (2 threads: ``sparse``; else the 1-thread run ``sparse_1thread``)."""
    from workbench.bench import load_results
    for name in ("sparse", "sparse_1thread"):
        try:
            return load_results(name)
        except FileNotFoundError:
            continue
    raise FileNotFoundError("no committed CPU benchmark results; run `workbench bench sparse`")


def cpu_records() -> list[dict]:
    try:
        return cpu_results()["rows"]
    except FileNotFoundError:
        return []


def gpu_records() -> list[dict]:
    from workbench.bench import load_results
    try:
        return load_results("sparse_gpu")["rows"]
    except FileNotFoundError:
        return []


def accuracy_records() -> list[dict]:
    from workbench.records import read_jsonl, studies_dir
    return read_jsonl(studies_dir("sparse") / "accuracy.jsonl")
