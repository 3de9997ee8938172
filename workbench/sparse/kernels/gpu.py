"""GPU kernels for the balanced product of Balanced Sparsity (Yao et al., AAAI 2019; eq. 3 of formats.py): CUDA sources in ``balanced.cu`` loaded with
``cupy.RawModule``, one module per k and (value, offset) type pair (``-DBS_K=<k>``: the in-bank trip count is a
compile-time constant; ``-DBS_ONE=<i>``: only that pair's entry points, a ninth of the compile time), cached by CuPy.
torch CUDA tensors go in and out without copies (their device pointers are the kernel arguments, so no dtype has to
be known to CuPy: bf16 too); kernels run on torch's current stream.

The launch geometry is planned here in plain Python — :func:`plan_spmv`, :func:`plan_spmm`, :func:`spmm_smem_bytes`
— so it is tested on machines without a GPU, and :mod:`workbench.sparse.kernels.gpu_emulate` runs the kernels'
index math on the CPU from the same plans (tests compare it with float64 dense products).

Kernels (``kernel=`` names): ``spmv`` (batch 1: ``lanes`` threads per row, 16-byte vector loads of values and
offsets when rows are aligned, compile-time k, x staged in shared memory when it fits), ``spmv_global`` (the same
with x gathered from global memory), ``spmvn`` / ``spmvn_global`` (batches 2..32: the spmv scheme with 8 or 32
accumulators per lane, each kept entry reading its x row of n values once), ``spmm`` (larger batches, or unaligned
rows: tiles of 64 rows x 8/16/32/64 columns chosen from the batch, G banks per double-buffered cp.async stage, dynamic
shared memory above 48 KB through the opt-in attribute), ``fallback`` (a warp per (row, 32 columns), grid-stride:
any rows, any bank size). ``auto``: spmv at batch 1, spmvn at 2..32 when rows are aligned, spmm otherwise.
:func:`spmv_variants` and :func:`run_spmv_plan` give the batch-1 launches that ``workbench bench sparse --device
cuda --variants`` times side by side (load width, loads in flight, where x lives) to choose the planner's rule from.

Measured on an NVIDIA H200 (benchmarks/results/sparse_gpu.md, 90.6%, fp32): at 4096^2 batch 1 the kernel takes
10 us queued (3.2x cuBLAS, 1.9x cuSPARSE) but a call made alone ~56 us, most of it the host's Python and launch (as
for cuBLAS: ~70 us); at 16384^2, 48% of the HBM read bandwidth. spmvn beats cuBLAS fp32 up to batch 8 (1.3x at
4096^2, 3.2x at 16384^2, queued); from batch 32 the tiles and spmvn lose to cuBLAS, and the packaged CUDA crossover
table keeps such layers dense.

Difference from the paper: the paper's kernel stages the input slice in shared memory and gives each thread one
output row over its packed list; here batch 1 uses several lanes per row (rows of a few hundred entries would leave
most of a warp idle otherwise), small batches the same with one accumulator per column, and larger batches 2-D tiles.
"""
from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("balanced.cu")
KERNELS = ("auto", "spmv", "spmv_global", "spmvn", "spmvn_global", "spmm", "fallback")
VALUE_SUFFIX = {torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16"}
INDEX_SUFFIX = {torch.uint8: "u8", torch.int16: "i16", torch.int32: "i32"}
# BS_ONE index of each pair: the order of the BS_ALL lines in balanced.cu
PAIRS = tuple(f"{v}_{i}" for v in VALUE_SUFFIX.values() for i in INDEX_SUFFIX.values())
THREADS = 256                    # must match BS_THREADS in balanced.cu
TILE_ROWS = 64                   # must match TR in bs_spmm_impl
TILE_WIDTHS = (8, 16, 32, 64)    # spmm tile columns; columns per thread:
COLS_PER_THREAD = {8: 1, 16: 2, 32: 2, 64: 4}
DEFAULT_SMEM = 48 * 1024         # dynamic shared memory without the opt-in
SMEM_TARGET = 110 * 1024         # per block: two blocks fit an H100/H200 SM (227 KB)
MAX_GRID_X = 2 ** 31 - 1
MAX_GRID_YZ = 65535
CUDA_ATTR_SMEM_OPTIN = 97        # cudaDevAttrMaxSharedMemoryPerBlockOptin
CUDA_ATTR_SMS = 16               # cudaDevAttrMultiProcessorCount
CUDA_ATTR_SMEM_PER_SM = 81       # cudaDevAttrMaxSharedMemoryPerMultiprocessor
SPMV_SMEM_MAX = 128 * 1024       # spmv / spmvn: x up to this many bytes is staged in shared memory (0: never)
SPMVN_COLUMNS = (8, 32)          # spmvn entry points: batches 2..8 and 9..32 (larger: the spmm tiles)


def _esize(dtype: torch.dtype) -> int:
    return dtype.itemsize


def _pad16(elems: int, esize: int) -> int:
    per = max(1, 16 // esize)
    return -(-elems // per) * per


# ------------------------------------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class SpmvPlan:
    name: str       # entry point (suffix added at launch)
    vec: int        # entries per vector load
    lanes: int      # threads per row
    threads: int
    blocks: int
    smem: int = 0   # dynamic shared memory: x staged there (the _sx entry points) when > 0
    nc: int = 1     # batch columns the entry point accumulates (1: spmv; 8 or 32: spmvn, n <= nc)
    xvec: int = 0   # spmvn: x rows read with 16-byte loads


def _spmv_vec(nnz: int, dtype: torch.dtype, aligned: bool) -> int:
    """Entries per vector load of a row of ``nnz`` values (1: scalar loads)."""
    es = _esize(dtype)
    vec = 16 // es
    return 1 if not aligned or (nnz * es) % 16 or nnz % vec else vec


def spmvn_columns(n: int) -> int:
    """The spmvn entry point (accumulators per lane) serving a batch of n (0: none, use the spmm tiles)."""
    return next((nc for nc in SPMVN_COLUMNS if 2 <= n <= nc), 0)


@functools.lru_cache(maxsize=4096)  # plans are pure functions of their arguments: one per shape, not per call
def plan_spmv(rows: int, banks: int, k: int, dtype: torch.dtype, *, aligned: bool = True, cols: int = 0,
              smem_limit: int = 0, resident: int = 0, n: int = 1) -> SpmvPlan:
    """Batch-1 launch (and spmvn, 2 <= n <= 32, which needs vector loads): vector loads when every row starts on a
    16-byte boundary (``aligned``: base pointers aligned; the row length is checked here), lanes per row = the power
    of two <= 32 that gives each lane about four vector loads, a 1-D grid (grid-stride loop in the kernel, so any
    number of rows). With vector loads, x (``cols`` x ``n`` entries) is staged in shared memory when it fits in
    ``min(smem_limit, SPMV_SMEM_MAX)``; the grid is then capped at ``resident`` blocks (those that fit on the GPU at
    once, counted by the caller from the kernel's registers and shared memory), so that each block copies x once."""
    es = _esize(dtype)
    nnz = banks * k
    vec = _spmv_vec(nnz, dtype, aligned)
    nc = 1 if n == 1 else spmvn_columns(n)
    if nc == 0 or (nc > 1 and vec == 1):
        raise ValueError(f"no spmv entry point for a batch of {n} with {'aligned' if vec > 1 else 'unaligned'} rows")
    chunks = nnz // vec
    lanes = 1
    while lanes < 32 and lanes * 4 < chunks:
        lanes *= 2
    per_block = THREADS // lanes
    blocks = max(1, min(-(-rows // per_block), MAX_GRID_X))
    xvec = int(nc > 1 and aligned and (n * es) % 16 == 0)
    base = "bs_spmv" if nc == 1 else f"bs_spmvn{nc}"
    x_bytes = _pad16(cols * n, es) * es
    if vec > 1 and 0 < x_bytes <= min(smem_limit, SPMV_SMEM_MAX):
        return SpmvPlan(f"{base}_k_sx", vec, lanes, THREADS, max(1, min(blocks, resident or blocks)), x_bytes, nc,
                        xvec)
    return SpmvPlan(f"{base}_k" if vec > 1 else "bs_spmv_k_v1", vec, lanes, THREADS, blocks, 0, nc, xvec)


def spmm_smem_bytes(tn: int, G: int, bank_size: int, k: int, dtype: torch.dtype, index_dtype: torch.dtype) -> int:
    """Dynamic shared memory of the spmm tile kernel: two stages of (x slice, values, offsets), as laid out in
    bs_spmm_impl."""
    es, isz = _esize(dtype), _esize(index_dtype)
    tnp = _pad16(tn, es) + 16 // es
    gk = G * k
    stage = G * bank_size * tnp * es + TILE_ROWS * _pad16(gk, es) * es + TILE_ROWS * _pad16(gk, isz) * isz
    return 2 * stage


def _vec_bytes(*lengths_bytes: int, aligned: bool) -> int:
    """Largest cp.async chunk (16, 8, 4) dividing every row start / length in bytes; 0: copy element-wise."""
    if not aligned:
        return 0
    for c in (16, 8, 4):
        if all(b % c == 0 for b in lengths_bytes):
            return c
    return 0


@dataclass(frozen=True)
class SpmmPlan:
    kind: str            # "tile" | "fallback"
    name: str
    tn: int = 0          # tile columns
    cpt: int = 0         # columns per thread
    G: int = 0           # banks per stage
    smem: int = 0        # dynamic shared memory (bytes)
    grid: tuple = (1, 1, 1)
    block: tuple = (THREADS, 1, 1)
    x_vec: int = 0       # cp.async chunk bytes for x rows / values / offsets (0: element-wise)
    v_vec: int = 0
    o_vec: int = 0


@functools.lru_cache(maxsize=4096)
def plan_spmm(rows: int, cols: int, banks: int, k: int, bank_size: int, n: int, dtype: torch.dtype,
              index_dtype: torch.dtype, *, smem_limit: int = DEFAULT_SMEM, aligned: bool = True,
              kernel: str = "auto") -> SpmmPlan:
    """Batch > 1 launch. Tile columns: the smallest of 8/16/32/64 that holds the batch (64 above); banks per stage
    G: as many as fit min(``smem_limit``, ~110 KB) (preferring a G whose rows allow 16-byte copies); a smaller tile
    if even one bank does not fit; otherwise (or ``kernel="fallback"``) the warp-per-row-chunk fallback. Grids stay
    within CUDA's limits for any number of rows (row tiles over grid y and z; the fallback is grid-stride)."""
    es, isz = _esize(dtype), _esize(index_dtype)
    if kernel != "fallback":
        budget = min(smem_limit, max(SMEM_TARGET, DEFAULT_SMEM))
        tn0 = next((t for t in TILE_WIDTHS if t >= n), TILE_WIDTHS[-1])
        for tn in [t for t in TILE_WIDTHS if t <= tn0][::-1]:
            if spmm_smem_bytes(tn, 1, bank_size, k, dtype, index_dtype) > smem_limit:
                continue
            best = None
            for G in range(1, banks + 1):
                smem = spmm_smem_bytes(tn, G, bank_size, k, dtype, index_dtype)
                if smem > (budget if G > 1 else smem_limit):
                    break
                nnz = banks * k
                v_vec = _vec_bytes(nnz * es, G * k * es, aligned=aligned)
                o_vec = _vec_bytes(nnz * isz, G * k * isz, aligned=aligned)
                score = (G * (2 if v_vec >= 4 and o_vec >= 4 else 1), G)
                if best is None or score > best[0]:
                    best = (score, G, smem, v_vec, o_vec)
            if best is None:
                continue
            _, G, smem, v_vec, o_vec = best
            x_vec = _vec_bytes(n * es, tn * es, aligned=aligned)
            row_tiles = -(-rows // TILE_ROWS)
            gy = min(row_tiles, MAX_GRID_YZ)
            gz = -(-row_tiles // gy)
            if gz > MAX_GRID_YZ:
                break
            return SpmmPlan("tile", f"bs_spmm{tn}_k", tn, COLS_PER_THREAD[tn], G, smem, (-(-n // tn), gy, gz),
                            (THREADS, 1, 1), x_vec, v_vec, o_vec)
    if kernel == "spmm":
        raise ValueError(f"no spmm tile fits {smem_limit} bytes of shared memory for bank {bank_size}, k {k}; "
                         "use kernel='fallback'")
    warps = rows * -(-n // 32)
    blocks = max(1, min(-(-warps // (THREADS // 32)), MAX_GRID_X))
    return SpmmPlan("fallback", "bs_spmm_fallback", grid=(blocks, 1, 1), block=(THREADS, 1, 1))


def plan_name(rows: int, banks: int, k: int, bank_size: int, n: int, dtype: torch.dtype = torch.float32,
              index_dtype: torch.dtype = torch.uint8) -> str:
    """A short description of the kernel a product of a (rows, banks * bank_size) matrix with n columns would run
    (benchmark records)."""
    if n == 1 or spmvn_columns(n):
        p = plan_spmv(rows, banks, k, dtype, cols=banks * bank_size, smem_limit=smem_optin_limit(), n=n)
        return (f"{'spmv' if n == 1 else f'spmvn{p.nc}'} (vec {p.vec}, {p.lanes} lanes/row"
                f"{', x in shared memory' if p.smem else ''})")
    p = plan_spmm(rows, banks * bank_size, banks, k, bank_size, n, dtype, index_dtype, smem_limit=smem_optin_limit())
    return f"spmm {p.tn}-col tile, G={p.G}, {p.smem // 1024} KB" if p.kind == "tile" else "spmm fallback"


SPMV_VARIANTS = ("vec_sx", "vec_global", "v1_global", "v1_sx")


def spmv_variants(rows: int, banks: int, k: int, dtype: torch.dtype, cols: int, *, smem_limit: int,
                  resident=lambda name, smem: 0) -> dict[str, SpmvPlan]:
    """The batch-1 launches the GPU A/B (``workbench bench sparse --device cuda --variants``) times side by side, by
    :data:`SPMV_VARIANTS` name: 16-byte loads of values and offsets (``vec_``) or one entry per load (``v1_``), with x
    staged in shared memory (``_sx``, where it fits in ``smem_limit``) or gathered from global memory. Why scalar
    loads might win: a lane's 16-byte load holds 4 consecutive fp32 entries, so one gather instruction of a warp
    reads entries 4 apart over ~21 banks (~31 distinct 128-byte lines of x at 90.6%, 6 of 64), while scalar loads
    make it read 32 consecutive entries over ~6 banks (~11 lines): a third of the L1 wavefronts per kept entry.
    ``resident(name, smem)`` gives the blocks of an entry point that fit on the GPU at once (caps the _sx grids)."""
    plans = {"vec_global": plan_spmv(rows, banks, k, dtype, cols=cols, smem_limit=0)}
    if plans["vec_global"].vec == 1:
        raise ValueError("the A/B needs rows that vector loads can read (banks * k entries, 16-byte multiples)")
    sx = plan_spmv(rows, banks, k, dtype, cols=cols, smem_limit=smem_limit,
                   resident=resident("bs_spmv_k_sx", _pad16(cols, _esize(dtype)) * _esize(dtype)))
    if sx.smem:
        plans["vec_sx"] = sx
    v1 = plan_spmv(rows, banks, k, dtype, cols=cols, aligned=False)
    plans["v1_global"] = v1
    if sx.smem:
        plans["v1_sx"] = replace(v1, name="bs_spmv_k_v1_sx", smem=sx.smem,
                                 blocks=max(1, min(v1.blocks, resident("bs_spmv_k_v1_sx", sx.smem) or v1.blocks)))
    return {name: plans[name] for name in SPMV_VARIANTS if name in plans}


# ------------------------------------------------------------------------------------------------------- runtime
def available() -> bool:
    """True when CuPy is importable and sees a CUDA device (and torch does too)."""
    try:
        import cupy
        return bool(cupy.cuda.is_available()) and torch.cuda.is_available()
    except Exception:
        return False


def smem_optin_limit(device: int | None = None) -> int:
    """The largest dynamic shared memory a block may opt in to (H100/H200: 227 KB); 48 KB when unknown."""
    try:
        return _smem_optin(torch.cuda.current_device() if device is None else int(device))
    except Exception:
        return DEFAULT_SMEM


@functools.cache
def _smem_optin(device: int) -> int:
    import cupy
    return int(cupy.cuda.runtime.deviceGetAttribute(CUDA_ATTR_SMEM_OPTIN, device))


def _options(k: int, pair: str | None = None, u: int | None = None) -> tuple[str, ...]:
    opts = ["--std=c++17", f"-DBS_K={int(k)}"]
    if pair is not None:
        opts.append(f"-DBS_ONE={PAIRS.index(pair)}")
    if u is not None:  # loads in flight per spmv lane (BS_SPMV_U); None: the source's default
        opts.append(f"-DBS_SPMV_U={int(u)}")
    try:
        import cupy
        inc = os.path.join(cupy.cuda.get_cuda_path() or "", "include")
        if os.path.isdir(inc):
            opts.append(f"-I{inc}")
    except Exception:  # pragma: no cover - depends on the CUDA install
        pass
    return tuple(opts)


@functools.cache
def module(k: int, pair: str = "f32_u8", u: int | None = None):
    """The RawModule compiled for compile-time ``k`` and one (value, offset) pair of :data:`PAIRS` (NVRTC when
    available, else nvcc); ``u`` overrides BS_SPMV_U (the GPU A/B benchmark, ``bench sparse --variants``)."""
    import cupy
    code = SOURCE.read_text()
    errors = []
    backends = ["nvrtc", "nvcc"] if shutil.which("nvcc") else ["nvrtc"]
    for backend in backends:
        try:
            mod = cupy.RawModule(code=code, backend=backend, options=_options(k, pair, u))
            mod.get_function(f"bs_spmv_k_{pair}")  # forces the compile
            return mod
        except Exception as e:  # pragma: no cover - depends on the machine's CUDA
            errors.append(f"{backend}: {e}")
    raise RuntimeError("could not compile balanced.cu: " + " | ".join(errors))


@functools.lru_cache(maxsize=1024)
def _launch(rows: int, banks: int, k: int, bank_size: int, cols: int, n: int, dtype: torch.dtype,
            index_dtype: torch.dtype, aligned: bool, kernel: str, device: int):
    """(function, grid, block, trailing arguments, dynamic shared memory) of one product, planned once per shape:
    after a flush of the host caches each planning step costs microseconds, and at batch 1 the kernel itself runs
    for only a few (measured on an H200, benchmarks/results/sparse_gpu.md)."""
    import numpy as np

    i32, i64 = np.int32, np.int64
    pair = f"{VALUE_SUFFIX[dtype]}_{INDEX_SUFFIX[index_dtype]}"
    mod = module(k, pair)
    rowwise = kernel in ("spmv", "spmv_global", "spmvn", "spmvn_global") or (kernel == "auto" and (
        n == 1 or (spmvn_columns(n) and _spmv_vec(banks * k, dtype, aligned) > 1)))
    if rowwise:
        nc = 1 if n == 1 else spmvn_columns(n)
        limit = 0 if kernel.endswith("_global") else smem_optin_limit(device)
        es = _esize(dtype)
        sx = mod.get_function(f"{'bs_spmv' if nc == 1 else f'bs_spmvn{nc}'}_k_sx_{pair}")
        p = plan_spmv(rows, banks, k, dtype, aligned=aligned, cols=cols, smem_limit=limit, n=n,
                      resident=_resident(sx, _pad16(cols * n, es) * es, device))
        return _spmv_launch(mod, pair, p, rows, banks, k, bank_size, cols, n, device)
    p = plan_spmm(rows, cols, banks, k, bank_size, n, dtype, index_dtype, smem_limit=smem_optin_limit(device),
                  aligned=aligned, kernel=kernel)
    f = mod.get_function(f"{p.name}_{pair}")
    if p.kind == "tile":
        if p.smem > DEFAULT_SMEM:  # the opt-in (cudaFuncAttributeMaxDynamicSharedMemorySize), set to the device's
            # maximum: the attribute belongs to the function, which plans with smaller tiles share
            f.max_dynamic_shared_size_bytes = smem_optin_limit(device)
        return (f, p.grid, p.block, (i32(rows), i32(cols), i32(banks), i32(k), i32(bank_size), i32(n), i32(p.G),
                                     i32(p.x_vec), i32(p.v_vec), i32(p.o_vec)), p.smem)
    return f, p.grid, p.block, (i64(rows), i32(banks), i32(k), i32(bank_size), i32(cols), i32(n)), 0


def _spmv_launch(mod, pair: str, p: SpmvPlan, rows: int, banks: int, k: int, bank_size: int, cols: int, n: int,
                 device: int):
    """(function, grid, block, trailing arguments, dynamic shared memory) of a planned spmv / spmvn launch."""
    import numpy as np

    f = mod.get_function(f"{p.name}_{pair}")
    if p.smem > DEFAULT_SMEM:
        f.max_dynamic_shared_size_bytes = smem_optin_limit(device)
    i32 = np.int32
    return f, (p.blocks,), (p.threads,), (np.int64(rows), i32(banks), i32(k), i32(bank_size), i32(cols),
                                         i32(p.lanes), i32(n), i32(p.xvec)), p.smem


def _resident(f, smem: int, device: int) -> int:
    """Blocks of THREADS threads of function ``f`` with ``smem`` bytes of dynamic shared memory that fit on the
    device at once (registers, shared memory and the 2048-thread limit of an SM; 0 when unknown)."""
    try:
        import cupy
        rt = cupy.cuda.runtime
        sms = rt.deviceGetAttribute(CUDA_ATTR_SMS, device)
        smem_sm = rt.deviceGetAttribute(CUDA_ATTR_SMEM_PER_SM, device)
        regs = -(-max(int(f.num_regs), 1) // 8) * 8
        per_sm = min(2048 // THREADS, 65536 // (regs * THREADS), smem_sm // (smem + 1024))
        return max(1, per_sm) * sms
    except Exception:  # pragma: no cover - depends on the CUDA install
        return 0


@functools.lru_cache(maxsize=64)
def _stream(ptr: int):
    """CuPy's handle of torch's stream ``ptr`` (made once per stream). CuPy 14 deprecates ExternalStream in favour of
    Stream.from_external, which wants an object with the CUDA stream protocol; the raw pointer needs the former."""
    import warnings

    import cupy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return cupy.cuda.ExternalStream(ptr)


def balanced_matmul(values: torch.Tensor, offsets: torch.Tensor, x: torch.Tensor, bank_size: int, cols: int,
                    *, kernel: str = "auto") -> torch.Tensor:
    """y = W x on CUDA tensors; x (cols,) or (cols, n) row-major. ``kernel``: one of :data:`KERNELS` (forcing one
    is for tests and benchmarks)."""
    import numpy as np

    if kernel not in KERNELS:
        raise ValueError(f"unknown GPU kernel {kernel!r}; choose one of {KERNELS}")
    if not values.is_cuda or not offsets.is_cuda or not x.is_cuda:
        raise ValueError("balanced_matmul on GPU needs CUDA tensors for values, offsets and x")
    if values.dtype not in VALUE_SUFFIX:
        raise ValueError(f"GPU kernels support float32, float16 and bfloat16, got {values.dtype}")
    if x.dtype != values.dtype:
        raise ValueError(f"x has dtype {x.dtype} but the values are {values.dtype}")
    if not (values.is_contiguous() and offsets.is_contiguous() and x.is_contiguous()):
        raise ValueError("values, offsets and x must be contiguous")
    dev = x.device.index
    if dev != torch.cuda.current_device():
        with torch.cuda.device(dev):
            return balanced_matmul(values, offsets, x, bank_size, cols, kernel=kernel)
    rows, banks, k = values.shape
    vec = x.dim() == 1
    n = 1 if vec else x.shape[1]
    y = torch.empty((rows,) if vec else (rows, n), dtype=x.dtype, device=x.device)
    if rows == 0 or n == 0:
        return y
    if kernel in ("spmv", "spmv_global") and n != 1:
        raise ValueError("the spmv kernels need a single column")
    if kernel in ("spmvn", "spmvn_global") and not spmvn_columns(n):
        raise ValueError(f"the spmvn kernels take batches of 2 to {SPMVN_COLUMNS[-1]} columns, got {n}")
    # vector loads need 16-byte aligned values / x and offsets aligned to VEC offsets (up to 32 bytes for int32)
    vp, op, xp = values.data_ptr(), offsets.data_ptr(), x.data_ptr()
    aligned = vp % 16 == 0 and xp % 16 == 0 and op % 32 == 0
    f, grid, block, tail, smem = _launch(rows, banks, k, bank_size, cols, n, values.dtype, offsets.dtype, aligned,
                                         kernel, dev)
    u64 = np.uint64  # device pointers (8-byte kernel arguments)
    with _stream(torch.cuda.current_stream().cuda_stream):
        f(grid, block, (u64(vp), u64(op), u64(xp), u64(y.data_ptr())) + tail, shared_mem=smem)
    return y


def run_spmv_plan(values: torch.Tensor, offsets: torch.Tensor, x: torch.Tensor, bank_size: int, cols: int,
                  plan: SpmvPlan, *, u: int | None = None) -> torch.Tensor:
    """y = W x (batch 1) with a given plan (one of :func:`spmv_variants`) and loads in flight ``u`` (None: the
    source's BS_SPMV_U): the GPU A/B's launches; :func:`balanced_matmul` plans its own."""
    import numpy as np

    if x.dim() != 1 or plan.nc != 1 or not (values.is_cuda and offsets.is_cuda and x.is_cuda):
        raise ValueError("run_spmv_plan takes one CUDA column x and a batch-1 plan")
    rows, banks, k = values.shape
    pair = f"{VALUE_SUFFIX[values.dtype]}_{INDEX_SUFFIX[offsets.dtype]}"
    f, grid, block, tail, smem = _spmv_launch(module(k, pair, u), pair, plan, rows, banks, k, bank_size, cols, 1,
                                              x.device.index)
    y = torch.empty(rows, dtype=x.dtype, device=x.device)
    with _stream(torch.cuda.current_stream().cuda_stream):
        f(grid, block, tuple(np.uint64(t.data_ptr()) for t in (values, offsets, x, y)) + tail, shared_mem=smem)
    return y


def flush_l2(buffer: torch.Tensor | None = None, mb: int = 256) -> torch.Tensor:
    """Overwrite a buffer larger than the L2 cache (benchmark hygiene); returns the buffer to reuse."""
    import numpy as np
    if buffer is None:
        buffer = torch.zeros(mb * 1024 * 1024 // 4, dtype=torch.float32, device="cuda")
    with _stream(torch.cuda.current_stream(buffer.device).cuda_stream):
        module(1).get_function("bs_flush")((264,), (256,), (np.uint64(buffer.data_ptr()), np.int64(buffer.numel())))
    return buffer
