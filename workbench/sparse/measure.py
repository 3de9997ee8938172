"""Measurements and records behind the Balanced Sparsity notebook and dashboard.

Plain dicts / lists of dicts, ready to tabulate or plot:

* ``kernel_status``: which CPU kernel implementation runs (C++ or the numba fallback) and why, its SIMD level;
* ``bandwidth``: this machine's read bandwidth (GB/s), the bound of a batch-1 product;
* ``micro_speedup``: y = W x at one size / sparsity / batch — dense (torch, numpy), scipy CSR, torch CSR, balanced —
  with the speedups, the achieved GB/s and the fraction of the bandwidth bound;
* ``model_speedup``: a whole model, dense vs ``sparsify_``'d ("mlp": three 4096x4096 Linear layers with GELU;
  "lstm": the paper's 2-layer PTB LSTM, hidden 1500, 16 steps), with which path every layer ran and why;
* ``crossover_map``: the dispatcher's measured table (speedup of the sparse kernel over ``F.linear`` by size, batch,
  sparsity) as records;
* ``live_speed``: the dashboard's bounded live sweep (``method="model"`` adds the in-model speedup of a 3-layer
  MLP of the chosen size next to the kernel ones);
* ``masks_for`` / ``load_balance``: every pruning pattern of one weight and its per-bank / per-row counts;
* readers of the committed records: CPU/GPU benchmark rows and the accuracy study.

Timings follow :mod:`workbench.sparse.timing` (blocks after a pause, shuffled rounds, medians). None of these is a
test: speed is only judged by ``workbench bench sparse``.
"""
from __future__ import annotations

import math
import os
import time

import numpy as np
import torch

from workbench import bench
from workbench.checkpoints import load_demo
from workbench.records import read_jsonl, studies_dir
from workbench.sparse import dispatch, prune
from workbench.sparse.formats import BalancedMatrix
from workbench.sparse.kernels import cpp as _cpp
from workbench.sparse.kernels import cpu
from workbench.sparse.nn import BalancedSparseLinear, SparsifyConfig, masked_dense_, path_report, sparsify_
from workbench.sparse.timing import timed_blocks

