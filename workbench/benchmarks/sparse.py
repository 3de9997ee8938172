"""Balanced Sparsity speed benchmark (Yao et al., AAAI 2019): y = W x with W balanced-sparse, against dense BLAS,
CSR and block-sparse (BSR) products of the same size and sparsity.

CPU (always): dense torch (MKL/OpenBLAS) and dense numpy (OpenBLAS), scipy CSR, torch CSR, scipy BSR (4x4 blocks,
block mask at the same sparsity) and the numba balanced kernels — methods interleaved, caches flushed and the
threads left to settle between repetitions, medians reported with the actual sparsity, achieved GB/s and the
fraction of the machine's measured read bandwidth. CSR baselines store exactly the balanced matrix's nonzeros.

GPU (when CuPy sees a device): cuBLAS fp32/fp16 (torch), cuSPARSE CSR (cupyx), torch BSR, balanced fp32/fp16
CuPy kernels; CUDA-event timing with the L2 flushed before every repetition, device name recorded.

    workbench bench sparse [--quick] [--device cpu|cuda|all] [--threads 2]
Results: benchmarks/results/sparse.{json,md} (CPU, 2 threads; sparse_<n>thread.* for --threads n) and
sparse_gpu.{json,md} (GPU).
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from workbench import bench
from workbench.sparse.formats import BalancedMatrix
from workbench.sparse.prune import balanced_mask, block_mask

BANK = 64
COLUMNS = ["size", "batch", "target", "method", "sparsity", "median_ms", "min_ms", "speedup_vs_dense",
           "gbps", "pct_bw"]


def grid(quick: bool, device: str, points: str | None = None) -> list[tuple[int, float, int]]:
    """(size, sparsity, batch) points: a sparsity sweep and a batch sweep at 4096, a size sweep at 90%;
    ``points`` ("4096:0.9:1,4096:0.9:128") picks explicit ones."""
    if points:
        out = []
        for p in points.split(","):
            n, sp_, b = p.split(":")
            out.append((int(n), float(sp_), int(b)))
        return out
    if quick:
        return [(1024, 0.9, 1), (1024, 0.9, 32)]
    pts = []
    for s in (0.5, 0.75, 0.9, 0.95):
        pts += [(4096, s, 1), (4096, s, 128)]
    pts += [(4096, 0.9, b) for b in (8, 32)]
    sizes = (1024, 2048, 8192, 16384) if device == "cuda" else (1024, 2048, 8192)
    for n in sizes:
        pts += [(n, 0.9, 1), (n, 0.9, 128)]
    if device == "cpu":
        pts += [(16384, 0.9, 1)]
    return pts


def measure_bandwidth(mb: int = 512, threads: int = 2) -> float:
    """Read bandwidth of this machine (GB/s): best of a numpy sum and a numba parallel sum over ``mb`` MB."""
    from numba import njit, prange, set_num_threads

    @njit(parallel=True, fastmath=True)
    def psum(a):
        s = 0.0
        for i in prange(a.size):
            s += a[i]
        return s

    set_num_threads(threads)
    a = np.ones(mb * 1024 * 1024 // 4, dtype=np.float32)
    psum(a)
    best = 0.0
    for _ in range(5):
        t = time.perf_counter()
        psum(a)
        best = max(best, a.nbytes / (time.perf_counter() - t) / 1e9)
        t = time.perf_counter()
        a.sum()
        best = max(best, a.nbytes / (time.perf_counter() - t) / 1e9)
    return best


def _rows(times: dict[str, list[float]], bytes_of: dict[str, int], sparsity_of: dict[str, float], size, batch,
          target, bw: float, dense_names=("dense_torch", "dense_numpy")) -> list[dict]:
    med = {k: bench.summarize(v) for k, v in times.items()}
    best_dense = min(med[d]["median"] for d in dense_names if d in med)
    out = []
    for k, st in med.items():
        gbps = bytes_of[k] / st["median"] / 1e9
        out.append(dict(size=size, batch=batch, target=target, method=k, sparsity=round(sparsity_of[k], 4),
                        median_ms=st["median"] * 1e3, min_ms=st["min"] * 1e3, p95_ms=st["p95"] * 1e3, n=st["n"],
                        speedup_vs_dense=best_dense / st["median"], gbps=gbps, pct_bw=100 * gbps / bw if bw else None))
    return out


def _matrices(size: int, s: float, seed: int = 0, block: bool = True):
    """W (dense), W*balanced mask, its BalancedMatrix and W*block mask (None when ``block`` is False).
    Masks are computed in chunks of rows (a balanced mask is row-local) to bound the memory at 16384^2."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(size, size, generator=g)
    Wm = torch.empty_like(W)
    for r in range(0, size, 1024):
        Wm[r:r + 1024] = W[r:r + 1024] * balanced_mask(W[r:r + 1024], s, BANK)
    bm = _pack_chunks(W, s)
    Wb = W * block_mask(W, s, (4, 4)) if block else None
    return W, Wm, bm, Wb


