"""The packed balanced format of Balanced Sparsity (Yao et al., AAAI 2019) — "Compressed Sparse Banks".

A balanced matrix W (rows x cols) split into banks of B columns keeps k weights per bank. It is stored as

    values  (rows, banks, k)   the kept weights, in increasing column order inside each bank
    offsets (rows, banks, k)   their position inside the bank, 0 <= o < B, in the smallest integer type
                               (uint8 for B <= 256, int16 for B <= 32768, else int32)

so that  W[r, b*B + offsets[r, b, j]] = values[r, b, j]  and  y = W x  is

    y_r = sum_b sum_j values[r, b, j] * x[b*B + offsets[r, b, j]]                         (3)

— every row (and every bank) does exactly the same amount of work, and the format costs
sizeof(value) + sizeof(offset) bytes per nonzero (5 for fp32 with uint8 offsets; scipy's CSR needs 8).
This module knows masks only through :mod:`workbench.sparse.prune`; the kernels that evaluate (3) live in
:mod:`workbench.sparse.kernels`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from workbench.sparse.kernels import cpp as _cpp
from workbench.sparse.kernels import cpu, gpu
from workbench.sparse.prune import balanced_mask

CPU_DTYPES = (torch.float32, torch.float64)
CUDA_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
INDEX_DTYPES = (torch.uint8, torch.int16, torch.int32)
_INDEX_MAX = {torch.uint8: 256, torch.int16: 32768, torch.int32: 2 ** 31}


def index_dtype_for(bank_size: int) -> torch.dtype:
    """Smallest integer type that holds an in-bank offset 0..bank_size-1."""
    for dt in INDEX_DTYPES:
        if bank_size <= _INDEX_MAX[dt]:
            return dt
    raise ValueError(f"bank_size {bank_size} is too large")


def validate_parts(values, offsets, shape, bank_size, *, check_offsets: bool = True) -> None:
    """ValueError unless (values, offsets, shape, bank_size) describe a valid balanced matrix: values (rows, banks,
    k) floating point without autograd, offsets of the same shape in an index dtype, banks = ceil(cols / bank_size),
    1 <= k <= bank_size, and every offset o of bank b with 0 <= o < bank_size and b * bank_size + o < cols."""
    if not isinstance(values, torch.Tensor) or not isinstance(offsets, torch.Tensor):
        raise ValueError("values and offsets must be torch tensors")
    if values.dim() != 3 or offsets.shape != values.shape:
        raise ValueError(f"values and offsets must both be (rows, banks, k), got {tuple(values.shape)} and "
                         f"{tuple(offsets.shape)}")
    if not values.is_floating_point():
        raise ValueError(f"values must be floating point, got {values.dtype}")
    if values.requires_grad:
        raise ValueError("values require grad; the balanced format is for inference: pass values.detach()")
    if offsets.dtype not in INDEX_DTYPES:
        raise ValueError(f"offsets must be one of {INDEX_DTYPES}, got {offsets.dtype}")
    if offsets.device != values.device:
        raise ValueError(f"values are on {values.device} but offsets on {offsets.device}")
    try:
        rows, cols = (int(shape[0]), int(shape[1]))
        bank_size = int(bank_size)
    except (TypeError, ValueError, IndexError):
        raise ValueError(f"shape must be (rows, cols) and bank_size an integer, got {shape!r}, {bank_size!r}") from None
    if values.numel() == 0 or rows < 1 or cols < 1:
        raise ValueError(f"the matrix is empty (shape {tuple(shape)}, values {tuple(values.shape)})")
    if len(shape) != 2:
        raise ValueError(f"shape must be (rows, cols), got {tuple(shape)}")
    if bank_size < 1 or bank_size > _INDEX_MAX[offsets.dtype]:
        raise ValueError(f"bank_size {bank_size} must be >= 1 and fit offsets of type {offsets.dtype}")
    r, banks, k = values.shape
    if r != rows:
        raise ValueError(f"values have {r} rows but shape says {rows}")
    if banks != -(-cols // bank_size):
        raise ValueError(f"{banks} banks of {bank_size} do not cover {cols} columns (expected {-(-cols // bank_size)})")
    if k > bank_size:
        raise ValueError(f"k = {k} entries per bank exceed the bank size {bank_size}")
    if not check_offsets:
        return
    lo, hi = int(offsets.min()), int(offsets.max())
    if lo < 0 or hi >= bank_size:
        raise ValueError(f"offsets must lie in [0, {bank_size}), found [{lo}, {hi}]")
    last = cols - (banks - 1) * bank_size  # columns in the last (possibly shorter) bank
    if last < bank_size and int(offsets[:, -1].max()) >= last:
        raise ValueError(f"an offset of the last bank points past column {cols - 1} (that bank holds {last} columns)")


# kernels the small-batch fast path calls directly (bspmm goes the general way)
_FAST_KINDS = ("tiles", "gather", "spmm", "gspmm")


@dataclass
class BalancedMatrix:
    """W in the packed balanced format. Built from parts, it is validated (shapes, dtypes, every offset inside its
    bank and inside the row, no autograd): a corrupt offset would otherwise make a kernel read outside x."""

    values: torch.Tensor   # (rows, banks, k)
    offsets: torch.Tensor  # (rows, banks, k), uint8 / int16 / int32
    shape: tuple[int, int]
    bank_size: int
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        validate_parts(self.values, self.offsets, self.shape, self.bank_size)
        self.shape = (int(self.shape[0]), int(self.shape[1]))
        self.bank_size = int(self.bank_size)

    def __getstate__(self) -> dict:
        """Pickled and deep-copied without ``_cache`` (derived layouts, compiled-kernel handles): a copy rebuilds its
        own at first use."""
        return {**self.__dict__, "_cache": {}}

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_dense(cls, W: torch.Tensor, sparsity: float = 0.9, bank_size: int = 64, *, pad: bool = False,
                   index_dtype: torch.dtype | None = None) -> BalancedMatrix:
        """Prune W with the balanced mask (eq. 1) and pack it."""
        return cls.from_mask(W, balanced_mask(W, sparsity, bank_size, pad=pad), bank_size, pad=pad,
                             index_dtype=index_dtype)

    @classmethod
    def from_mask(cls, W: torch.Tensor, mask: torch.Tensor, bank_size: int = 64, *, pad: bool = False,
                  index_dtype: torch.dtype | None = None) -> BalancedMatrix:
        """Pack W * mask; the mask must keep the same number k in every bank (the last, shorter bank of a
        padded row may keep fewer: its empty slots hold value 0 at offset 0)."""
        if not isinstance(W, torch.Tensor) or W.dim() != 2:
            raise ValueError(f"W must be a 2-D tensor, got {getattr(W, 'shape', type(W).__name__)}")
        if not W.is_floating_point():
            raise ValueError(f"W must be floating point, got {W.dtype}")
        if W.numel() == 0:
            raise ValueError(f"W is empty, shape {tuple(W.shape)}")
        if not isinstance(mask, torch.Tensor) or mask.shape != W.shape:
            raise ValueError(f"mask shape {getattr(mask, 'shape', None)} does not match W {tuple(W.shape)}")
        bank_size = int(bank_size)
        if bank_size < 1:
            raise ValueError(f"bank_size must be >= 1, got {bank_size}")
        idt = index_dtype or index_dtype_for(bank_size)
        if idt not in INDEX_DTYPES:
            raise ValueError(f"index_dtype must be one of {INDEX_DTYPES}, got {idt}")
        if bank_size > _INDEX_MAX[idt]:
            raise ValueError(f"bank_size {bank_size} does not fit offsets of type {idt}")
        rows, cols = W.shape
        rem = cols % bank_size
        if rem and not pad:
            raise ValueError(f"row length {cols} is not a multiple of bank_size {bank_size}; "
                             f"choose a bank size that divides it or pass pad=True")
        m = mask.to(torch.bool)
        Wd = W.detach()
        if rem:
            m = torch.cat([m, m.new_zeros(rows, bank_size - rem)], 1)
            Wd = torch.cat([Wd, Wd.new_zeros(rows, bank_size - rem)], 1)
        banks = m.shape[1] // bank_size
        mb = m.reshape(rows, banks, bank_size)
        counts = mb.sum(-1)
        k = int(counts.max()) if counts.numel() else 0
        if k == 0:
            raise ValueError("the mask keeps no weights")
        full = counts[:, :-1] if rem else counts
        if full.numel() and (full != k).any():
            raise ValueError("the mask is not balanced: banks keep different numbers of weights "
                             f"(min {int(full.min())}, max {k}); use prune.balanced_mask")
        # positions of the kept weights, ascending inside each bank (stable sort puts True first, in order)
        order = torch.sort((~mb).to(torch.int8), dim=-1, stable=True).indices[..., :k]
        valid = torch.gather(mb, -1, order)
        vals = torch.gather(Wd.reshape(rows, banks, bank_size), -1, order)
        vals = torch.where(valid, vals, torch.zeros_like(vals))
        offs = torch.where(valid, order, torch.zeros_like(order))
        return cls(vals.contiguous(), offs.to(idt).contiguous(), (rows, cols), bank_size)

    # ---------------------------------------------------------------- properties
    @property
    def banks(self) -> int:
        return self.values.shape[1]

    @property
    def k(self) -> int:
        return self.values.shape[2]

    @property
    def nnz(self) -> int:
        """Stored entries (k per bank): the work every kernel does."""
        return self.values.numel()

    @property
    def density(self) -> float:
        return self.nnz / (self.shape[0] * self.shape[1])

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density

    @property
    def nbytes(self) -> int:
        return self.values.numel() * self.values.element_size() + self.offsets.numel() * self.offsets.element_size()

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    def columns(self) -> torch.Tensor:
        """Absolute column of every stored entry, int64 (rows, banks, k)."""
        base = torch.arange(self.banks, device=self.device, dtype=torch.int64)[None, :, None] * self.bank_size
        return base + self.offsets.to(torch.int64)

    def _derived_layout(self, name: str, make) -> tuple[torch.Tensor, torch.Tensor]:
        """``make(values, offsets)``, built once and rebuilt if values/offsets change in place. The layouts are
        fresh copies on 2 MB huge pages where Linux gives them (:func:`cpp.contiguous_copy`)."""
        key = (self.values.data_ptr(), self.values._version, self.offsets.data_ptr(), self.offsets._version)
        hit = self._cache.get(name)
        if hit is None or hit[0] != key:
            hit = (key, make(self.values, self.offsets))
            self._cache[name] = hit
        return hit[1]

    def cpu_tiles(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The 16-row tiled copy used by the AVX-512 ``tiles`` / ``bspmm`` kernels. Same bytes as the packed format,
        so a matrix using it holds its weights twice."""
        return self._derived_layout("tiles", _cpp.make_tiles)

    def cpu_groups(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The bank-group copy (groups of 4 banks, group-major) read by the AVX-512 ``gspmm`` kernel at batches
        6-63. Same bytes as the packed format, so a matrix using it holds its weights once more."""
        return self._derived_layout("groups", _cpp.make_groups)

    def cpu_layout(self, kernel: str):
        """The cached extra layout ``kernel`` reads (:func:`cpu.layout_for`), or None."""
        which = cpu.layout_for(kernel)
        return None if which is None else (self.cpu_tiles() if which == "tiles" else self.cpu_groups())

    def to(self, device=None, dtype: torch.dtype | None = None) -> BalancedMatrix:
        v = self.values.to(device=device, dtype=dtype) if dtype else self.values.to(device)
        return BalancedMatrix(v.contiguous(), self.offsets.to(device).contiguous(), self.shape, self.bank_size)

    def to_dense(self) -> torch.Tensor:
        rows, cols = self.shape
        out = torch.zeros(rows, self.banks * self.bank_size, dtype=self.dtype, device=self.device)
        out.scatter_add_(1, self.columns().reshape(rows, -1), self.values.reshape(rows, -1))
        return out[:, :cols]

    # ---------------------------------------------------------------- products
    def _check_x(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"x must be a torch tensor, got {type(x).__name__}")
        if x.dim() not in (1, 2) or x.shape[0] != self.shape[1]:
            raise ValueError(f"x must have shape ({self.shape[1]},) or ({self.shape[1]}, n), got {tuple(x.shape)}")
        if x.device != self.device:
            raise ValueError(f"x is on {x.device} but the matrix is on {self.device}; move one of them")
        if x.dtype != self.dtype:
            raise ValueError(f"x has dtype {x.dtype} but the matrix has {self.dtype}")
        allowed = CUDA_DTYPES if x.is_cuda else CPU_DTYPES
        if x.dtype not in allowed:
            raise ValueError(f"dtype {x.dtype} is not supported on {x.device.type} (use one of {allowed})")
        if not x.is_contiguous():
            raise ValueError("x must be contiguous (call x.contiguous())")

    def matmul(self, x: torch.Tensor, *, threads: int | None = None, kernel: str = "auto") -> torch.Tensor:
        """W @ x for x of shape (in,) or (in, n), on CPU (C++ kernels, numba fallback) or CUDA (CuPy RawModule)
        tensors. ``kernel`` forces one implementation (tests, benchmarks): see ``kernels.cpu.KERNELS`` and
        ``kernels.gpu.KERNELS``."""
        if kernel == "auto" and threads is None and type(x) is torch.Tensor:
            call = self._cache.get("cpu_call")
            if call is not None:
                y = call(x, self.values, self.offsets)   # one C++ call (balanced_call.cpp); None: not one it takes
                if y is not None:
                    return y
        if isinstance(x, torch.Tensor) and x.is_neg():   # a negative view (torch._neg_view): its memory is -x
            x = x.resolve_neg()
        if self.values.is_cuda:
            self._check_x(x)
            return gpu.balanced_matmul(self.values, self.offsets, x, self.bank_size, self.shape[1], kernel=kernel)
        if kernel == "auto" and threads is None and type(x) is torch.Tensor:
            run = self._cpu_fast()
            if run is not None:
                y = run(x)
                if y is not None:
                    return y
        self._check_x(x)
        n = 1 if x.dim() == 1 else x.shape[1]
        chosen = cpu.kernel_for(n, self.dtype, self.bank_size) if kernel == "auto" else kernel
        tiles = self.cpu_layout(chosen) if kernel in cpu.KERNELS else None
        return cpu.balanced_matmul(self.values, self.offsets, x, self.bank_size, threads=threads, tiles=tiles,
                                   kernel=kernel)

    __matmul__ = matmul

    def _cpu_fast(self):
        """``run(x) -> y``, the CPU product at batches below ``cpu.BSPMM_MIN_N`` with the kernel choice, the layout
        and the pointers resolved once; ``run`` returns None for any x it does not take (another dtype or device, a
        wrong shape, a non-contiguous or empty x, a wider batch), which then goes the checked general way. None where
        no C++ kernels run (a GPU matrix, the numba fallback). After a cache flush the Python around one product runs
        cold: the general path cost ~85 us of a 0.42 ms SpMV at 4096^2 (measured 2026-11-30, direct call 0.34 ms), so
        this path makes one shape check and one call. The kernel per batch comes from ``cpu.kernel_for``; a kernel's
        function (and the layout it reads, for ``tiles`` / ``gspmm``) is built at its first use. Rebuilt when
        values/offsets change in place or the library is rebuilt.

        Where the call binding builds (``cpp.call_binding``), a kernel, once made, is also registered with a C++
        ``Runner`` kept as ``_cache["cpu_call"]``, which ``matmul`` tries first: the check of x, the allocation of y
        and the kernel in one call (measured 2026-11-30, same setup, interleaved medians of 100: 229 us through this
        Python path, 180 us through the Runner, 171 us for the bare kernel into a preallocated y)."""
        vals, offs = self.values, self.offsets
        key = (vals.data_ptr(), vals._version, offs.data_ptr(), offs._version, id(_cpp._STATE["lib"]))
        hit = self._cache.get("cpu_fast")
        if hit is not None and hit[0] == key:
            return hit[4]
        self._cache.pop("cpu_call", None)
        lib = _cpp.library() if self.device.type == "cpu" else None
        kinds = ([cpu.kernel_for(b, self.dtype, self.bank_size, lib) for b in range(1, cpu.BSPMM_MIN_N)]
                 if lib is not None else [])
        made: dict = {}
        run = None
        if any(k in _FAST_KINDS for k in kinds):
            mod = _cpp.call_binding()
            call = mod.Runner(vals, offs, self.shape[1], self.bank_size, len(kinds)) if mod is not None else None
            run = self._make_cpu_runner(lib, kinds, made, call)
        # the key of the library is taken after library() built it, so the next call matches
        self._cache["cpu_fast"] = (key[:4] + (id(_cpp._STATE["lib"]),), lib, kinds, made, run)
        return run

    def _make_cpu_runner(self, lib, kinds: list, made: dict, call=None):
        rows, cols = self.shape
        dtype = self.dtype
        maxn = len(kinds)
        empty = torch.empty

        def run(x):
            shp = x.shape
            nd = len(shp)
            n = 1 if nd == 1 else (shp[1] if nd == 2 else 0)
            if (n < 1 or n > maxn or shp[0] != cols or x.dtype is not dtype or not x.is_cpu
                    or not x.is_contiguous()):
                return None
            kind = kinds[n - 1]
            f = made.get(kind)
            if f is None:
                if kind not in _FAST_KINDS:
                    return None
                f = made[kind] = self._make_cpu_fast(lib, kind, call, [b + 1 for b in range(maxn) if kinds[b] == kind])
            y = empty((rows,) if nd == 1 else (rows, n), dtype=dtype)
            return f(x, y, n)
        return run

    def _make_cpu_fast(self, lib, kind: str, call=None, batches=()):
        """``fast(x, y, n) -> y`` for one C++ kernel (see :meth:`_cpu_fast`), calling its entry point directly; the
        same kernel is registered with the C++ Runner ``call`` for ``batches`` where there is one."""
        rows, cols = self.shape
        banks, k, bsz, dtype = self.banks, self.k, self.bank_size, self.dtype
        tcode = _cpp.INDEX_CODES[self.offsets.dtype]
        tail = ()
        if kind == "tiles":
            vt, ot = keep = self.cpu_tiles()
            f, vp, op, head, flags = lib.bs_matmul_tiles, vt.data_ptr(), ot.data_ptr(), (tcode,), 1
        elif kind == "gspmm":
            vg, og = keep = self.cpu_groups()
            f, vp, op, head, flags = lib.bs_spmm_groups, vg.data_ptr(), og.data_ptr(), (tcode,), 0
            tail = (_cpp.GROUP_BANKS,)
        else:
            f, vp, op, flags = lib.bs_matmul, self.values.data_ptr(), self.offsets.data_ptr(), 0
            head = (_cpp.VALUE_CODES[dtype], tcode)
            keep = (self.values, self.offsets)
        if call is not None:
            mod = _cpp.call_binding()
            sig = {"tiles": mod.TILES, "gspmm": mod.GROUPS}.get(kind, mod.MATMUL)
            for n in batches:
                call.set(n, sig, _cpp.entry_address(f), head[0], head[-1], keep[0], keep[1], flags,
                         tail[0] if tail else 0)
            self._cache["cpu_call"] = call

        def fast(x, y, n, _keep=keep):
            rc = f(*head, vp, op, x.data_ptr(), y.data_ptr(), None, rows, banks, k, bsz, cols, n, 0, flags, *tail)
            if rc != 0:
                raise RuntimeError(f"balanced C++ {kind} kernel failed with code {rc}")
            return y
        return fast

    def matmul_reference(self, x: torch.Tensor) -> torch.Tensor:
        """Pure-torch gather + sum version of eq. (3), float64 — the slow oracle for tests."""
        xv = x.to(torch.float64)
        cols = self.columns().reshape(self.shape[0], -1)
        vals = self.values.reshape(self.shape[0], -1).to(torch.float64)
        if xv.dim() == 1:
            return (vals * xv[cols]).sum(-1)
        return torch.einsum("re,ren->rn", vals, xv[cols])
