"""Dense or sparse? The dispatcher behind ``BalancedSparseLinear`` (Balanced Sparsity, Yao et al., AAAI 2019).

A balanced-sparse product only pays when the saved bytes / FLOPs outweigh its overheads: small matrices, low
sparsity and large batches can make it slower than the dense BLAS call it replaces. The dispatcher predicts the
speedup of the sparse kernel over ``torch.nn.functional.linear`` from a **measured crossover table** (speedup =
dense time / sparse time on a grid of matrix sizes, batch sizes and sparsities, timed as a Linear layer runs them —
transposes and bias included) and picks the dense path unless the prediction is at least :data:`MARGIN`. So
``sparsify_`` never makes a layer slower than the table's measurement says it would be.

Tables: ``crossover.json`` next to this file (measured on the development machine, shipped with the package), or
a table measured on this machine (``workbench bench sparse --crossover [--device cuda]`` writes
``$WORKBENCH_CACHE/sparse_crossover_<device>.json``), which takes precedence. The packaged GPU table,
``crossover_cuda.json``, was measured on the GPU it names; on another GPU its predictions need the wider margin
:data:`BACKEND_MARGIN`, and without any table the dense path is chosen on CUDA.

Prediction: multilinear interpolation of log(speedup) over (log2 size, log2 batch, sparsity), where
size = sqrt(rows * cols). Outside the grid: batch and size above the largest measured are clamped (noted in the
reason); sizes or sparsities below the smallest measured choose dense (overheads dominate there).

The paper has no dispatcher: it reports speedups where balanced sparsity wins; this is what a library needs so that
pruning never costs time.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from workbench import bench
from workbench.data.cache import cache_root as data_cache_root
from workbench.sparse.timing import timed_blocks

MARGIN = 1.1          # predicted speedup needed to choose the sparse path
BACKEND_MARGIN = 2.0  # ... when the running kernel backend is not the one the table was measured with
PACKAGED = Path(__file__).with_name("crossover.json")
PACKAGED_CUDA = Path(__file__).with_name("crossover_cuda.json")  # measured on the GPU it names ("gpu")
_TABLES: dict = {}


def cache_root() -> Path:
    return data_cache_root()


def user_table_path(device: str = "cpu") -> Path:
    return cache_root() / f"sparse_crossover_{device}.json"


def _validate_table(t: dict) -> dict:
    for key in ("sizes", "batches", "sparsities", "speedup"):
        if key not in t:
            raise ValueError(f"crossover table lacks {key!r}")
    S, N, P = len(t["sizes"]), len(t["batches"]), len(t["sparsities"])
    sp = t["speedup"]
    if len(sp) != S or any(len(a) != N for a in sp) or any(len(b) != P for a in sp for b in a):
        raise ValueError("crossover table: speedup must be [sizes][batches][sparsities]")
    for axis in ("sizes", "batches", "sparsities"):
        if list(t[axis]) != sorted(t[axis]) or len(set(t[axis])) != len(t[axis]):
            raise ValueError(f"crossover table: {axis} must be strictly increasing")
    return t


def load_table(device: str = "cpu", *, refresh: bool = False) -> dict | None:
    """The crossover table for ``device`` ("cpu" | "cuda"): this machine's measurement if there is one, else the
    packaged one, else None. Adds ``"source"`` (the file)."""
    if device in _TABLES and not refresh:
        return _TABLES[device]
    t = None
    for path in (user_table_path(device), {"cpu": PACKAGED, "cuda": PACKAGED_CUDA}.get(device)):
        if path is not None and path.exists():
            t = _validate_table(json.loads(path.read_text()))
            t["source"] = str(path)
            break
    _TABLES[device] = t
    return t


def clear_cache() -> None:
    _TABLES.clear()


def _interp_axis(grid: list[float], v: float) -> tuple[int, int, float]:
    """Indices (i, j) and weight w of v between grid[i] and grid[j] (clamped)."""
    if v <= grid[0]:
        return 0, 0, 0.0
    if v >= grid[-1]:
        return len(grid) - 1, len(grid) - 1, 0.0
    j = next(i for i, g in enumerate(grid) if g >= v)
    i = j - 1
    return i, j, (v - grid[i]) / (grid[j] - grid[i])


def predict(table: dict, rows: int, cols: int, sparsity: float, batch: int) -> float:
    """Predicted speedup (dense time / sparse time) by multilinear interpolation of log(speedup)."""
    size = math.sqrt(rows * cols)
    ax = [_interp_axis([math.log2(s) for s in table["sizes"]], math.log2(size)),
          _interp_axis([math.log2(b) for b in table["batches"]], math.log2(max(1, batch))),
          _interp_axis(list(table["sparsities"]), sparsity)]
    sp = table["speedup"]
    acc = 0.0
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                w = ((ax[0][2] if a else 1 - ax[0][2]) * (ax[1][2] if b else 1 - ax[1][2])
                     * (ax[2][2] if c else 1 - ax[2][2]))
                if w == 0.0:
                    continue
                v = sp[ax[0][a]][ax[1][b]][ax[2][c]]
                acc += w * math.log(max(v, 1e-6))
    return math.exp(acc)


@dataclass(frozen=True)
class Decision:
    path: str                      # "sparse" | "dense"
    reason: str
    predicted_speedup: float | None
    table: str | None              # the table's file, if one was used

    def as_dict(self) -> dict:
        return asdict(self)


def decide(rows: int, cols: int, sparsity: float, batch: int, *, device: str = "cpu", bank_size: int = 64,
           backend: str | None = None) -> Decision:
    """Sparse or dense for one product of a (rows x cols) balanced matrix at ``sparsity`` with ``batch`` columns.
    ``backend``: the CPU kernel implementation that would run ("cpp" / "numba"; None: ask the kernels)."""
    where = f"{rows}x{cols}, batch {batch}, {100 * sparsity:.1f}% sparse"
    table = load_table(device)
    if table is None:
        return Decision("dense", f"dense: no {device.upper()} crossover table measured yet "
                                 f"(`workbench bench sparse --crossover --device {device}`); {where}", None, None)
    src = Path(table["source"]).name
    size = math.sqrt(rows * cols)
    if size < table["sizes"][0]:
        return Decision("dense", f"dense: {where} is below the smallest measured size {table['sizes'][0]}^2 "
                                 "(call overheads dominate)", None, src)
    if sparsity < table["sparsities"][0] - 1e-9:
        return Decision("dense", f"dense: {where} is below the smallest measured sparsity "
                                 f"{table['sparsities'][0]:.3f}", None, src)
    p = predict(table, rows, cols, sparsity, batch)
    notes = []
    if size > table["sizes"][-1]:
        notes.append(f"size beyond the measured {table['sizes'][-1]}^2")
    if batch > table["batches"][-1]:
        notes.append(f"batch beyond the measured {table['batches'][-1]}")
    if bank_size != table.get("bank_size", bank_size):
        notes.append(f"table measured at bank {table['bank_size']}")
    margin = MARGIN
    if device == "cpu":
        if backend is None:
            from workbench.sparse.kernels import cpu  # local: keeps torch out of the dispatcher's import
            backend = cpu.backend()["backend"]
        if backend != table.get("backend", backend):
            margin = BACKEND_MARGIN
            notes.append(f"running the {backend} kernels, table measured with {table['backend']}: margin {margin}x")
        elif table.get("kernels"):
            other = kernel_mismatch(table, batch, bank_size)
            if other:
                margin = BACKEND_MARGIN
                notes.append(f"{other}: margin {margin}x")
    elif device == "cuda" and table.get("gpu"):
        here = _gpu_name()
        if here != table["gpu"]:
            margin = BACKEND_MARGIN
            notes.append(f"running on {here}, table measured on {table['gpu']}: margin {margin}x")
    note = f" ({'; '.join(notes)})" if notes else ""
    path = "sparse" if p >= margin else "dense"
    verb = ">=" if path == "sparse" else "<"
    return Decision(path, f"{path}: predicted {p:.2f}x over dense {verb} {margin}x for {where}, table {src}{note}",
                    p, src)


def _gpu_name() -> str:
    try:
        import torch
        return torch.cuda.get_device_name()
    except Exception:  # no GPU: the table cannot describe this machine
        return "no GPU"


def kernel_mismatch(table: dict, batch: int, bank_size: int = 64) -> str | None:
    """Why the table may not describe this machine's kernel at ``batch`` (None if it does). The table records the
    kernel it timed at every measured batch (e.g. the AVX-512 ``tiles`` / ``bspmm``); a machine that runs another one
    there (an AVX2-only CPU runs ``gather`` / ``spmm``) gets the wider margin, so the packaged table cannot make a
    layer slower on a CPU it was not measured on."""
    import torch

    from workbench.sparse.kernels import cpu
    batches = table["batches"]
    below = [b for b in batches if b <= batch][-1:] or batches[:1]
    above = [b for b in batches if b >= batch][:1] or batches[-1:]
    for b in dict.fromkeys(below + above):
        measured = next((k for key, k in table["kernels"].items() if key.endswith(f"x{b}")), None)
        running = cpu.kernel_for(b, torch.float32, bank_size)
        if measured is not None and measured != running:
            return f"batch {b} runs the {running} kernel here, the table timed {measured}"
    return None


def crossover_records(table: dict | None = None, device: str = "cpu") -> list[dict]:
    """The table as flat records ``{size, batch, sparsity, speedup, path}`` (the dashboard's crossover map)."""
    table = table or load_table(device)
    if table is None:
        return []
    out = []
    for i, s in enumerate(table["sizes"]):
        for j, b in enumerate(table["batches"]):
            for k, p in enumerate(table["sparsities"]):
                v = table["speedup"][i][j][k]
                out.append(dict(size=s, batch=b, sparsity=p, speedup=v, path="sparse" if v >= MARGIN else "dense",
                                dense_ms=_get(table, "dense_ms", i, j), sparse_ms=_get(table, "sparse_ms", i, j, k)))
    return out


def _get(table, key, *idx):
    v = table.get(key)
    try:
        for i in idx:
            v = v[i]
        return v
    except (TypeError, IndexError):
        return None


def measure_table(sizes=(256, 512, 1024, 2048, 4096), batches=(1, 4, 16, 64, 256),
                  sparsities=(0.25, 0.5, 0.75, 0.875, 0.90625, 0.953125), *, bank_size: int = 64, rounds: int = 5,
                  block: int = 3, block_warmup: int = 2, settle: float = 0.3, flush_mb: int = 0,
                  threads: int | None = None,
                  max_seconds: float = 20.0, progress=None,
                  log=None, layers=None) -> dict:
    """Measure the crossover table on this machine (CPU): for every (size, batch), ``F.linear`` (dense) and the
    sparse Linear path at every sparsity, timed in shuffled rounds after a pause (``settle`` s, so BLAS / OpenMP
    threads of the previous method are idle), medians. Sparsities are realized ones (k = (1 - s) * bank).
    Caches are not flushed by default (``flush_mb=0``): near the crossover (small matrices, large batches) a layer's
    weights are usually warm, and a cold start costs both paths alike. Each block opens with ``block_warmup``
    untimed calls for the same reason: a layer inside a running model finds its thread pool awake, while the first
    call after the pause can wait a scheduler tick (measured 4-8 ms on this VM) for it — the previous table, timed
    without them, read 4 ms for a 256x256 batch-4 ``F.linear`` that takes 0.015 ms.

    ``layers``: ``(dense(W, bias), sparse(bm, bias))``, factories of the two callables timed on x (n, size); by
    default ``F.linear`` and the functional sparse product ``cpu.linear``. :func:`workbench.sparse.measure.
    crossover_table_cpu` passes ``nn.Linear`` and ``BalancedSparseLinear`` forced sparse, so the table times what a
    layer runs (this module does not import the modules it serves)."""
    import time

    import torch
    import torch.nn.functional as F

    from workbench.sparse.formats import BalancedMatrix
    from workbench.sparse.kernels import cpu
    from workbench.sparse.prune import balanced_mask, kept_per_bank

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    realized = [1 - kept_per_bank(s, bank_size) / bank_size for s in sparsities]
    if len(set(realized)) != len(realized):
        raise ValueError(f"sparsities {sparsities} collide at bank {bank_size} (realized {realized})")
    g = torch.Generator().manual_seed(0)
    speed = [[[None] * len(realized) for _ in batches] for _ in sizes]
    dense_ms = [[None] * len(batches) for _ in sizes]
    sparse_ms = [[[None] * len(realized) for _ in batches] for _ in sizes]
    kernels = {}
    total = len(sizes) * len(batches)
    done = 0
    t_start = time.perf_counter()
    try:
        for i, size in enumerate(sizes):
            W = torch.randn(size, size, generator=g)
            mats = []
            for s in realized:
                bm = BalancedMatrix.from_mask(W, balanced_mask(W, s, bank_size), bank_size)
                mats.append(bm)
            bias = torch.randn(size, generator=g)
            if layers is not None:
                dense_layer, sparse_layers = layers[0](W, bias), [layers[1](bm, bias) for bm in mats]
            for j, n in enumerate(batches):
                x2 = torch.randn(n, size, generator=g)
                if layers is not None:
                    fns = {"dense": lambda x2=x2, f=dense_layer: f(x2)}
                    for q, f in enumerate(sparse_layers):
                        f(x2)  # plans, layouts (and the Runner) are made before the timing
                        fns[q] = lambda x2=x2, f=f: f(x2)
                else:
                    fns = {"dense": lambda x2=x2, W=W, bias=bias: F.linear(x2, W, bias)}
                    for q, bm in enumerate(mats):
                        tl = bm.cpu_layout(cpu.kernel_for(n, bm.dtype, bank_size))  # built before the timing
                        fns[q] = (lambda bm=bm, tl=tl, x2=x2, size=size, bias=bias:
                                  cpu.linear(bm.values, bm.offsets, x2, bank_size, size, bias=bias, tiles=tl))
                kernels[(size, n)] = cpu.kernel_for(n, W.dtype, bank_size)
                times = timed_blocks(fns, rounds=rounds, block=block, settle=settle,
                                     setup=(lambda: bench.flush_cache(flush_mb)) if flush_mb else None,
                                     max_seconds=max_seconds, block_warmup=block_warmup)
                med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
                dense_ms[i][j] = med["dense"] * 1e3
                for q in range(len(realized)):
                    sparse_ms[i][j][q] = med[q] * 1e3
                    speed[i][j][q] = med["dense"] / med[q]
                done += 1
                if progress:
                    progress(done / total, f"{size}^2 batch {n}")
                if log:
                    log(f"crossover {size}^2 batch {n}: dense {med['dense'] * 1e3:.3f} ms; speedups "
                        + ", ".join(f"{s:.3f}: {speed[i][j][q]:.2f}x" for q, s in enumerate(realized)))
    finally:
        torch.set_num_threads(old)
    return {"device": "cpu", "backend": cpu.backend()["backend"], "bank_size": bank_size,
            "threads": int(threads or old), "sizes": list(sizes), "batches": list(batches),
            "sparsities": realized, "speedup": speed, "dense_ms": dense_ms, "sparse_ms": sparse_ms,
            "kernels": {f"{s}x{n}": k for (s, n), k in kernels.items()}, "rounds": rounds, "block": block,
            "settle_s": settle, "flush_mb": flush_mb, "block_warmup": block_warmup,
            "timed": "functional" if layers is None else "layers",
            "machine": bench.machine_info(), "seconds": round(time.perf_counter() - t_start, 1),
            "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def save_table(table: dict, path: str | os.PathLike | None = None) -> Path:
    path = Path(path) if path else user_table_path(table.get("device", "cpu"))
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = {k: v for k, v in table.items() if k != "source"}
    path.write_text(json.dumps(_validate_table(clean), indent=1))
    clear_cache()
    return path
