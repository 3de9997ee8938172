"""Balanced Sparsity speed benchmark (Yao et al., AAAI 2019): y = W x with W balanced-sparse against dense BLAS, CSR
and block-sparse (BSR) products of the same size and sparsity, and whole models dense vs ``sparsify_``.

CPU (always): dense torch (MKL) and dense numpy (OpenBLAS), scipy CSR, torch CSR, scipy BSR (4x4 blocks, block mask
at the same sparsity), the balanced kernels (``balanced``: what ``BalancedMatrix.matmul`` picks — the C++ kernels,
or numba where they cannot be built; ``balanced_numba``: the numba fallback for reference). Protocol
(:mod:`workbench.sparse.timing`): each method runs in its own block of calls started after a pause (``--settle``;
OpenBLAS threads spin after a call and would take the cores of the next threaded kernel), blocks in shuffled rounds,
a 64 MB cache flush that only reads (:func:`workbench.bench.flush_cache`) before every call, medians; thread pools
capped at ``--threads``; load average recorded per point.
Reported: medians, actual sparsity, achieved GB/s, fraction of the machine's measured read bandwidth, speedups
side by side, and the goal checks of the issue. ``--models`` adds the in-model speedups (three 4096x4096 Linear +
GELU at batch 1; the paper's 2-layer LSTM, hidden 1500, 16 steps). ``--crossover`` measures only the dispatcher's
table (run without it for the benchmark itself).

GPU (``--device cuda``/``all`` when CuPy sees a device; skipped cleanly otherwise): cuBLAS fp32/fp16/bf16 (torch),
cuSPARSE CSR (cupyx), balanced fp32/fp16/bf16 (CuPy kernels); SpMV and SpMM at 4096^2 and 16384^2; CUDA-event
timing with the L2 flushed before every call, interleaved; device name, achieved HBM GB/s and % of the measured
read bandwidth recorded.

``--variants`` (with ``--device cuda``) times only the batch-1 launch variants side by side (:func:`run_gpu_variants`).

    workbench bench sparse [--device cpu|cuda|all] [--quick] [--threads 2] [--models] [--crossover] [--variants]
Results: sparse.{json,md} (CPU; sparse_<n>thread.* for --threads n != 2), sparse_gpu.{json,md} (GPU),
sparse_gpu_variants.{json,md} (--variants), in
runs/benchmarks/ or, with --commit, the checkout's benchmarks/results/; the crossover table goes to
$WORKBENCH_CACHE/sparse_crossover_cpu.json or --crossover-out (the packaged one is workbench/sparse/crossover.json).
"""
from __future__ import annotations

import argparse
import functools
import os
import time
import warnings

import numpy as np
import torch

from workbench import bench
from workbench.helptext import HelpFormatter
from workbench.records import markdown_table
from workbench.sparse import dispatch, measure
from workbench.sparse.formats import BalancedMatrix
from workbench.sparse.kernels import cpu as cpu_kernels
from workbench.sparse.kernels import gpu
from workbench.sparse.prune import balanced_mask, block_mask
from workbench.sparse.timing import timed_blocks

DURATION = "about 9 minutes (--quick: about 1 minute; --crossover: the table only, about 5 minutes)"
BANK = 64
COLUMNS = ["size", "batch", "target", "method", "kernel", "sparsity", "median_ms", "p95_ms", "speedup_vs_dense",
           "gbps", "pct_bw", "load_avg_1m"]
GPU_COLUMNS = ["size", "batch", "target", "method", "kernel", "sparsity", "median_ms", "speedup_vs_dense",
               "speedup_vs_cusparse", "pct_bw", "queued_ms", "queued_speedup_vs_dense", "queued_speedup_vs_cusparse",
               "queued_pct_bw"]
SLEEP_CYCLES = 2_000_000  # ~1 ms of GPU sleep (at ~2 GHz): longer than the host needs to enqueue any method


def grid(quick: bool, device: str, points: str | None = None) -> list[tuple[int, float, int]]:
    """(size, sparsity, batch) points. CPU: a sparsity sweep (batch 1 and 128) and a batch sweep (1..128) at 4096,
    a size sweep at 90%. GPU: SpMV and SpMM at 4096 and 16384. ``points`` ("4096:0.9:1,4096:0.9:128") picks
    explicit ones."""
    if points:
        out = []
        for p in points.split(","):
            n, sp_, b = p.split(":")
            out.append((int(n), float(sp_), int(b)))
        return out
    if quick:
        return [(1024, 0.9, 1), (1024, 0.9, 32)]
    if device == "cuda":
        return [(n, s, b) for n in (4096, 16384) for s in (0.75, 0.9, 0.95) for b in (1, 8, 32, 128)]
    pts = []
    for s in (0.5, 0.75, 0.9, 0.95):
        pts += [(4096, s, 1), (4096, s, 128)]
    pts += [(4096, 0.9, b) for b in (4, 8, 16, 32)]
    for n in (1024, 2048, 8192):
        pts += [(n, 0.9, 1), (n, 0.9, 128)]
    pts += [(16384, 0.9, 1)]
    return pts


