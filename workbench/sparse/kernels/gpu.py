"""GPU kernels for the balanced product (eq. 3 of formats.py): CUDA sources in ``balanced.cu`` loaded with
``cupy.RawModule``. torch CUDA tensors go in and out through DLPack without copies; kernels run on torch's
current stream.

Entry points (per value type f32/f16 and offset type u8/i16/i32): ``bs_spmv_*`` (batch 1, one warp per row),
``bs_spmm_*`` (shared-memory tiles of 64 rows x 32 batch columns, staged per bank), ``bs_spmm_simple_*``
(global-memory fallback for tiles that do not fit shared memory).
"""
from __future__ import annotations

import functools
import shutil
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("balanced.cu")
_VAL = {torch.float32: "f32", torch.float16: "f16"}
_IDX = {torch.uint8: "u8", torch.int16: "i16", torch.int32: "i32"}
TR, TN, TY = 64, 32, 8          # must match BS_TR / BS_TN / BS_TY in balanced.cu
SMEM_LIMIT = 48 * 1024          # default dynamic shared memory without opt-in


def available() -> bool:
    """True when CuPy is importable and sees a CUDA device (and torch does too)."""
    try:
        import cupy
        return bool(cupy.cuda.is_available()) and torch.cuda.is_available()
    except Exception:
        return False


@functools.cache
def module():
    """The compiled RawModule (NVRTC when the library is present, else nvcc)."""
    import cupy
    code = SOURCE.read_text()
    errors = []
    backends = ["nvrtc", "nvcc"] if shutil.which("nvcc") else ["nvrtc"]
    for backend in backends:
        try:
            mod = cupy.RawModule(code=code, backend=backend, options=("--std=c++14",))
            mod.get_function("bs_spmv_f32_u8")  # forces the compile
            return mod
        except Exception as e:  # pragma: no cover - depends on the machine's CUDA
            errors.append(f"{backend}: {e}")
    raise RuntimeError("could not compile balanced.cu: " + " | ".join(errors))


def _kernel(kind: str, values: torch.Tensor, offsets: torch.Tensor):
    return module().get_function(f"bs_{kind}_{_VAL[values.dtype]}_{_IDX[offsets.dtype]}")


def spmm_shared_bytes(bank_size: int, k: int) -> int:
    return bank_size * TN * 4 + TR * k * 8


def balanced_matmul(values: torch.Tensor, offsets: torch.Tensor, x: torch.Tensor, bank_size: int, cols: int,
                    *, kernel: str = "auto") -> torch.Tensor:
    """y = W x on CUDA tensors. ``kernel``: auto | spmv | spmm | simple (forcing one is for tests/benchmarks)."""
    import cupy
    import numpy as np

    if not values.is_cuda or not offsets.is_cuda or not x.is_cuda:
        raise ValueError("balanced_matmul on GPU needs CUDA tensors for values, offsets and x")
    if values.dtype not in _VAL:
        raise ValueError(f"GPU kernels support float32 and float16, got {values.dtype}")
    if x.dtype != values.dtype:
        raise ValueError(f"x has dtype {x.dtype} but the values are {values.dtype}")
    if not (values.is_contiguous() and offsets.is_contiguous() and x.is_contiguous()):
        raise ValueError("values, offsets and x must be contiguous")
    rows, banks, k = values.shape
    vec = x.dim() == 1
    n = 1 if vec else x.shape[1]
    y = torch.empty((rows,) if vec else (rows, n), dtype=x.dtype, device=x.device)
    if rows == 0 or n == 0:
        return y
    if kernel == "auto":
        kernel = "spmv" if n == 1 else ("spmm" if spmm_shared_bytes(bank_size, k) <= SMEM_LIMIT else "simple")
    args_v = [cupy.from_dlpack(t) for t in (values, offsets, x, y)]
    i32 = np.int32
    with cupy.cuda.Device(x.device.index), cupy.cuda.ExternalStream(torch.cuda.current_stream(x.device).cuda_stream):
        if kernel == "spmv":
            if n != 1:
                raise ValueError("the spmv kernel needs a single column")
            threads = 256
            blocks = (rows * 32 + threads - 1) // threads
            _kernel("spmv", values, offsets)((blocks,), (threads,), (*args_v, i32(rows), i32(banks), i32(k), i32(bank_size)))
        elif kernel == "spmm":
            smem = spmm_shared_bytes(bank_size, k)
            if smem > SMEM_LIMIT:
                raise ValueError(f"the tile needs {smem} bytes of shared memory (> {SMEM_LIMIT}); use kernel='simple'")
            grid = ((n + TN - 1) // TN, (rows + TR - 1) // TR)
            _kernel("spmm", values, offsets)(grid, (TN, TY), (*args_v, i32(rows), i32(cols), i32(banks), i32(k),
                                                              i32(bank_size), i32(n)), shared_mem=smem)
        elif kernel == "simple":
            if rows > 65535:
                raise ValueError(f"the simple kernel handles at most 65535 rows, got {rows}")
            grid = ((n + 127) // 128, rows)
            _kernel("spmm_simple", values, offsets)(grid, (128,), (*args_v, i32(rows), i32(banks), i32(k),
                                                                    i32(bank_size), i32(n)))
        else:
            raise ValueError(f"unknown kernel {kernel!r}")
    return y


def flush_l2(buffer: torch.Tensor | None = None, mb: int = 256) -> torch.Tensor:
    """Overwrite a buffer larger than the L2 cache (benchmark hygiene); returns the buffer to reuse."""
    import cupy
    import numpy as np
    if buffer is None:
        buffer = torch.zeros(mb * 1024 * 1024 // 4, dtype=torch.float32, device="cuda")
    with cupy.cuda.ExternalStream(torch.cuda.current_stream(buffer.device).cuda_stream):
        module().get_function("bs_flush")((264,), (256,), (cupy.from_dlpack(buffer), np.int64(buffer.numel())))
    return buffer