def _pack_chunks(W: torch.Tensor, s: float) -> BalancedMatrix:
    parts = [BalancedMatrix.from_mask(W[r:r + 1024], balanced_mask(W[r:r + 1024], s, BANK), BANK)
             for r in range(0, W.shape[0], 1024)]
    return BalancedMatrix(torch.cat([p.values for p in parts]).contiguous(),
                          torch.cat([p.offsets for p in parts]).contiguous(), tuple(W.shape), BANK)


def run_cpu(args, log=print) -> list[dict]:
    import scipy.sparse as sp
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    import numba

    from workbench.sparse.kernels import cpu as cpu_kernels
    cpu_kernels._configure_numba()  # before measure_bandwidth's parallel sum starts a thread pool
    numba.set_num_threads(args.threads)
    bw = measure_bandwidth(threads=args.threads)
    log(f"measured read bandwidth {bw:.1f} GB/s")
    rows = []
    with threadpool_limits(limits=args.threads):
        for size, s, batch in grid(args.quick, "cpu", args.points):
            if size * size * 4 > args.max_dense_gb * 1e9:
                continue
            W, Wm, bm, Wb = _matrices(size, s, block=size < 16384)
            Wn = W.numpy()
            csr = sp.csr_matrix(Wm.numpy())
            tcsr = Wm.to_sparse_csr()
            bsr = sp.bsr_matrix(Wb.numpy(), blocksize=(4, 4)) if Wb is not None else None
            g = torch.Generator().manual_seed(1)
            x = torch.randn(size, generator=g) if batch == 1 else torch.randn(size, batch, generator=g)
            xn = x.numpy()
            fns = {
                "dense_torch": lambda: torch.mv(W, x) if batch == 1 else torch.mm(W, x),
                "dense_numpy": lambda: Wn @ xn,
                "csr_scipy": lambda: csr @ xn,
                "csr_torch": lambda: tcsr @ x,
                "bsr_scipy": lambda: bsr @ xn,
                "balanced": lambda: bm.matmul(x),
            }
            if size >= 16384:  # the slow baselines only where they finish in time
                fns = {k: fns[k] for k in ("dense_numpy", "dense_torch", "csr_scipy", "balanced")}
            ref = Wm.double() @ x.double()
            err = float((bm.matmul(x).double() - ref).abs().max())
            if err > 1e-3 * float(ref.abs().max()):
                raise RuntimeError(f"balanced kernel disagrees with dense by {err}")
            xb = x.numel() * 4
            yb = size * batch * 4
            bytes_of = {"dense_torch": W.numel() * 4 + xb + yb, "dense_numpy": W.numel() * 4 + xb + yb,
                        "csr_scipy": csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes + xb + yb,
                        "csr_torch": tcsr.values().numel() * 4 + tcsr.col_indices().numel() * 8
                        + tcsr.crow_indices().numel() * 8 + xb + yb,
                        "bsr_scipy": (bsr.data.nbytes + bsr.indices.nbytes + bsr.indptr.nbytes if bsr is not None
                                      else 0) + xb + yb,
                        "balanced": bm.nbytes + xb + yb}
            spars = {k: bm.sparsity for k in fns}
            spars.update(dense_torch=0.0, dense_numpy=0.0, bsr_scipy=1 - bsr.nnz / W.numel() if bsr is not None else 0.0)

            def setup():
                bench.flush_cache(64)
                time.sleep(args.settle)  # let spinning BLAS / OpenMP threads of the previous method go idle

            reps = args.repeats if size < 16384 else max(3, args.repeats // 2)
            times = bench.interleaved(fns, repeats=reps, warmup=1, setup=setup, max_seconds=args.max_seconds)
            # the same kernel timed on its own (caches still flushed): no other library's thread pool between
            # calls, so it shows the kernel without the wake-up latency the interleaved run adds on a shared machine
            times.update(bench.interleaved({"balanced_isolated": fns["balanced"]}, repeats=reps, warmup=1,
                                           setup=setup, max_seconds=args.max_seconds))
            bytes_of["balanced_isolated"], spars["balanced_isolated"] = bytes_of["balanced"], spars["balanced"]
            new = _rows(times, bytes_of, spars, size, batch, s, bw)
            rows += new
            b = next(r for r in new if r["method"] == "balanced")
            log(f"cpu {size}x{size} s={s} batch={batch}: balanced {b['median_ms']:.3f} ms, "
                f"{b['speedup_vs_dense']:.2f}x dense, {b['pct_bw']:.0f}% bw; "
                + ", ".join(f"{r['method']} {r['median_ms']:.3f}" for r in new if r["method"] != "balanced"))
    # under load the streaming measurement can read low: the bound is at least what dense BLAS achieved
    dense_bw = max((bytes_dense(r) / (r["min_ms"] / 1e3) / 1e9 for r in rows if r["method"] == "dense_numpy"),
                   default=0.0)
    if dense_bw > bw:
        log(f"bandwidth raised to {dense_bw:.1f} GB/s (best dense matrix-vector run)")
        bw = dense_bw
    for r in rows:
        r["bandwidth_gbps"] = bw
        r["pct_bw"] = 100 * r["gbps"] / bw
    return rows


def bytes_dense(r: dict) -> float:
    return r["size"] * r["size"] * 4 + r["size"] * r["batch"] * 8


def run_gpu(args, log=print) -> list[dict]:
    import cupy
    import cupyx.scipy.sparse as csp

    from workbench.sparse.kernels import gpu

    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(0)
    flushbuf = gpu.flush_l2(mb=256)
    # device bandwidth: a large device-to-device copy (read + write)
    a = torch.empty(1 << 28, dtype=torch.float32, device=dev)
    b = torch.empty_like(a)
    b.copy_(a)
    torch.cuda.synchronize()
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = 0.0
    for _ in range(5):
        e0.record()
        b.copy_(a)
        e1.record()
        torch.cuda.synchronize()
        best = max(best, 2 * a.numel() * 4 / (e0.elapsed_time(e1) / 1e3) / 1e9)
    bw = best
    del a, b
    log(f"{name}: copy bandwidth {bw:.0f} GB/s")
    rows = []
    for size, s, batch in grid(args.quick, "cuda", args.points):
        W, Wm, bm, Wb = _matrices(size, s)
        Wc, Wh = W.to(dev), W.to(dev).half()
        bmc, bmh = bm.to(dev), bm.to(dev, torch.float16)
        csr = csp.csr_matrix(cupy.from_dlpack(Wm.to(dev)))
        try:
            tbsr = Wb.to(dev).to_sparse_bsr((4, 4))
        except Exception:  # pragma: no cover - depends on the torch build
            tbsr = None
        g = torch.Generator().manual_seed(1)
        x = (torch.randn(size, generator=g) if batch == 1 else torch.randn(size, batch, generator=g)).to(dev)
        xh = x.half()
        xcp = cupy.from_dlpack(x)
        fns = {
            "cublas_fp32": lambda: torch.mv(Wc, x) if batch == 1 else torch.mm(Wc, x),
            "cublas_fp16": lambda: torch.mv(Wh, xh) if batch == 1 else torch.mm(Wh, xh),
            "cusparse_csr": lambda: csr @ xcp,
            "balanced_fp32": lambda: bmc.matmul(x),
            "balanced_fp16": lambda: bmh.matmul(xh),
        }
        if tbsr is not None:
            fns["bsr_torch"] = lambda: tbsr @ (x if batch > 1 else x[:, None])
        ref = Wm.to(dev).double() @ x.double()
        err = float((bmc.matmul(x).double() - ref).abs().max())
        if err > 1e-3 * float(ref.abs().max()):
            raise RuntimeError(f"balanced GPU kernel disagrees with dense by {err}")
        times = {k: [] for k in fns}
        for f in fns.values():  # warm-up (compiles, cuSPARSE analysis)
            f()
        torch.cuda.synchronize()
        for r in range(args.repeats):
            order = list(fns) if r % 2 == 0 else list(fns)[::-1]
            for k in order:
                gpu.flush_l2(flushbuf)
                e0.record()
                fns[k]()
                e1.record()
                torch.cuda.synchronize()
                times[k].append(e0.elapsed_time(e1) / 1e3)
        xb, yb = x.numel() * 4, size * batch * 4
        bytes_of = {"cublas_fp32": W.numel() * 4 + xb + yb, "cublas_fp16": W.numel() * 2 + (xb + yb) // 2,
                    "cusparse_csr": int(csr.data.nbytes + csr.indices.nbytes + csr.indptr.nbytes) + xb + yb,
                    "balanced_fp32": bm.nbytes + xb + yb,
                    "balanced_fp16": bmh.nbytes + (xb + yb) // 2,
                    "bsr_torch": int(Wb.count_nonzero()) * 4 + xb + yb}
        spars = {k: bm.sparsity for k in fns}
        spars.update(cublas_fp32=0.0, cublas_fp16=0.0, bsr_torch=float(1 - Wb.count_nonzero() / W.numel()))
        new = _rows(times, bytes_of, spars, size, batch, s, bw, dense_names=("cublas_fp32",))
        for r in new:
            r["device"] = name
            r["speedup_vs_cusparse"] = (next(q["median_ms"] for q in new if q["method"] == "cusparse_csr")
                                        / r["median_ms"])
        rows += new
        bal = next(r for r in new if r["method"] == "balanced_fp32")
        log(f"gpu {size} s={s} batch={batch}: balanced {bal['median_ms'] * 1e3:.1f} us, "
            f"{bal['speedup_vs_dense']:.2f}x cuBLAS, {bal['speedup_vs_cusparse']:.2f}x cuSPARSE")
        del Wc, Wh, bmc, bmh, csr, tbsr
        torch.cuda.empty_cache()
    for r in rows:
        r["bandwidth_gbps"] = bw
    return rows


def cpu_notes(rows: list[dict], args) -> str:
    def pick(size, batch, s, method):
        return next((r for r in rows if r["size"] == size and r["batch"] == batch and r["target"] == s
                     and r["method"] == method), None)
    lines = [f"Threads: {args.threads}; bank {BANK}; {args.repeats} interleaved repetitions, medians; 64 MB cache "
             f"flush and {args.settle:.2f} s settle before each call. speedup_vs_dense = best dense median / "
             "method median; pct_bw = achieved GB/s over the measured read bandwidth."]
    lines.append("balanced_isolated: the balanced kernel timed alone right after (same flush): on this shared "
                 "2-core machine a thread pool that has gone idle pays the scheduler's wake-up latency when another "
                 "library's pool ran just before, which the interleaved row includes.")
    b1, b128 = pick(4096, 1, 0.9, "balanced"), pick(4096, 128, 0.9, "balanced")
    if b1:
        csr = pick(4096, 1, 0.9, "csr_scipy")
        lines.append(f"Goal check, 4096x4096 fp32, 90% (k=6 of 64), batch 1: {b1['speedup_vs_dense']:.2f}x best dense "
                     f"(goal >= 3, target 5), {csr['median_ms'] / b1['median_ms']:.2f}x scipy CSR (goal >= 2), "
                     f"{b1['pct_bw']:.0f}% of bandwidth (target 60%).")
        iso = pick(4096, 1, 0.9, "balanced_isolated")
        lines.append(f"Isolated kernel, batch 1: {iso['speedup_vs_dense']:.2f}x best dense, "
                     f"{csr['median_ms'] / iso['median_ms']:.2f}x scipy CSR, {iso['pct_bw']:.0f}% of bandwidth.")
    if b128:
        tc = pick(4096, 128, 0.9, "csr_torch")
        iso = pick(4096, 128, 0.9, "balanced_isolated")
        lines.append(f"Batch 128: {b128['speedup_vs_dense']:.2f}x best dense (goal >= 2, target 3), "
                     f"{tc['median_ms'] / b128['median_ms']:.2f}x torch CSR (goal >= 1.0, target 1.5); isolated "
                     f"{iso['speedup_vs_dense']:.2f}x dense, {tc['median_ms'] / iso['median_ms']:.2f}x torch CSR.")
    return "\n\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="workbench bench sparse", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda", "all"), default="all")
    p.add_argument("--quick", action="store_true", help="two tiny points (smoke test)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--points", default=None, help="explicit size:sparsity:batch points, comma-separated; results "
                   "go to sparse_goal.* (the speed-goal check, rerun when the machine is quiet)")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--settle", type=float, default=0.0,
                   help="sleep before each call (s); on a loaded machine a sleep lets idle pool threads fall asleep "
                        "and pay the scheduling latency on wake-up, so 0 by default")
    p.add_argument("--max-seconds", type=float, default=60.0)
    p.add_argument("--max-dense-gb", type=float, default=1.1)
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = p.parse_args(argv)
    if args.device in ("cpu", "all"):
        load0 = os.getloadavg()[0]
        rows = run_cpu(args)
        info = bench.machine_info()
        info["load_avg_1m_before"] = load0
        info["threads"] = args.threads
        info["torch_threads"] = args.threads
        name = "sparse" + ("_quick" if args.quick else "") + ("_goal" if args.points else "") \
            + ("" if args.threads == 2 else f"_{args.threads}thread")
        bench.write_results(name, rows, title="Balanced sparsity: CPU SpMV / SpMM",
                            columns=COLUMNS, notes=cpu_notes(rows, args), out_dir=args.out, info=info)
    if args.device in ("cuda", "all"):
        from workbench.sparse.kernels import gpu
        if not gpu.available():
            print("no CUDA device visible to CuPy: GPU benchmark skipped")
            return
        rows = run_gpu(args)
        bench.write_results("sparse_gpu" if not args.quick else "sparse_gpu_quick", rows,
                            title="Balanced sparsity: GPU SpMV / SpMM", columns=COLUMNS + ["speedup_vs_cusparse", "device"],
                            notes="CUDA-event timing, L2 flushed (256 MB write) before every call, interleaved; "
                                  "speedup_vs_dense is against cuBLAS fp32.", out_dir=args.out)


if __name__ == "__main__":
    main()