@functools.lru_cache(maxsize=1)  # consecutive grid points share (size, sparsity): build once
def _matrices(size: int, s: float, seed: int = 0, block: bool = True):
    """W (dense), W*balanced mask, its BalancedMatrix and W*block mask (None when ``block`` is False).
    Masks are computed in chunks of rows (a balanced mask is row-local) to bound the memory at 16384^2."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(size, size, generator=g)
    Wm = torch.empty_like(W)
    parts = []
    for r in range(0, size, 1024):
        m = balanced_mask(W[r:r + 1024], s, BANK)
        Wm[r:r + 1024] = W[r:r + 1024] * m
        parts.append(BalancedMatrix.from_mask(W[r:r + 1024], m, BANK))
    bm = BalancedMatrix(torch.cat([p.values for p in parts]).contiguous(),
                        torch.cat([p.offsets for p in parts]).contiguous(), tuple(W.shape), BANK)
    Wb = W * block_mask(W, s, (4, 4)) if block else None
    return W, Wm, bm, Wb


def _rows(times, bytes_of, sparsity_of, size, batch, target, bw, kernel_of, load, dense_names) -> list[dict]:
    med = {k: bench.summarize(v) for k, v in times.items()}
    best_dense = min(med[d]["median"] for d in dense_names if d in med)
    out = []
    for k, st in med.items():
        gbps = bytes_of[k] / st["median"] / 1e9
        out.append(dict(size=size, batch=batch, target=target, method=k, kernel=kernel_of.get(k, ""),
                        sparsity=round(sparsity_of[k], 4), median_ms=st["median"] * 1e3, min_ms=st["min"] * 1e3,
                        p95_ms=st["p95"] * 1e3, n=st["n"], speedup_vs_dense=best_dense / st["median"], gbps=gbps,
                        pct_bw=100 * gbps / bw if bw else None, load_avg_1m=load))
    return out


def _cpu_methods(W, Wn, csr, tcsr, bsr, bm, x, xn) -> dict:
    """The timed CPU products of one point (each closure holds its own operands)."""
    fns = {
        "dense_torch": (lambda: torch.mv(W, x)) if x.ndim == 1 else (lambda: torch.mm(W, x)),
        "dense_numpy": lambda: Wn @ xn,
        "csr_scipy": lambda: csr @ xn,
        "csr_torch": lambda: tcsr @ x,
        "balanced": lambda: bm.matmul(x),
        "balanced_numba": lambda: bm.matmul(x, kernel="numba"),
    }
    if bsr is not None:
        fns["bsr_scipy"] = lambda: bsr @ xn
    return fns


def run_cpu(args, log=print) -> tuple[list[dict], dict]:
    import scipy.sparse as sp
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    status = measure.kernel_status()
    log(f"CPU kernels: {status['backend']} ({status['reason']}); avx2={status.get('avx2')} "
        f"avx512={status.get('avx512')}")
    bw = measure.bandwidth(threads=args.threads)
    log(f"measured read bandwidth {bw:.1f} GB/s")
    log("each line: matrix size, target sparsity, batch (columns of x); the balanced kernel's median time, its "
        "speedup over dense torch and its share of the measured read bandwidth; then every baseline's median ms")
    if args.quick:
        log("--quick: two small points that check every method runs; not a measurement (run without --quick)")
    rows = []
    with threadpool_limits(limits=args.threads):
        for size, s, batch in grid(args.quick, "cpu", args.points):
            if size * size * 4 > args.max_dense_gb * 1e9:
                continue
            load = os.getloadavg()[0]
            W, Wm, bm, Wb = _matrices(size, s, block=size < 16384 and batch <= 32)
            Wn = W.numpy()
            csr = sp.csr_matrix(Wm.numpy())
            with warnings.catch_warnings():   # torch's "sparse CSR support is in beta" notice, once per point
                warnings.simplefilter("ignore", UserWarning)
                tcsr = Wm.to_sparse_csr()
            bsr = sp.bsr_matrix(Wb.numpy(), blocksize=(4, 4)) if Wb is not None else None
            g = torch.Generator().manual_seed(1)
            x = torch.randn(size, generator=g) if batch == 1 else torch.randn(size, batch, generator=g)
            xn = x.numpy()
            kernel = cpu_kernels.kernel_for(batch, bm.dtype, BANK)
            bm.cpu_layout(kernel)  # the kernel's weight layout, built once outside the timing (a module keeps it)
            fns = _cpu_methods(W, Wn, csr, tcsr, bsr, bm, x, xn)
            if size >= 16384:  # the slow baselines only where they finish in time
                fns = {k: fns[k] for k in ("dense_numpy", "dense_torch", "csr_scipy", "balanced")}
            if batch == 1:  # not a product: a plain sum over as many bytes as the balanced kernel reads
                same = torch.ones(bm.nbytes // 4)
                fns["read_same_bytes"] = same.sum
                lib = cpu_kernels.library()
                if lib is not None and kernel in ("tiles", "gather"):
                    # nor this: the same kernel entry into a preallocated y, without matmul's checks and allocation
                    fast, y0 = bm._make_cpu_fast(lib, kernel), torch.empty(size)
                    fns["kernel_into_y"] = lambda fast=fast, x=x, y0=y0: fast(x, y0, 1)
                    bm.matmul(x)
                    run = bm._cpu_fast()
                    if "cpu_call" in bm._cache and run is not None:
                        # and this: matmul's Python path to the same kernel, as it ran before the C++ call binding
                        fns["matmul_python_path"] = lambda run=run, x=x: run(x)
            ref = Wm.double() @ x.double()
            err = float((bm.matmul(x).double() - ref).abs().max())
            if err > 1e-3 * float(ref.abs().max()):
                raise RuntimeError(f"balanced kernel disagrees with dense by {err}")
            xb, yb = x.numel() * 4, size * batch * 4
            bytes_of = {"dense_torch": W.numel() * 4 + xb + yb, "dense_numpy": W.numel() * 4 + xb + yb,
                        "csr_scipy": csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes + xb + yb,
                        "csr_torch": tcsr.values().numel() * 4 + tcsr.col_indices().numel() * 8
                        + tcsr.crow_indices().numel() * 8 + xb + yb,
                        "bsr_scipy": (bsr.data.nbytes + bsr.indices.nbytes + bsr.indptr.nbytes if bsr is not None
                                      else 0) + xb + yb,
                        "balanced": bm.nbytes + xb + yb, "balanced_numba": bm.nbytes + xb + yb,
                        "read_same_bytes": bm.nbytes // 4 * 4, "kernel_into_y": bm.nbytes + xb + yb,
                        "matmul_python_path": bm.nbytes + xb + yb}
            spars = {k: bm.sparsity for k in fns}
            spars.update(dense_torch=0.0, dense_numpy=0.0, read_same_bytes=bm.sparsity,
                         bsr_scipy=1 - bsr.nnz / W.numel() if bsr is not None else 0.0)
            slow = size * size * batch >= 4096 * 4096 * 128 or size >= 16384  # fewer samples only where calls are long
            times = timed_blocks(fns, rounds=max(3, args.rounds // 2) if slow else args.rounds,
                                 block=max(2, args.block // 2) if slow else args.block, settle=args.settle,
                                 setup=lambda: bench.flush_cache(64), max_seconds=args.max_seconds)
            new = _rows(times, bytes_of, spars, size, batch, s, bw,
                        {"balanced": kernel, "balanced_numba": "numba", "read_same_bytes": "torch.sum",
                         "kernel_into_y": kernel, "matmul_python_path": kernel}, load,
                        ("dense_torch", "dense_numpy"))
            rows += new
            b = next(r for r in new if r["method"] == "balanced")
            log(f"cpu {size}x{size} s={s} batch={batch}: balanced[{kernel}] {b['median_ms']:.3f} ms, "
                f"{b['speedup_vs_dense']:.2f}x dense, {b['pct_bw']:.0f}% bw; "
                + ", ".join(f"{r['method']} {r['median_ms']:.3f}" for r in new if r["method"] != "balanced")
                + f" (load {load:.2f})")
    # under load the streaming measurement can read low: the bound is at least what dense BLAS achieved
    dense_bw = max((r["gbps"] * r["median_ms"] / r["min_ms"] for r in rows
                    if r["method"] in ("dense_numpy", "dense_torch") and r["batch"] == 1), default=0.0)
    if dense_bw > bw:
        log(f"bandwidth raised to {dense_bw:.1f} GB/s (best dense matrix-vector run)")
        bw = dense_bw
    for r in rows:
        r["bandwidth_gbps"] = bw
        r["pct_bw"] = 100 * r["gbps"] / bw
    return rows, status


def run_models(args, log=print) -> list[dict]:
    out = []
    for kind in ("mlp", "lstm"):
        r = measure.model_speedup(kind, sparsity=0.9, bank_size=BANK, threads=args.threads,
                                  rounds=3 if args.quick else args.rounds, block=3, settle=args.settle)
        paths = sorted({f"{p['path']}/{p['kernel']}" for p in r["paths"]})
        log(f"model {kind}: dense {r['dense_ms']:.2f} ms, sparse {r['sparse_ms']:.2f} ms, {r['speedup']:.2f}x "
            f"(paths {paths}, max |diff| {r['max_abs_err']:.2e}, load {r['load_avg_1m']:.2f})")
        for m, t in (("dense", r["dense_ms"]), ("sparse", r["sparse_ms"])):
            out.append(dict(size=r["size"], batch=r["batch"], target=0.9, method=f"model_{kind}_{m}",
                            kernel=", ".join(paths) if m == "sparse" else "torch", sparsity=round(r["sparsity"], 4),
                            median_ms=t, speedup_vs_dense=r["dense_ms"] / t, load_avg_1m=r["load_avg_1m"],
                            max_abs_err=r["max_abs_err"]))
    return out


def run_crossover(args, log=print):
    batches = (1, 16) if args.quick else (1, 4, 16, 64, 256)
    if args.device == "cuda":
        if not gpu.available():
            raise SystemExit("--crossover --device cuda: no CUDA device visible to CuPy")
        sizes = (256, 512) if args.quick else (256, 512, 1024, 2048, 4096, 8192)
        t = measure.crossover_table_cuda(sizes=sizes, batches=batches, rounds=args.rounds, log=log)
    else:
        sizes = (256, 512) if args.quick else (256, 512, 1024, 2048, 4096)
        t = measure.crossover_table_cpu(sizes=sizes, batches=batches, threads=args.threads, settle=args.settle,
                                        rounds=args.rounds, log=log)
    path = dispatch.save_table(t, args.crossover_out)
    log(f"crossover table ({t['seconds']} s) written to {path}")
    return t


def cpu_notes(rows: list[dict], args, status: dict) -> str:
    def pick(size, batch, s, method):
        return next((r for r in rows if r["size"] == size and r["batch"] == batch and r["target"] == s
                     and r["method"] == method), None)

    def ratio(a, b):
        return (b["median_ms"] / a["median_ms"]) if a and b else float("nan")

    lines = [f"Threads: {args.threads}; bank {BANK}; CPU kernels: {status.get('backend')} "
             f"({status.get('reason')}; avx2={status.get('avx2')}, avx512={status.get('avx512')}). Protocol: each "
             f"method in its own block of {args.block} calls after a {args.settle:.2f} s pause, {args.rounds} "
             "shuffled rounds (fewer for the slowest points), 64 MB cache flush (a read) before every call, medians. "
             "speedup_vs_dense = best dense median / method median; pct_bw = achieved GB/s over the measured read "
             "bandwidth; load_avg_1m = the 1-minute load average when the point started (a loaded machine "
             "inflates threaded timings)."]
    b1 = pick(4096, 1, 0.9, "balanced")
    if b1:
        csr = pick(4096, 1, 0.9, "csr_scipy")
        lines.append(f"Goal check (issue 16), 4096x4096 fp32, 90.6% (k=6 of 64), batch 1: "
                     f"{b1['speedup_vs_dense']:.2f}x best dense (goal >= 4), {ratio(b1, csr):.2f}x scipy CSR "
                     f"(goal >= 2.5), {b1['pct_bw']:.0f}% of the bandwidth bound (goal >= 60%).")
        rd = pick(4096, 1, 0.9, "read_same_bytes")
        if rd:
            lines.append(f"read_same_bytes (a reference, not a product): torch's threaded sum over as many bytes as "
                         f"the balanced kernel reads takes {rd['median_ms']:.3f} ms ({rd['gbps']:.1f} GB/s) after the "
                         f"same flush, so the kernel reads at {100 * rd['median_ms'] / b1['median_ms']:.0f}% of the "
                         "rate a plain parallel read of its bytes reaches; the rest of the gap to the bandwidth bound "
                         "(measured over 256 MB) is the start-up of a short stream.")
        ki = pick(4096, 1, 0.9, "kernel_into_y")
        if ki:
            lines.append(f"kernel_into_y (a reference, not a product): the same kernel entry writing into a "
                         f"preallocated y, without matmul's input checks and output allocation, takes "
                         f"{ki['median_ms']:.3f} ms, {ki['pct_bw']:.0f}% of the bandwidth bound; the difference to "
                         f"matmul ({1e3 * (b1['median_ms'] - ki['median_ms']):.0f} us) is the call run cold after "
                         "the flush.")
        pp = pick(4096, 1, 0.9, "matmul_python_path")
        if pp:
            lines.append(f"matmul_python_path (a reference, not a product): matmul's small-batch path with the check of "
                         f"x, the allocation of y and a ctypes call made from Python, as it ran before the one C++ "
                         f"call (balanced_call.cpp), takes {pp['median_ms']:.3f} ms ({pp['pct_bw']:.0f}% of the bound): "
                         f"the C++ call is {pp['median_ms'] / b1['median_ms']:.2f}x faster.")
    bs = [pick(4096, b, 0.9, "balanced") for b in (4, 8, 16, 32)]
    if any(bs):
        lines.append("Batch <= 32 at 90%: " + ", ".join(
            f"batch {r['batch']}: {r['speedup_vs_dense']:.2f}x dense, "
            f"{ratio(r, pick(4096, r['batch'], 0.9, 'csr_torch')):.2f}x torch CSR" for r in bs if r)
            + " (goals >= 4x dense, >= 3x torch CSR).")
    b128 = pick(4096, 128, 0.9, "balanced")
    if b128:
        tc = pick(4096, 128, 0.9, "csr_torch")
        lines.append(f"Batch 128: {b128['speedup_vs_dense']:.2f}x best dense (goal >= 3), {ratio(b128, tc):.2f}x torch "
                     "CSR (goal >= 3).")
    for kind in ("mlp", "lstm"):
        d = next((r for r in rows if r["method"] == f"model_{kind}_dense"), None)
        s = next((r for r in rows if r["method"] == f"model_{kind}_sparse"), None)
        if d and s:
            what = ("three 4096x4096 Linear + GELU, batch 1" if kind == "mlp"
                    else "2-layer LSTM, hidden 1500, 16 steps, batch 1")
            lines.append(f"In-model ({what}): {d['median_ms'] / s['median_ms']:.2f}x over the dense model "
                         "(goal >= 5, aim 6).")
    return "\n\n".join(lines)


# ------------------------------------------------------------------------------------------------------------- GPU
def _gpu_methods(dense: dict, bms: dict, xs: dict, csr, xcp) -> dict:
    """The timed GPU products of one point, per precision (each closure holds its own operands)."""
    fns = {}
    for p in ("fp32", "fp16", "bf16"):
        W, bm, x = dense[p], bms[p], xs[p]
        fns[f"cublas_{p}"] = (lambda W=W, x=x: torch.mv(W, x)) if x.ndim == 1 else (lambda W=W, x=x: torch.mm(W, x))
        fns[f"balanced_{p}"] = lambda bm=bm, x=x: bm.matmul(x)
    fns["cusparse_csr"] = lambda: csr @ xcp
    # the kernel the planner did not pick, side by side: x gathered from global memory (batch 1), spmm tiles (2..32)
    bm, x = bms["fp32"], xs["fp32"]
    if x.ndim == 1:
        fns["balanced_fp32_global"] = lambda: bm.matmul(x, kernel="spmv_global")
    elif gpu.spmvn_columns(x.shape[1]):
        fns["balanced_fp32_tile"] = lambda: bm.matmul(x, kernel="spmm")
    return fns


def _hbm_read_bandwidth(e0, e1) -> float:
    """GB/s of a large reduction (reads only, 2 GiB), best of 5."""
    a = torch.ones(1 << 29, dtype=torch.float32, device="cuda")
    a.sum()
    torch.cuda.synchronize()
    bw = 0.0
    for _ in range(5):
        e0.record()
        a.sum()
        e1.record()
        torch.cuda.synchronize()
        bw = max(bw, a.numel() * 4 / (e0.elapsed_time(e1) / 1e3) / 1e9)
    del a
    torch.cuda.empty_cache()
    return bw


def _queued_seconds(f, flushbuf, e0, e1) -> float:
    """One call of ``f`` timed queued: L2 flushed, then a GPU sleep holds the stream while the host enqueues the
    call, so the events time the GPU's own work (as in a CUDA graph or behind earlier kernels)."""
    gpu.flush_l2(flushbuf)
    torch.cuda._sleep(SLEEP_CYCLES)
    e0.record()
    f()
    e1.record()
    torch.cuda.synchronize()
    return e0.elapsed_time(e1) / 1e3


