"""The C++ CPU kernels of Balanced Sparsity (Yao et al., AAAI 2019; ``balanced_cpu.cpp``): built at first use,
cached, called via ctypes. (The paper's kernels are GPU-only; these are this package's CPU counterparts.)

The source is compiled with ``torch.utils.cpp_extension.load`` against torch's headers and libraries (so its
``at::parallel_for`` runs on PyTorch's own intra-op OpenMP pool: the library links the ``libgomp.so.1`` torch has
already loaded, no second runtime), without pybind11 (the library exports plain ``extern "C"`` functions; a build
takes seconds instead of the ~35 s of a full torch extension). Build flags are baseline x86-64 plus ``-O3``: the
AVX2/FMA code paths are selected at run time inside the library, so a cached build is valid on any x86-64 machine
(AMD or Intel). The build folder is ``<cache>/torch_extensions/wb_balanced_cpu_<hash>``, where the hash covers the
source, the flags, torch's version and the Python version; ``<cache>`` is ``$WORKBENCH_CACHE`` or
``~/.cache/vision-workbench``.

A second, small source, ``balanced_call.cpp``, is a Python extension (pybind11 and ATen's core headers only, a few
seconds to build) holding the small-batch path of ``BalancedMatrix.matmul`` as one C++ call: a ``Runner`` checks x,
allocates y and runs the kernel at the address ctypes resolved in the library above. It is built at its first use
(:func:`call_binding`); where it cannot be built, the same kernels are called from Python (:func:`call_status` says
why).

Nothing is built at import. :func:`library` returns the loaded library or ``None``; :func:`status` says which and
why (no compiler, no ninja, build error, ``WORKBENCH_SPARSE_BACKEND=numba``) — the caller then falls back to the
numba kernels. No warning is emitted; the reason is recorded.
"""
from __future__ import annotations

import ctypes
import hashlib
import io
import mmap
import os
import shutil
import sys
import threading
import time
import warnings
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import torch

from workbench.data.cache import cache_root as data_cache_root

SOURCE = Path(__file__).with_name("balanced_cpu.cpp")
# tuples: torch's cpp_extension.load appends torch's libraries to the extra_ldflags list it is given, in place, which
# changed build_key() after the first build, so every reload (cpp.reset(), the tests) rebuilt the library (~21 s)
CFLAGS = ("-O3", "-fopenmp", "-fno-math-errno", "-Wno-unused-function")
LDFLAGS = ("-fopenmp",)
ABI = 6  # must match BS_ABI in balanced_cpu.cpp
VALUE_CODES = {torch.float32: 0, torch.float64: 1}
INDEX_CODES = {torch.uint8: 0, torch.int16: 1, torch.int32: 2}

_LOCK = threading.Lock()
_STATE: dict = {"lib": None, "tried": False, "status": None}


def cache_root() -> Path:
    """$WORKBENCH_KERNEL_CACHE (compiled kernels only), else $WORKBENCH_CACHE, else ~/.cache/vision-workbench."""
    return Path(os.environ["WORKBENCH_KERNEL_CACHE"]) if os.environ.get("WORKBENCH_KERNEL_CACHE") else data_cache_root()


def build_key() -> str:
    h = hashlib.sha256()
    h.update(SOURCE.read_bytes())
    h.update(" ".join(CFLAGS + LDFLAGS).encode())
    h.update(torch.__version__.encode())
    h.update(f"{sys.version_info[0]}.{sys.version_info[1]}".encode())
    return h.hexdigest()[:16]


def build_dir() -> Path:
    return cache_root() / "torch_extensions" / f"wb_balanced_cpu_{build_key()}"


def _source_copy(d: Path, source: Path | None = None) -> Path:
    """The kernel source copied into its build folder. The build folder is keyed by the source's content, and
    torch's ninja file names the source by its path: building from this copy keeps that path the same for every
    checkout and installed copy of the package, so none of them rebuilds what another one built (before, a
    checkout and an installed copy sharing one cache rebuilt the kernel in turn, ~13 s each time)."""
    source = SOURCE if source is None else source
    dst = d / source.name
    data = source.read_bytes()
    if not dst.exists() or dst.read_bytes() != data:
        tmp = d / f".{source.name}.{os.getpid()}.{threading.get_ident()}"
        tmp.write_bytes(data)
        os.replace(tmp, dst)   # atomic: a concurrent build sees the old or the new file, never half of one
    return dst


def _compiler() -> str | None:
    cxx = os.environ.get("CXX", "c++")
    return shutil.which(cxx) or shutil.which("g++")