LIVE_MAX_SIZE = 2048
LIVE_MAX_BATCH = 128
LIVE_METHODS = ("dense", "csr", "block", "balanced", "model")
PATTERN_METHODS = ("unstructured", "balanced", "block", "vector", "nm")
DEMO_COMMAND = "workbench train sparse-demo --save-demo"


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
    ``balanced`` rows also say which path the dispatcher would take (``path``, ``reason``); ``model`` rows are the
    in-model speedup of a 3-layer MLP (size x size Linear + GELU) at that batch, dense vs ``sparsify_``
    (dispatch "auto": layers the table says would lose run dense, so the model speedup stays >= ~1).

    ``progress(fraction, text)`` is called after every sparsity (the app's progress bar)."""
    import scipy.sparse as sp

    size, batch, bank_size = int(size), int(batch), int(bank_size)
    _check_live(size, batch, bank_size, sparsities)
    unknown = set(methods) - set(LIVE_METHODS)
    if unknown or not methods:
        raise ValueError(f"methods must be chosen from {LIVE_METHODS}, got {list(methods)}")
    if not _cpp.ready():   # the first product of the process builds the C++ kernels: say so, then build them
        if progress is not None:
            progress(0.0, "building the C++ kernels (first use only, about half a minute)")
        cpu.library()
        _cpp.call_binding()
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
                fns["balanced"] = lambda bm=bm: bm.matmul(x)  # on torch's pool, set to `threads` above
            t = bench.interleaved(fns, repeats=repeats, warmup=1, setup=lambda: bench.flush_cache(16)) if fns else {}
            if "dense" in methods:
                rows.append(dict(sparsity=s, method="dense", median_ms=dense * 1e3, speedup=1.0))
            for k, v in t.items():
                med = bench.summarize(v)["median"]
                row = dict(sparsity=s, method=k, median_ms=med * 1e3, speedup=dense / med)
                if k == "balanced":
                    d = dispatch.decide(size, size, bm.sparsity, batch, bank_size=bank_size)
                    row.update(path=d.path, reason=d.reason)
                rows.append(row)
            if "model" in methods:
                m = model_speedup("mlp", sparsity=s, bank_size=bank_size, size=size, batch=batch, threads=threads,
                                  rounds=max(2, repeats // 2), block=2, settle=0.05, flush_mb=16, layers=3,
                                  seed=seed)
                rows.append(dict(sparsity=s, method="model", median_ms=m["sparse_ms"], speedup=m["speedup"],
                                 dense_ms=m["dense_ms"], path=", ".join(sorted({p["path"] for p in m["paths"]})),
                                 reason=m["paths"][0]["reason"]))
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
    ck = load_demo("sparse_swin", DEMO_COMMAND)
    ex = ck.extra.get("dense_examples") or {}
    if not ex:
        raise ValueError(f"the demo checkpoint has no dense example weights; rerun `{DEMO_COMMAND}`")
    key = name if name in ex else sorted(ex)[0]
    return key, ex[key].float()


def cpu_results() -> dict:
    """The committed CPU benchmark (2 threads: ``sparse``; else the 1-thread run ``sparse_1thread``)."""
    for name in ("sparse", "sparse_1thread"):
        try:
            return bench.load_results(name)
        except FileNotFoundError:
            continue
    raise FileNotFoundError("no committed CPU benchmark results; run `workbench bench sparse`")


def cpu_records() -> list[dict]:
    try:
        return cpu_results()["rows"]
    except FileNotFoundError:
        return []


def gpu_records() -> list[dict]:
    try:
        return bench.load_results("sparse_gpu")["rows"]
    except FileNotFoundError:
        return []


def accuracy_records() -> list[dict]:
    """The committed accuracy study (``workbench train sparse-study --commit``): protocol records, one per task and
    seed, metrics ``dense`` and ``<method>@<sparsity>``."""
    path = studies_dir("sparse") / "records.jsonl"  # a protocol study's records (workbench.studies.protocol.Study)
    return read_jsonl(path) if path.exists() else []


# ---------------------------------------------------------------------------------------------------------------
# kernels, bandwidth, micro and in-model speedups, crossover map (plain records for the notebook and the dashboard)
def kernel_status() -> dict:
    """``{backend: "cpp" | "numba", reason, avx2, avx512, kernels: {batch: kernel}, threads, build_dir, call}`` —
    builds the C++ kernels on first call (seconds), falls back to numba with the reason recorded; ``call``: "cpp"
    where small-batch products are one C++ call (``kernels.cpp.call_binding``), else "python"."""
    st = dict(cpu.backend())
    st["call"] = "cpp" if _cpp.call_binding() is not None else "python"
    st["kernels"] = {n: cpu.kernel_for(n, torch.float32, 64) for n in (1, 4, 16, 128)}
    st["threads"] = torch.get_num_threads()
    st.pop("log", None)
    return st


_BW: dict = {}


def bandwidth(mb: int = 256, threads: int | None = None, *, refresh: bool = False) -> float:
    """Read bandwidth of this machine in GB/s: the best of repeated numpy sums and numba parallel sums over ``mb``
    MB (cached per process). The bound of a batch-1 product is bytes moved / this."""
    threads = int(threads or torch.get_num_threads())
    key = (mb, threads)
    if key in _BW and not refresh:
        return _BW[key]
    a = np.ones(mb * 1024 * 1024 // 4, dtype=np.float32)
    best = 0.0
    try:
        import numba
        from numba import njit, prange

        @njit(parallel=True, fastmath=True, cache=False)
        def psum(v):
            s = 0.0
            for i in prange(v.size):
                s += v[i]
            return s

        old = numba.get_num_threads()
        numba.set_num_threads(max(1, min(threads, numba.config.NUMBA_NUM_THREADS)))
        psum(a)
        try:
            for _ in range(5):
                t = time.perf_counter()
                psum(a)
                best = max(best, a.nbytes / (time.perf_counter() - t) / 1e9)
        finally:
            numba.set_num_threads(old)
    except ImportError:  # pragma: no cover - numba is a dependency
        pass
    for _ in range(5):
        t = time.perf_counter()
        a.sum()
        best = max(best, a.nbytes / (time.perf_counter() - t) / 1e9)
    _BW[key] = best
    return best


def micro_speedup(size: int = 4096, sparsity: float = 0.9, batch: int = 1, bank_size: int = 64, *,
                  threads: int = 2, methods=("dense_torch", "dense_numpy", "csr_scipy", "csr_torch", "balanced"),
                  rounds: int = 5, block: int = 5, settle: float = 0.3, flush_mb: int = 64, seed: int = 0,
                  bandwidth_gbps: float | None = None) -> dict:
    """y = W x (W size x size, balanced at ``sparsity``, bank ``bank_size``; x (size, batch)) per method, timed in
    blocks after a pause, shuffled rounds, caches flushed before each call; medians.

    Returns ``{size, batch, sparsity (realized), kernel, backend, threads, times_ms: {method: median},
    best_dense, speedup_vs_dense, speedup_vs_csr_scipy, speedup_vs_csr_torch, bytes, gbps, bandwidth_gbps, pct_bw,
    load_avg_1m}``; ``pct_bw`` is the balanced kernel's achieved GB/s over the read bandwidth."""
    import scipy.sparse as sp
    from threadpoolctl import threadpool_limits

    size, batch, bank_size = int(size), int(batch), int(bank_size)
    if size < bank_size or size % bank_size:
        raise ValueError(f"size must be a multiple of the bank size {bank_size}, got {size}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    unknown = set(methods) - {"dense_torch", "dense_numpy", "csr_scipy", "csr_torch", "balanced"}
    if unknown or "balanced" not in methods:
        raise ValueError(f"unknown methods {sorted(unknown)} (balanced must be included)")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    try:
        g = torch.Generator().manual_seed(seed)
        W = torch.randn(size, size, generator=g)
        mask = torch.cat([prune.balanced_mask(W[r:r + 1024], sparsity, bank_size) for r in range(0, size, 1024)])
        bm = BalancedMatrix.from_mask(W, mask, bank_size)
        Wm = W * mask
        x = torch.randn(size, generator=g) if batch == 1 else torch.randn(size, batch, generator=g)
        Wn, xn = W.numpy(), x.numpy()
        fns = {}
        if "dense_torch" in methods:
            fns["dense_torch"] = (lambda: torch.mv(W, x)) if batch == 1 else (lambda: torch.mm(W, x))
        if "dense_numpy" in methods:
            fns["dense_numpy"] = lambda: Wn @ xn
        if "csr_scipy" in methods:
            csr = sp.csr_matrix(Wm.numpy())
            fns["csr_scipy"] = lambda: csr @ xn
        if "csr_torch" in methods:
            tcsr = Wm.to_sparse_csr()
            fns["csr_torch"] = lambda: tcsr @ x
        kernel = cpu.kernel_for(batch, bm.dtype, bank_size)
        fns["balanced"] = lambda: bm.matmul(x)  # the tile layout (if used) is built by this first call, untimed
        ref = Wm.double() @ x.double()
        err = float((bm.matmul(x).double() - ref).abs().max())
        if err > 1e-3 * float(ref.abs().max()):
            raise RuntimeError(f"the balanced kernel disagrees with the dense product by {err}")
        with threadpool_limits(limits=threads):
            t = timed_blocks(fns, rounds=rounds, block=block, settle=settle,
                             setup=(lambda: bench.flush_cache(flush_mb)) if flush_mb else None)
    finally:
        torch.set_num_threads(old)
    med = {k: float(np.median(v)) * 1e3 for k, v in t.items()}
    dense = {k: v for k, v in med.items() if k.startswith("dense")}
    best = min(dense, key=dense.get) if dense else None
    nbytes = bm.nbytes + x.numel() * 4 + size * batch * 4
    gbps = nbytes / (med["balanced"] / 1e3) / 1e9
    bw = float(bandwidth_gbps or bandwidth(threads=threads))
    return dict(size=size, batch=batch, sparsity=bm.sparsity, bank_size=bank_size, kernel=kernel,
                backend=cpu.backend()["backend"], threads=threads, times_ms=med, samples=len(t["balanced"]),
                best_dense=best, speedup_vs_dense=(dense[best] / med["balanced"]) if best else None,
                speedup_vs_csr_scipy=med["csr_scipy"] / med["balanced"] if "csr_scipy" in med else None,
                speedup_vs_csr_torch=med["csr_torch"] / med["balanced"] if "csr_torch" in med else None,
                bytes=nbytes, gbps=gbps, bandwidth_gbps=bw, pct_bw=100 * gbps / bw, load_avg_1m=load0)


class MLP(torch.nn.Module):
    """The issue's MLP: ``layers`` size x size Linear layers with GELU between them."""

    def __init__(self, size: int = 4096, layers: int = 3):
        super().__init__()
        mods = []
        for i in range(layers):
            mods.append(torch.nn.Linear(size, size))
            if i < layers - 1:
                mods.append(torch.nn.GELU())
        self.net = torch.nn.Sequential(*mods)

    def forward(self, x):
        return self.net(x)


class LSTMModel(torch.nn.Module):
    """The paper's PTB language model body: a 2-layer LSTM, hidden 1500 (input 1500), over (steps, batch, 1500)."""

    def __init__(self, hidden: int = 1500, layers: int = 2):
        super().__init__()
        self.lstm = torch.nn.LSTM(hidden, hidden, num_layers=layers)

    def forward(self, x):
        return self.lstm(x)[0]


def model_speedup(kind: str = "mlp", sparsity: float = 0.9, bank_size: int = 64, *, size: int | None = None,
                  batch: int = 1, steps: int = 16, layers: int | None = None, threads: int = 2, rounds: int = 5,
                  block: int = 3, settle: float = 0.3, flush_mb: int = 64, dispatch: str = "auto",
                  seed: int = 0) -> dict:
    """A whole model at batch ``batch``: dense (the same balanced masks applied to its dense weights) vs
    ``sparsify_`` (``dispatch``), timed in one process in blocks after a pause, shuffled rounds, medians.
    ``kind``: "mlp" (``layers`` x Linear(size, size) + GELU; default 3 x 4096) or "lstm" (2-layer LSTM, hidden
    ``size`` (default 1500), ``steps`` time steps). Returns ``{kind, size, batch, sparsity, dense_ms, sparse_ms,
    speedup, max_abs_err, paths: [per layer: path, kernel, reason, ...], threads, load_avg_1m}``."""
    import copy

    if kind not in ("mlp", "lstm"):
        raise ValueError(f"kind must be 'mlp' or 'lstm', got {kind!r}")
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    load0 = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    try:
        torch.manual_seed(seed)
        if kind == "mlp":
            size = int(size or 4096)
            model = MLP(size, int(layers or 3)).eval()
            x = torch.randn(batch, size)
        else:
            size = int(size or 1500)
            model = LSTMModel(size, int(layers or 2)).eval()
            x = torch.randn(steps, batch, size)
        cfg = SparsifyConfig(sparsity=sparsity, bank_size=bank_size, dispatch=dispatch)
        dense = copy.deepcopy(model)
        masked_dense_(dense, cfg)
        sparse = model
        sparsify_(sparse, cfg)
        with torch.no_grad():
            err = float((sparse(x) - dense(x)).abs().max())
            t = timed_blocks({"dense": lambda: dense(x), "sparse": lambda: sparse(x)}, rounds=rounds, block=block,
                             settle=settle, setup=(lambda: bench.flush_cache(flush_mb)) if flush_mb else None)
    finally:
        torch.set_num_threads(old)
    d, s = float(np.median(t["dense"])) * 1e3, float(np.median(t["sparse"])) * 1e3
    paths = path_report(sparse)
    return dict(kind=kind, size=size, batch=batch, steps=steps if kind == "lstm" else None,
                sparsity=float(np.mean([p["sparsity"] for p in paths])), bank_size=bank_size, dense_ms=d,
                sparse_ms=s, speedup=d / s, max_abs_err=err, paths=paths, threads=threads, dispatch=dispatch,
                samples=len(t["sparse"]), load_avg_1m=load0)


def crossover_map(device: str = "cpu") -> dict:
    """The dispatcher's crossover table: ``{source, threads, backend, gpu, machine, records: [{size, batch, sparsity,
    speedup, path, dense_ms, sparse_ms}]}`` (empty records when no table exists for ``device``)."""
    t = dispatch.load_table(device)
    if t is None:
        return dict(source=None, records=[], device=device)
    return dict(source=t["source"], device=device, threads=t.get("threads"), backend=t.get("backend"),
                gpu=t.get("gpu"), bank_size=t.get("bank_size"), machine=t.get("machine"),
                load_avg_1m=t.get("load_avg_1m"), margin=dispatch.MARGIN, other_gpu_margin=dispatch.BACKEND_MARGIN,
                records=dispatch.crossover_records(t))


def crossover_table_cpu(**kwargs) -> dict:
    """The CPU crossover table (:func:`~workbench.sparse.dispatch.measure_table`, same arguments) timed on layers: a
    dense ``nn.Linear`` against :class:`~workbench.sparse.nn.BalancedSparseLinear` forced onto the sparse path (fp32,
    bias), so that what the dispatcher compares is what ``sparsify_`` would run - at small batches the layer's
    one-call Runner. No autograd (``torch.no_grad``), as at inference."""
    def dense(W, bias):
        lin = torch.nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            lin.weight.copy_(W)
            lin.bias.copy_(bias)
        return lin

    def sparse(bm, bias):
        return BalancedSparseLinear(bm, bias, dispatch="sparse")

    with torch.no_grad():
        return dispatch.measure_table(layers=(dense, sparse), **kwargs)


def crossover_table_cuda(sizes=(256, 512, 1024, 2048, 4096, 8192), batches=(1, 4, 16, 64, 256),
                       sparsities=(0.25, 0.5, 0.75, 0.875, 0.90625, 0.953125), *, bank_size: int = 64,
                       rounds: int = 5, calls: int = 10, log=None) -> dict:
    """Measure the crossover table on the current CUDA device: for every (size, batch), a dense ``nn.Linear`` and a
    :class:`~workbench.sparse.nn.BalancedSparseLinear` forced onto the sparse path at every sparsity (fp32, bias,
    the layer's own transposes), each timed as ``calls`` forwards in a row between CUDA events — the host enqueues
    while the GPU works, as in a model run eagerly, so a layer whose kernel is shorter than its Python is timed at
    its Python's pace, for both paths alike — in ``rounds`` interleaved rounds, medians. Sparsities are realized
    ones. The table names the GPU; :func:`~workbench.sparse.dispatch.decide` widens the margin on any other. (Here,
    not in ``dispatch``, which must not import the modules it serves.)"""
    realized = [1 - prune.kept_per_bank(s, bank_size) / bank_size for s in sparsities]
    if len(set(realized)) != len(realized):
        raise ValueError(f"sparsities {sparsities} collide at bank {bank_size} (realized {realized})")
    dev = torch.device("cuda")
    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    g = torch.Generator().manual_seed(0)
    speed = [[[None] * len(realized) for _ in batches] for _ in sizes]
    dense_ms = [[None] * len(batches) for _ in sizes]
    sparse_ms = [[[None] * len(realized) for _ in batches] for _ in sizes]
    t_start = time.perf_counter()
    with torch.no_grad():
        for i, size in enumerate(sizes):
            dense = torch.nn.Linear(size, size).to(dev)
            W = dense.weight.detach().cpu()
            layers = [BalancedSparseLinear(BalancedMatrix.from_mask(W, prune.balanced_mask(W, s, bank_size), bank_size),
                                           dense.bias, dispatch="sparse").to(dev) for s in realized]
            for j, n in enumerate(batches):
                x = torch.randn(n, size, generator=g).to(dev)
                fns = {"dense": dense, **dict(enumerate(layers))}
                times: dict = {k: [] for k in fns}
                for f in fns.values():  # warm-up: compiles, plans
                    f(x)
                torch.cuda.synchronize()
                for _ in range(rounds):
                    for key, f in fns.items():
                        e0.record()
                        for _ in range(calls):
                            f(x)
                        e1.record()
                        torch.cuda.synchronize()
                        times[key].append(e0.elapsed_time(e1) / calls)
                med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
                dense_ms[i][j] = med["dense"]
                for q in range(len(realized)):
                    sparse_ms[i][j][q] = med[q]
                    speed[i][j][q] = med["dense"] / med[q]
                if log:
                    log(f"cuda crossover {size}^2 batch {n}: dense {med['dense']:.4f} ms; speedups "
                        + ", ".join(f"{s:.3f}: {speed[i][j][q]:.2f}x" for q, s in enumerate(realized)))
            del dense, layers
            torch.cuda.empty_cache()
    return {"device": "cuda", "gpu": torch.cuda.get_device_name(), "bank_size": bank_size, "sizes": list(sizes),
            "batches": list(batches), "sparsities": realized, "speedup": speed, "dense_ms": dense_ms,
            "sparse_ms": sparse_ms, "rounds": rounds, "calls": calls, "torch": torch.__version__,
            "seconds": round(time.perf_counter() - t_start, 1)}


def decision(rows: int, cols: int, sparsity: float, batch: int, *, bank_size: int = 64,
             device: str = "cpu") -> dict:
    """Which path a balanced layer of this shape would take, and why (the dispatcher's decision as a dict)."""
    return dispatch.decide(rows, cols, sparsity, batch, device=device, bank_size=bank_size).as_dict()