def run_gpu(args, log=print) -> list[dict]:
    import cupy
    import cupyx.scipy.sparse as csp

    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(0)
    flushbuf = gpu.flush_l2(mb=256)
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    bw = _hbm_read_bandwidth(e0, e1)
    log(f"{name}: read bandwidth {bw:.0f} GB/s; smem opt-in limit {gpu.smem_optin_limit()} bytes")
    rows = []
    for size, s, batch in grid(args.quick, "cuda", args.points):
        W, Wm, bm, _ = _matrices(size, s, block=False)
        Wc = W.to(dev)
        dense = {"fp32": Wc, "fp16": Wc.half(), "bf16": Wc.bfloat16()}
        bms = {"fp32": bm.to(dev), "fp16": bm.to(dev, torch.float16), "bf16": bm.to(dev, torch.bfloat16)}
        csr = csp.csr_matrix(cupy.from_dlpack(Wm.to(dev)))
        g = torch.Generator().manual_seed(1)
        x = (torch.randn(size, generator=g) if batch == 1 else torch.randn(size, batch, generator=g)).to(dev)
        xs = {"fp32": x, "fp16": x.half(), "bf16": x.bfloat16()}
        xcp = cupy.from_dlpack(x)
        fns = _gpu_methods(dense, bms, xs, csr, xcp)
        ref = Wm.to(dev).double() @ x.double()
        for p, tol in (("fp32", 1e-4), ("fp16", 2e-2), ("bf16", 5e-2)):
            err = float((bms[p].matmul(xs[p]).double() - ref).abs().max())
            if err > tol * float(ref.abs().max()):
                raise RuntimeError(f"balanced GPU kernel ({p}) disagrees with dense by {err}")
        times = {k: [] for k in fns}
        queued = {k: [] for k in fns}
        for f in fns.values():  # warm-up (compiles, cuSPARSE analysis)
            f()
        torch.cuda.synchronize()
        order = list(fns)
        rng = np.random.default_rng(0)
        for _ in range(args.gpu_repeats):
            rng.shuffle(order)
            for k in order:
                # the call: the GPU idles while the host prepares it, as for one call issued alone
                gpu.flush_l2(flushbuf)
                torch.cuda.synchronize()
                e0.record()
                fns[k]()
                e1.record()
                torch.cuda.synchronize()
                times[k].append(e0.elapsed_time(e1) / 1e3)
                queued[k].append(_queued_seconds(fns[k], flushbuf, e0, e1))
        xb, yb = x.numel() * 4, size * batch * 4
        bytes_of = {"cusparse_csr": int(csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes) + xb + yb}
        for p, es in (("fp32", 4), ("fp16", 2), ("bf16", 2)):
            bytes_of[f"cublas_{p}"] = W.numel() * es + (xb + yb) * es // 4
            bytes_of[f"balanced_{p}"] = bms[p].nbytes + (xb + yb) * es // 4
        bytes_of["balanced_fp32_global"] = bytes_of["balanced_fp32_tile"] = bytes_of["balanced_fp32"]
        spars = {k: (0.0 if k.startswith("cublas") else bm.sparsity) for k in fns}
        new = _rows(times, bytes_of, spars, size, batch, s, bw, {}, None, ("cublas_fp32",))
        qnew = _rows(queued, bytes_of, spars, size, batch, s, bw, {}, None, ("cublas_fp32",))
        cus = next(q["median_ms"] for q in new if q["method"] == "cusparse_csr")
        qcus = next(q["median_ms"] for q in qnew if q["method"] == "cusparse_csr")
        for r, q in zip(new, qnew):
            r["device"] = name
            r["speedup_vs_cusparse"] = cus / r["median_ms"]
            r.update(queued_ms=q["median_ms"], queued_speedup_vs_dense=q["speedup_vs_dense"],
                     queued_speedup_vs_cusparse=qcus / q["median_ms"], queued_pct_bw=q["pct_bw"])
            r["kernel"] = {"balanced_fp32_global": "spmv, x in global memory",
                           "balanced_fp32_tile": "spmm tiles"}.get(r["method"], "")
            if r["method"] in ("balanced_fp32", "balanced_fp16", "balanced_bf16"):
                r["kernel"] = gpu.plan_name(size, bm.banks, bm.k, BANK, batch, dense[r["method"][-4:]].dtype)
        rows += new
        bal = next(r for r in new if r["method"] == "balanced_fp32")
        log(f"gpu {size} s={s} batch={batch}: balanced fp32 {bal['median_ms'] * 1e3:.1f} us "
            f"({bal['kernel']}), {bal['speedup_vs_dense']:.2f}x cuBLAS, {bal['speedup_vs_cusparse']:.2f}x "
            f"cuSPARSE, {bal['pct_bw']:.0f}% of HBM read bandwidth; queued {bal['queued_ms'] * 1e3:.1f} us, "
            f"{bal['queued_speedup_vs_dense']:.2f}x, {bal['queued_speedup_vs_cusparse']:.2f}x, "
            f"{bal['queued_pct_bw']:.0f}%")
        torch.cuda.empty_cache()
    for r in rows:
        r["bandwidth_gbps"] = bw
    return rows