def _build() -> tuple[ctypes.CDLL | None, dict]:
    st = {"backend": "numba", "reason": "", "build_dir": None, "build_s": None, "cached": None, "avx2": None}
    if os.environ.get("WORKBENCH_SPARSE_BACKEND", "auto").lower() == "numba":
        st["reason"] = "WORKBENCH_SPARSE_BACKEND=numba"
        return None, st
    if not SOURCE.exists():
        st["reason"] = f"{SOURCE.name} is missing from the installed package"
        return None, st
    if _compiler() is None:
        st["reason"] = "no C++ compiler (c++/g++) on PATH"
        return None, st
    from torch.utils import cpp_extension
    try:
        cpp_extension.verify_ninja_availability()
    except RuntimeError:
        st["reason"] = "ninja is not installed (pip install ninja)"
        return None, st
    d = build_dir()
    name = d.name
    st["build_dir"] = str(d)
    so = d / f"{name}.so"
    st["cached"] = so.exists()
    t0 = time.perf_counter()
    path = _jit_load(d, SOURCE, st, "C++ build failed", extra_ldflags=list(LDFLAGS), is_python_module=False)
    if path is None:    # a failed build falls back to numba, the reason is kept
        return None, st
    try:
        lib = ctypes.CDLL(str(path or so))
    except OSError as e:
        st["reason"] = f"C++ library does not load: {e}"[:300]
        return None, st
    st["build_s"] = round(time.perf_counter() - t0, 2)
    try:
        if lib.bs_abi_version() != ABI:
            st["reason"] = f"stale C++ build (ABI {lib.bs_abi_version()} != {ABI}); delete {d}"
            return None, st
    except AttributeError:
        st["reason"] = f"the library in {d} has no bs_abi_version; delete the folder"
        return None, st
    f = lib.bs_matmul
    f.restype = ctypes.c_int
    f.argtypes = [ctypes.c_int, ctypes.c_int] + [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 6 + [ctypes.c_int] * 2
    f = lib.bs_matmul_tiles
    f.restype = ctypes.c_int
    f.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 6 + [ctypes.c_int] * 2
    f = lib.bs_spmm_tiles
    f.restype = ctypes.c_int
    f.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 6 + [ctypes.c_int] * 2 + [ctypes.c_int64] * 2
    f = lib.bs_spmm_groups
    f.restype = ctypes.c_int
    f.argtypes = [ctypes.c_int] + [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 6 + [ctypes.c_int] * 2 + [ctypes.c_int64]
    st.update(backend="cpp", reason="C++ kernel (at::parallel_for on torch's thread pool)",
              avx2=bool(lib.bs_has_avx2()), avx512=bool(lib.bs_has_avx512()))
    return lib, st


def _jit_load(d: Path, source: Path, st: dict, failed: str, **kw):
    """``torch.utils.cpp_extension.load`` of ``source`` (copied into the build folder ``d``, named after it), its
    output captured; None on failure, with ``st["reason"]`` (``failed``: the last line of the error) and
    ``st["log"]`` set."""
    from torch.utils import cpp_extension
    out = io.StringIO()
    try:
        d.mkdir(parents=True, exist_ok=True)
        clear_stale_lock(d)
        with warnings.catch_warnings(), redirect_stdout(out), redirect_stderr(out):
            warnings.simplefilter("ignore")
            return cpp_extension.load(name=d.name, sources=[str(_source_copy(d, source))], extra_cflags=list(CFLAGS),
                                      build_directory=str(d), with_cuda=False, verbose=False, **kw)
    except Exception as e:
        msg = str(e).strip().splitlines()
        st["reason"] = f"{failed}: " + (msg[-1] if msg else type(e).__name__)[:300]
        st["log"] = (out.getvalue() + "\n" + str(e))[-4000:]
        return None


STALE_LOCK_S = 300.0  # a build takes seconds; an older lock was left by a build that was killed


def clear_stale_lock(d: Path, max_age_s: float = STALE_LOCK_S) -> bool:
    """Remove ``d/lock`` when it is older than ``max_age_s``. torch's build lock is a plain file that waits forever
    while it exists, so a build interrupted by Ctrl-C or a kill would otherwise hang every later first use. True when
    a lock was removed."""
    lock = d / "lock"
    try:
        if time.time() - lock.stat().st_mtime > max_age_s:
            lock.unlink()
            return True
    except FileNotFoundError:
        pass
    return False


def library() -> ctypes.CDLL | None:
    """The loaded kernel library (building it on first use), or None when it cannot be built here."""
    if not _STATE["tried"]:
        with _LOCK:
            if not _STATE["tried"]:
                _STATE["lib"], _STATE["status"] = _build()
                _STATE["tried"] = True
    return _STATE["lib"]


def status(build: bool = True) -> dict:
    """``{"backend": "cpp" | "numba", "reason": ..., "build_dir", "build_s", "cached", "avx2"}``; ``build=False``
    reports without triggering a build."""
    if build:
        library()
    if not _STATE["tried"]:
        return {"backend": "unknown", "reason": "not built yet (first use builds it)", "build_dir": str(build_dir())}
    return dict(_STATE["status"])


def reset() -> None:
    """Forget the loaded library (tests: re-evaluate WORKBENCH_SPARSE_BACKEND); every call-binding Runner made so far
    stops taking calls (its owner rebuilds)."""
    with _LOCK:
        _STATE.update(lib=None, tried=False, status=None)
        if _CALL["mod"] is not None:
            _CALL["mod"].bump()


CALL_SOURCE = Path(__file__).with_name("balanced_call.cpp")
CALL_ABI = 1  # must match m.attr("ABI") in balanced_call.cpp
_CALL: dict = {"mod": None, "tried": False, "status": None}


def call_build_dir() -> Path:
    h = hashlib.sha256()
    h.update(CALL_SOURCE.read_bytes())
    h.update(" ".join(CFLAGS).encode())
    h.update(torch.__version__.encode())
    h.update(f"{sys.version_info[0]}.{sys.version_info[1]}".encode())
    return cache_root() / "torch_extensions" / f"wb_balanced_call_{h.hexdigest()[:16]}"


def _build_call():
    st = {"call": "python", "reason": "", "build_s": None}
    if not CALL_SOURCE.exists():
        st["reason"] = f"{CALL_SOURCE.name} is missing from the installed package"
        return None, st
    d = call_build_dir()
    t0 = time.perf_counter()
    mod = _jit_load(d, CALL_SOURCE, st, "call binding build failed", is_python_module=True)
    if mod is None:     # the Python path to the same kernels stays
        return None, st
    if getattr(mod, "ABI", None) != CALL_ABI:
        st["reason"] = f"stale call binding in {d}; delete the folder"
        return None, st
    st.update(call="cpp", reason="one C++ call per product (balanced_call.cpp)",
              build_s=round(time.perf_counter() - t0, 2))
    return mod, st


def call_binding():
    """The compiled call binding (``balanced_call.cpp``: ``Runner``, ``bump``), built at its first use, or None
    where it cannot be built (``call_status()`` says why) or no kernel library runs here."""
    if not _CALL["tried"]:
        if library() is None:
            return None
        with _LOCK:
            if not _CALL["tried"]:
                _CALL["mod"], _CALL["status"] = _build_call()
                _CALL["tried"] = True
    return _CALL["mod"]


def ready() -> bool:
    """Whether the first use is behind: the kernel library and the call binding were built (or found unbuildable)
    in this process, so no product will wait for a compiler."""
    return bool(_STATE["tried"] and (_CALL["tried"] or _STATE["lib"] is None))


def call_status() -> dict:
    """``{"call": "cpp" | "python", "reason", "build_s"}`` of the call binding (without building it)."""
    return dict(_CALL["status"]) if _CALL["tried"] else {"call": "unknown", "reason": "not built yet"}


def entry_address(fn) -> int:
    """The address of a ctypes function of the kernel library (for ``Runner.set``)."""
    return ctypes.cast(fn, ctypes.c_void_p).value


def matmul_into(lib: ctypes.CDLL, values: torch.Tensor, offsets: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                bias: torch.Tensor | None, bank_size: int, cols: int, *, threads: int | None = None,
                simd: bool = True, y_transposed: bool = False) -> None:
    """y = W x (+ bias), packed layout. x (cols,) or (cols, n) row-major; y (rows,), (rows, n) or, with
    ``y_transposed``, (n, rows). Shapes, dtypes and contiguity are the caller's job (checked in formats.py)."""
    rows, banks, k = values.shape
    n = 1 if x.dim() == 1 else x.shape[1]
    rc = lib.bs_matmul(VALUE_CODES[values.dtype], INDEX_CODES[offsets.dtype], values.data_ptr(), offsets.data_ptr(),
                       x.data_ptr(), y.data_ptr(), None if bias is None else bias.data_ptr(), rows, banks, k,
                       int(bank_size), int(cols), n, int(threads or 0), (0 if simd else 1) | (2 if y_transposed else 0))
    if rc != 0:
        raise RuntimeError(f"balanced C++ kernel failed with code {rc}")


TILE_ROWS = 16
TILE_MAX_BANK = 64
HUGE_PAGE = 2 << 20
# smaller layouts stay on ordinary pages (the 1.6 MB offsets of a 4096^2 layout on a huge page too: +5% / -7% in
# two paired runs, no consistent gain)
HUGE_MIN_BYTES = HUGE_PAGE


def huge_pages_enabled() -> bool:
    """Large kernel layouts go on transparent huge pages: Linux (``MADV_HUGEPAGE``) unless
    ``WORKBENCH_HUGEPAGES=0``. Where the kernel gives none (THP ``never``), the memory is ordinary pages."""
    return hasattr(mmap, "MADV_HUGEPAGE") and os.environ.get("WORKBENCH_HUGEPAGES", "1") != "0"


def contiguous_copy(t: torch.Tensor) -> torch.Tensor:
    """``t.contiguous()`` as a fresh copy, placed on 2 MB transparent huge pages where :func:`huge_pages_enabled` and
    the copy is at least :data:`HUGE_MIN_BYTES`. A kernel streams its layout from memory once per product: with 4 KB
    pages each page of a 7.9 MB layout is a TLB miss whose page walk also starts cold after the caches were flushed
    (measured 4096^2 at 90.6%, tile kernel, batch 1, 2 threads, caches flushed, interleaved: 0.336 -> 0.305 and
    0.361 -> 0.312 ms on 2 MB pages). The memory is an anonymous private mapping aligned to 2 MB that the tensor
    keeps alive; a saved or copied tensor is an ordinary one."""
    nbytes = t.numel() * t.element_size()
    if nbytes < HUGE_MIN_BYTES or t.device.type != "cpu" or not huge_pages_enabled():
        return t.clone(memory_format=torch.contiguous_format)
    try:
        m = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        m.madvise(mmap.MADV_HUGEPAGE)   # before the first touch, so the faults below take huge pages
    except (OSError, ValueError):       # no such mapping or advice here: ordinary memory
        return t.clone(memory_format=torch.contiguous_format)
    addr = ctypes.addressof(ctypes.c_char.from_buffer(m))
    out = torch.frombuffer(m, dtype=t.dtype, count=t.numel(), offset=(-addr) % HUGE_PAGE).view(t.shape)
    out.copy_(t)
    return out


def tiles_supported(lib: ctypes.CDLL | None, dtype: torch.dtype, bank_size: int) -> bool:
    """The AVX-512 in-register-permute kernel applies: float32, bank <= 64, a CPU with AVX-512F."""
    return (lib is not None and dtype == torch.float32 and bank_size <= TILE_MAX_BANK
            and bool(_STATE["status"] and _STATE["status"].get("avx512")))


def make_tiles(values: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reorder (rows, banks, k) into groups of 16 rows: (ceil(rows/16), banks, k, 16); padded rows are value 0 at
    offset 0. Same bytes per nonzero as the packed format."""
    rows, banks, k = values.shape
    g = -(-rows // TILE_ROWS)
    pad = g * TILE_ROWS - rows
    if pad:
        values = torch.cat([values, values.new_zeros(pad, banks, k)])
        offsets = torch.cat([offsets, offsets.new_zeros(pad, banks, k)])
    vt = contiguous_copy(values.reshape(g, TILE_ROWS, banks, k).permute(0, 2, 3, 1))
    ot = contiguous_copy(offsets.reshape(g, TILE_ROWS, banks, k).permute(0, 2, 3, 1))
    return vt, ot


def tiles_into(lib: ctypes.CDLL, vt: torch.Tensor, ot: torch.Tensor, rows: int, x: torch.Tensor, y: torch.Tensor,
               bias: torch.Tensor | None, bank_size: int, cols: int, *, threads: int | None = None,
               wx: bool = False) -> None:
    """y = W x (+ bias) with the tiled layout of :func:`make_tiles`: x (cols,) or (n, cols) row-major (batch-major,
    as a Linear layer's input), y (rows,) or (n, rows); with ``wx`` x (cols, n) and y (rows, n), the layout of W @ X
    (the kernel transposes x into a buffer of its own and writes y in place)."""
    _, banks, k, _ = vt.shape
    n = 1 if x.dim() == 1 else x.shape[1 if wx else 0]
    rc = lib.bs_matmul_tiles(INDEX_CODES[ot.dtype], vt.data_ptr(), ot.data_ptr(), x.data_ptr(), y.data_ptr(),
                             None if bias is None else bias.data_ptr(), int(rows), banks, k, int(bank_size), int(cols),
                             n, int(threads or 0), 1 if wx else 0)
    if rc != 0:
        raise RuntimeError(f"balanced C++ tile kernel failed with code {rc}")


def bspmm_supported(lib: ctypes.CDLL | None, dtype: torch.dtype) -> bool:
    """The bank-major AVX-512 SpMM on the tiled layout applies: float32, a CPU with AVX-512F (any bank size)."""
    return lib is not None and dtype == torch.float32 and bool(_STATE["status"] and _STATE["status"].get("avx512"))


def bspmm_plan(n: int) -> tuple[int, int]:
    """(columns per tile, row groups of 16 per block) of :func:`bspmm_into` for n columns: one tile up to 128
    columns (rounded up to 16), and a block whose partial sums are ~64 KB. Measured at 4096^2, 90%, 2 threads:
    128-column tiles beat 64 at n = 128 by 1.2-1.4x; the block size moves the time by < 10%."""
    tw = min(128, -(-int(n) // 16) * 16)
    return tw, max(1, 65536 // (16 * tw * 4))


def bspmm_into(lib: ctypes.CDLL, vt: torch.Tensor, ot: torch.Tensor, rows: int, x: torch.Tensor, y: torch.Tensor,
               bias: torch.Tensor | None, bank_size: int, cols: int, *, threads: int | None = None,
               y_transposed: bool = False) -> None:
    """y = W x (+ bias) with the tiled layout of :func:`make_tiles`, banks walked in order inside blocks of rows:
    x (cols, n) row-major; y (rows, n) or, with ``y_transposed``, (n, rows)."""
    _, banks, k, _ = vt.shape
    n = x.shape[1]
    tw, gb = bspmm_plan(n)
    rc = lib.bs_spmm_tiles(INDEX_CODES[ot.dtype], vt.data_ptr(), ot.data_ptr(), x.data_ptr(), y.data_ptr(),
                           None if bias is None else bias.data_ptr(), int(rows), banks, k, int(bank_size), int(cols), n,
                           int(threads or 0), 2 if y_transposed else 0, tw, gb)
    if rc != 0:
        raise RuntimeError(f"balanced C++ bank-major SpMM failed with code {rc}")


GROUP_BANKS = 4  # banks per group of make_groups (x rows of a group at 32 columns: 4 * 64 * 32 * 4 B = 32 KB, L1)


def groups_supported(lib: ctypes.CDLL | None, dtype: torch.dtype) -> bool:
    """The AVX-512 SpMM on the bank-group layout applies: float32, a CPU with AVX-512F (any bank size)."""
    return bspmm_supported(lib, dtype)


def make_groups(values: torch.Tensor, offsets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reorder (rows, banks, k) group-major: (ceil(banks/G), rows, G*k) with G = GROUP_BANKS (the kernel's), entry
    e of a row's group being bank ``e // k`` of the group; the last group is padded with value 0 at offset 0 (the
    kernel never reads the padding). Same bytes per nonzero as the packed format."""
    rows, banks, k = values.shape
    group = GROUP_BANKS
    g = -(-banks // group)
    pad = g * group - banks
    if pad:
        values = torch.cat([values, values.new_zeros(rows, pad, k)], 1)
        offsets = torch.cat([offsets, offsets.new_zeros(rows, pad, k)], 1)
    vg = contiguous_copy(values.reshape(rows, g, group * k).permute(1, 0, 2))
    og = contiguous_copy(offsets.reshape(rows, g, group * k).permute(1, 0, 2))
    return vg, og


def groups_into(lib: ctypes.CDLL, vg: torch.Tensor, og: torch.Tensor, banks: int, k: int, x: torch.Tensor, y: torch.Tensor,
                bias: torch.Tensor | None, bank_size: int, cols: int, *, threads: int | None = None,
                y_transposed: bool = False) -> None:
    """y = W x (+ bias) with the bank-group layout of :func:`make_groups`: x (cols, n) row-major; y (rows, n) or,
    with ``y_transposed``, (n, rows)."""
    _, rows, gk = vg.shape
    rc = lib.bs_spmm_groups(INDEX_CODES[og.dtype], vg.data_ptr(), og.data_ptr(), x.data_ptr(), y.data_ptr(),
                            None if bias is None else bias.data_ptr(), int(rows), int(banks), int(k), int(bank_size),
                            int(cols), x.shape[1], int(threads or 0), 2 if y_transposed else 0, gk // k)
    if rc != 0:
        raise RuntimeError(f"balanced C++ bank-group SpMM failed with code {rc}")