# --------------------------------------------------------------------------------------------- GPU A/B (--variants)
VARIANT_US = (1, 2, 4, 8, 16)  # BS_SPMV_U values compiled for the A/B
VARIANT_COLUMNS = ["size", "method", "kernel", "u", "queued_ms", "speedup_vs_dense", "speedup_vs_cusparse",
                   "pct_bw", "gather_lines", "max_rel_err"]


def gather_lines(offsets: torch.Tensor, bank_size: int, vec: int, lanes: int = 32, esize: int = 4,
                 line: int = 128, rows: int = 64) -> float:
    """Mean number of distinct ``line``-byte lines of x that one warp-wide gather of the spmv kernels touches, over
    the first ``rows`` rows of ``offsets`` (rows, banks, k): lane l of a row reads chunk c0 + l, and its i-th gather
    reads entry (c0 + l) * vec + i, column (entry // k) * bank_size + offset. Through global memory each distinct line
    is one L1 wavefront, so this is a model of the gathers' L1 cost, printed next to the A/B's timings."""
    r, banks, k = offsets.shape
    o = offsets[:rows].reshape(min(r, rows), banks * k).long()
    nnz = banks * k
    line_of = ((torch.arange(nnz) // k) * bank_size + o) * esize // line  # (rows, nnz)
    chunks = nnz // vec
    counts = []
    for c0 in range(0, chunks, lanes):
        cs = torch.arange(c0, min(c0 + lanes, chunks))
        for i in range(vec):
            idx = line_of[:, cs * vec + i]
            counts.append(torch.tensor([len(torch.unique(row)) for row in idx], dtype=torch.float64))
    return float(torch.stack(counts).mean())


def run_gpu_variants(args, log=print) -> list[dict]:
    """The batch-1 A/B: every :func:`gpu.spmv_variants` launch x every BS_SPMV_U in :data:`VARIANT_US`, next to the
    planner's choice (``balanced``), cuBLAS fp32 and cuSPARSE CSR; fp32, 90.6%, 4096^2 and 16384^2 (--quick: 1024^2);
    each variant checked against float64 first; queued CUDA-event timing (the GPU's own time), L2 flushed before
    every call, methods in shuffled order, ``--gpu-repeats`` calls each, medians."""
    import cupy
    import cupyx.scipy.sparse as csp

    name = torch.cuda.get_device_name(0)
    dev = torch.device("cuda")
    flushbuf = gpu.flush_l2(mb=256)
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    bw = _hbm_read_bandwidth(e0, e1)
    log(f"{name}: read bandwidth {bw:.0f} GB/s")
    out = []
    for size in ((1024,) if args.quick else (4096, 16384)):
        W, Wm, bm_cpu, _ = _matrices(size, 0.9, block=False)
        bm = bm_cpu.to(dev)
        x = torch.randn(size, generator=torch.Generator().manual_seed(1)).to(dev)
        Wc, csr, xcp = W.to(dev), csp.csr_matrix(cupy.from_dlpack(Wm.to(dev))), cupy.from_dlpack(x)
        ref = Wm.to(dev).double() @ x.double()
        limit = gpu.smem_optin_limit()

        def resident(fn, smem, u, k=bm.k):
            return gpu._resident(gpu.module(k, "f32_u8", u).get_function(f"{fn}_f32_u8"), smem, dev.index or 0)

        fns = {"cublas_fp32": functools.partial(torch.mv, Wc, x), "cusparse_csr": functools.partial(csr.dot, xcp),
               "balanced": functools.partial(bm.matmul, x)}
        kernel, lines, errs, us = {"balanced": gpu.plan_name(size, bm.banks, bm.k, BANK, 1)}, {}, {}, {}
        for u in VARIANT_US:
            plans = gpu.spmv_variants(size, bm.banks, bm.k, torch.float32, size, smem_limit=limit,
                                      resident=functools.partial(resident, u=u))
            for v, plan in plans.items():
                m = f"{v}_u{u}"
                fns[m] = functools.partial(gpu.run_spmv_plan, bm.values, bm.offsets, x, BANK, size, plan, u=u)
                kernel[m], us[m] = f"{plan.name}, {plan.blocks} blocks", u
                if not plan.smem:
                    lines[m] = lines.get(plan.vec) or gather_lines(bm_cpu.offsets, BANK, plan.vec)
                    lines[plan.vec] = lines[m]
        for m, f in fns.items():  # warm-up (compiles) and the float64 check
            y = f()
            y = y if isinstance(y, torch.Tensor) else torch.from_dlpack(y)
            errs[m] = float((y.double() - ref).abs().max() / ref.abs().max())
        torch.cuda.synchronize()
        queued = {m: [] for m in fns}
        order, rng = list(fns), np.random.default_rng(0)
        for _ in range(args.gpu_repeats):
            rng.shuffle(order)
            for m in order:
                queued[m].append(_queued_seconds(fns[m], flushbuf, e0, e1))
        xb = size * 4 * 2
        bytes_of = {m: bm.nbytes + xb for m in fns}
        bytes_of["cublas_fp32"] = W.numel() * 4 + xb
        bytes_of["cusparse_csr"] = int(csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes) + xb
        rows = _rows(queued, bytes_of, {m: 0.0 for m in fns}, size, 1, 0.9, bw, kernel, None, ("cublas_fp32",))
        cus = next(r["median_ms"] for r in rows if r["method"] == "cusparse_csr")
        for r in rows:
            m = r["method"]
            r.update(device=name, queued_ms=r.pop("median_ms"), speedup_vs_cusparse=cus / r["queued_ms"],
                     u=us.get(m, ""), gather_lines=lines.get(m, ""), max_rel_err=errs[m], bandwidth_gbps=bw)
        out += rows
        log(variant_notes(rows))
        torch.cuda.empty_cache()
    return out


def variant_notes(rows: list[dict]) -> str:
    """Per size: the fastest variant that matches float64 (max error <= 1e-4 of max |y|) against the planner's
    choice and the issue's goals (>= 4x cuBLAS and >= 2x cuSPARSE at 4096^2; >= 60% of HBM at 16384^2)."""
    lines = []
    for size in sorted({r["size"] for r in rows}):
        at = [r for r in rows if r["size"] == size]
        wrong = [r["method"] for r in at if r.get("u") and r["max_rel_err"] > 1e-4]
        ok = [r for r in at if r.get("u") and r["max_rel_err"] <= 1e-4]
        cur = next(r for r in at if r["method"] == "balanced")
        text = (f"{size}^2: planner ({cur['kernel']}) {cur['queued_ms'] * 1e3:.1f} us, "
                f"{cur['speedup_vs_dense']:.2f}x cuBLAS, {cur['speedup_vs_cusparse']:.2f}x cuSPARSE, "
                f"{cur['pct_bw']:.0f}% of HBM")
        if ok:
            best = min(ok, key=lambda r: r["queued_ms"])
            text += (f"; fastest variant {best['method']} {best['queued_ms'] * 1e3:.1f} us "
                     f"({cur['queued_ms'] / best['queued_ms']:.2f}x the planner's), "
                     f"{best['speedup_vs_dense']:.2f}x cuBLAS, {best['speedup_vs_cusparse']:.2f}x cuSPARSE, "
                     f"{best['pct_bw']:.0f}% of HBM")
        if wrong:
            text += f"; WRONG RESULTS (excluded): {', '.join(wrong)}"
        lines.append(text + ".")
    return "\n\n".join(lines)


def ratio_table(rows: list[dict]) -> str:
    """Markdown table of ``speedup_vs_dense`` side by side: one row per (size, batch, target sparsity), one column per
    method (in the order measured; "-" where a method was not run at that point)."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    points: dict[tuple, dict] = {}
    for r in rows:
        points.setdefault((r["size"], r["batch"], r["target"]), {})[r["method"]] = r["speedup_vs_dense"]
    body = [[size, batch, target] + [f"{v[m]:.2f}x" if m in v else "-" for m in methods]
            for (size, batch, target), v in points.items()]
    return markdown_table(["size", "batch", "sparsity"] + methods, body)


def _report(title: str, reference: str, rows: list[dict], paths) -> None:
    print(f"\n{title}: speedup over {reference} (> 1 is faster)\n{ratio_table(rows)}")
    print("wrote " + " and ".join(str(p) for p in paths), flush=True)


def gpu_notes(rows: list[dict]) -> str:
    def pick(size, batch, method):
        return next((r for r in rows if r["size"] == size and r["batch"] == batch and r["target"] == 0.9
                     and r["method"] == method), None)
    lines = ["CUDA-event timing, L2 flushed (256 MB write) before every call, shuffled order per repetition, "
             "medians over --gpu-repeats calls; speedups are against cuBLAS fp32 and cuSPARSE CSR (fp32); pct_bw = "
             "achieved bytes/s over the measured HBM read bandwidth (a 2 GiB reduction). Two timings of each call: "
             "median_ms, the call issued alone on an idle GPU (the host's Python and launch time between the events "
             "counts, as for one call made by hand), and queued_ms, the same call enqueued behind a ~1 ms GPU sleep "
             "(the GPU's own time, as inside a CUDA graph or behind earlier work)."]
    b = pick(4096, 1, "balanced_fp32")
    if b:
        lines.append(f"Goal check, 4096^2, 90%, batch 1: {b['speedup_vs_dense']:.2f}x cuBLAS (goal >= 4), "
                     f"{b['speedup_vs_cusparse']:.2f}x cuSPARSE (goal >= 2) per call; queued "
                     f"{b['queued_speedup_vs_dense']:.2f}x and {b['queued_speedup_vs_cusparse']:.2f}x.")
    b = pick(16384, 1, "balanced_fp32")
    if b:
        lines.append(f"16384^2, 90%, batch 1: {b['pct_bw']:.0f}% of HBM bandwidth per call, "
                     f"{b['queued_pct_bw']:.0f}% queued (goal >= 60%).")
    return "\n\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="workbench bench sparse", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--device", choices=("cpu", "cuda", "all"), default="all",
                   help="Devices to time (cuda only when CuPy sees a GPU).")
    p.add_argument("--quick", action="store_true",
                   help="Two small points only: checks that every method runs (not a measurement).")
    p.add_argument("--threads", type=int, default=2, help="Threads of every CPU method.")
    p.add_argument("--points", default=None, help="explicit size:sparsity:batch points, comma-separated; results "
                   "go to sparse_goal.*")
    p.add_argument("--rounds", type=int, default=5, help="Shuffled rounds of method blocks.")
    p.add_argument("--block", type=int, default=5, help="Timed calls per method block.")
    p.add_argument("--settle", type=float, default=0.3, help="Pause before each method block, in seconds.")
    p.add_argument("--models", action="store_true", help="Also time the two models, dense vs sparsify_.")
    p.add_argument("--crossover", action="store_true", help="Measure only the dispatcher's crossover table (this "
                   "machine's, used by sparsify_ from then on), not the benchmark; with --device cuda, the GPU's.")
    p.add_argument("--variants", action="store_true", help="With --device cuda: only the batch-1 A/B of the spmv "
                   "launch variants (load width, loads in flight, where x lives), next to the planner's choice, "
                   "cuBLAS and cuSPARSE; results go to sparse_gpu_variants.*")
    p.add_argument("--crossover-out", default=None, help="where to write it (default: this machine's table in "
                   "$WORKBENCH_CACHE; workbench/sparse/crossover.json is the packaged one)")
    p.add_argument("--gpu-repeats", type=int, default=30, help="Timed calls per GPU method.")
    p.add_argument("--max-seconds", type=float, default=60.0, help="Time budget of one point: stop after the round "
                                                                     "that passes it.")
    p.add_argument("--max-dense-gb", type=float, default=1.1, help="Skip dense baselines larger than this (GB).")
    bench.add_output_arguments(p)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    if args.crossover:
        run_crossover(args)
        return
    if args.variants:
        if args.device != "cuda" or not gpu.available():
            raise SystemExit("--variants times GPU kernels: it needs --device cuda and a CUDA device visible to CuPy")
        rows = run_gpu_variants(args)
        paths = bench.write_results("sparse_gpu_variants" + ("_quick" if args.quick else ""), rows,
                                    title="Balanced sparsity: GPU batch-1 launch variants (A/B)",
                                    columns=VARIANT_COLUMNS, notes=variant_notes(rows), out_dir=bench.output_dir(args))
        print("wrote " + " and ".join(str(p) for p in paths), flush=True)
        return
    if args.device in ("cpu", "all"):
        load0 = os.getloadavg()[0]
        rows, status = run_cpu(args)
        if args.models:
            rows += run_models(args)
        info = bench.machine_info()
        info.update(load_avg_1m_before=load0, load_avg_1m_after=os.getloadavg()[0], threads=args.threads,
                    torch_threads=args.threads, seconds=round(time.perf_counter() - t0, 1),
                    cpu_kernels=status.get("backend"), cpu_call=status.get("call"), avx2=status.get("avx2"),
                    avx512=status.get("avx512"))
        name = "sparse" + ("_quick" if args.quick else "") + ("_goal" if args.points else "") \
            + ("" if args.threads == 2 else f"_{args.threads}thread")
        paths = bench.write_results(name, rows, title="Balanced sparsity: CPU SpMV / SpMM", columns=COLUMNS,
                                    notes=cpu_notes(rows, args, status), out_dir=bench.output_dir(args), info=info)
        _report("CPU", "the fastest dense product (torch or numpy; the dense model for model_* rows)", rows, paths)
    if args.device in ("cuda", "all"):
        if not gpu.available():
            print("no CUDA device visible to CuPy: GPU benchmark skipped")
            return
        rows = run_gpu(args)
        paths = bench.write_results("sparse_gpu" if not args.quick else "sparse_gpu_quick", rows,
                                    title="Balanced sparsity: GPU SpMV / SpMM", columns=GPU_COLUMNS,
                                    notes=gpu_notes(rows), out_dir=bench.output_dir(args))
        _report("GPU", "cuBLAS fp32", rows, paths)


if __name__ == "__main__":
    main()
