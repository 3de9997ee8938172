// Balanced Sparsity (Yao et al., AAAI 2019): GPU kernels for y = W x with W in the packed balanced format
//   values  (rows, banks, k)   kept weights, ascending column inside a bank
//   offsets (rows, banks, k)   in-bank position (uint8 / int16 / int32)
//   y[r] = sum_b sum_j values[r,b,j] * x[b*B + offsets[r,b,j]]
// Loaded by workbench/sparse/kernels/gpu.py with cupy.RawModule (one module per compile-time k, -DBS_K=<k>, and
// value/offset pair, -DBS_ONE=<i>; the K = 0 entry points take k at run time). Every entry point is extern "C"; the
// launch geometry (lanes per row, tile sizes, stages, shared memory) is planned on the host by gpu.py (plan_spmv /
// plan_spmm), and the index math below is mirrored line by line by the CPU emulator gpu_emulate.py, which tests
// check against float64 products. Value types: float (f32), __half (f16), __nv_bfloat16 (bf16); accumulation is
// always fp32.
//
// spmv (batch 1): L lanes (a power of two <= 32, chosen by the host from the row length) per row; every lane reads
//   VEC consecutive entries at a time with one 16-byte load of values and one load of VEC offsets (row starts must be
//   16-byte aligned: the host checks and otherwise uses VEC = 1), BS_SPMV_U such loads in flight; the bank of entry
//   e is e / K with K a compile-time constant (a multiply-shift, no runtime division); x is staged in shared memory
//   when it fits (SX, grid capped to the resident blocks) or read through the read-only cache; a shuffle reduction
//   over the L lanes. Rows are walked with a grid-stride loop (any number of rows).
// spmvn (batches 2..32, aligned rows): the spmv scheme with NC = 8 or 32 accumulators per lane; each kept entry reads
//   its row of x (n contiguous values, 16-byte loads where n allows) once.
// spmm (larger batches, or unaligned rows): a block computes TR rows x TN batch columns, TN in {8, 16, 32, 64} chosen from n (batch 3 uses
//   an 8-wide tile, not 32). x is (cols, n) row-major. The block walks the banks in stages of G banks; a stage stages
//   x[b*B:(b+G)*B, col0:col0+TN] (rows of TN contiguous elements: coalesced) and the tile's TR x (G*k) values and
//   offsets (each row's G*k entries are contiguous) in shared memory with 16-byte cp.async copies where aligned, two
//   stages in flight (double buffering: the copy of stage s+1 overlaps the FMAs of stage s; two barriers per stage
//   of G banks, not per bank; copy granularity 16/8/4 bytes as the host's alignment check allows, element-wise
//   otherwise). Each thread accumulates RPT rows x CPT columns. Shared memory above 48 KB uses the
//   opt-in (cudaFuncAttributeMaxDynamicSharedMemorySize, up to ~227 KB on H100/H200), set by the host.
// spmm_fallback: one warp per (row, 32-column chunk), lanes over columns (coalesced x loads), 64-bit grid-stride loop
//   over all (row, chunk) pairs: any number of rows, any bank size (used when a stage of one bank does not fit).
// Every offset is bounds-checked: an entry with o >= B or column b*B + o >= cols contributes nothing.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_pipeline.h>

#ifndef BS_K
#define BS_K 0  // compile-time k of the specialised entry points (0: only the run-time-k ones are meaningful)
#endif

typedef __nv_bfloat16 bs_bf16;

__device__ __forceinline__ float bs_f(float v) { return v; }
__device__ __forceinline__ float bs_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float bs_f(bs_bf16 v) { return __bfloat162float(v); }
__device__ __forceinline__ void bs_store(float* p, float v) { *p = v; }
__device__ __forceinline__ void bs_store(__half* p, float v) { *p = __float2half(v); }
__device__ __forceinline__ void bs_store(bs_bf16* p, float v) { *p = __float2bfloat16(v); }

template <typename I>
__device__ __forceinline__ unsigned bs_u(I o) {  // offsets as unsigned: a negative int16/int32 fails the bound check
    return (unsigned)o;
}
template <>
__device__ __forceinline__ unsigned bs_u<short>(short o) {
    return (unsigned)(unsigned short)o;
}
template <>
__device__ __forceinline__ unsigned bs_u<unsigned char>(unsigned char o) {
    return (unsigned)o;
}

template <typename T, int N>
struct alignas(sizeof(T) * N) bs_vec {
    T v[N];
};

// ------------------------------------------------------------------------------------------------------------ spmv
#ifndef BS_SPMV_U
// Vector loads per lane issued together. Measured on an H200 (2026-11-30; fp32, 90.6%, queued CUDA-event timing,
// L2 flushed), spmv with x in shared memory / in global memory / spmvn8, in microseconds:
//   4096^2:  U=1 10.3 / 10.2 / 37.0   U=2 10.4 / 10.0 / 38.4   U=4 11.0 / 10.0 / 38.7
//   16384^2: U=1 70.3 / 54.7 / 155    U=2 60.1 / 61.3 / 165    U=4 56.9 / 65.4 / 198
// U=2 was chosen for the shared-memory kernels the planner uses; every GPU test and the committed benchmark ran
// with it. U=1 with x in global memory was ~10% faster at 16384^2 (left to the next GPU session to verify).
#define BS_SPMV_U 2
#endif
// K > 0: compile-time k; K == 0: k at run time. VEC: entries per vector load (16 / sizeof(T), or 1).
// NC: batch columns per row (1: spmv; 8 or 32: "spmvn", batches 2..NC, n at run time): x is (cols, n) row-major and
// every kept entry reads its x row of n contiguous values once, into NC accumulators per lane (16-byte loads when
// xvec: n * sizeof(T) is a multiple of 16 and x is aligned; the host checks). Each lane reduces its NC sums over
// the lanes of its row.
// SX: x is first copied into shared memory (cols * n elements; the host checked that they fit and capped the grid
// to the blocks resident at once, so each block copies x once and walks many rows), and the gathers read it there: a
// warp's gather touches ~20 different 128-byte lines of x (its 32 lanes cover ~20 banks of a row), which costs ~20
// L1 wavefronts from global memory but only a few bank conflicts in shared memory.
template <int K, int VEC, int NC, bool SX, typename T, typename I>
__device__ __forceinline__ void bs_spmv_impl(const T* __restrict__ vals, const I* __restrict__ offs,
                                             const T* __restrict__ x, T* __restrict__ y, long long rows, int banks,
                                             int k_rt, int bank_size, int cols, int lanes, int n, int xvec) {
    extern __shared__ __align__(16) unsigned char bs_smem[];
    constexpr int XV = 16 / (int)sizeof(T);  // entries of T per 16-byte load
    T* xs = reinterpret_cast<T*>(bs_smem);
    if (SX) {
        const long long total = (long long)cols * n;
        const long long nv = VEC > 1 ? total / XV : 0;  // x is 16-byte aligned whenever VEC > 1 (host-checked)
        const bs_vec<T, XV>* xv = reinterpret_cast<const bs_vec<T, XV>*>(x);
        bs_vec<T, XV>* xsv = reinterpret_cast<bs_vec<T, XV>*>(xs);
        for (long long i = threadIdx.x; i < nv; i += blockDim.x) xsv[i] = xv[i];
        for (long long i = nv * XV + threadIdx.x; i < total; i += blockDim.x) xs[i] = x[i];
        __syncthreads();
    }
    const T* xsrc = SX ? xs : x;
    const int k = K > 0 ? K : k_rt;
    const long long nnz = (long long)banks * k;
    const long long nchunks = nnz / VEC;  // the host guarantees nnz % VEC == 0
    const int lane = threadIdx.x & (lanes - 1);
    const long long group = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / lanes;
    const long long groups = ((long long)gridDim.x * blockDim.x) / lanes;
    // all lanes of a group share the row; groups of one warp are contiguous lanes (lanes divides 32)
    const unsigned mask = lanes == 32 ? 0xffffffffu : (((1u << lanes) - 1u) << ((threadIdx.x & 31) & ~(lanes - 1)));
    for (long long row = group; row < rows; row += groups) {  // uniform per group: whole groups iterate together
        const bs_vec<T, VEC>* v = reinterpret_cast<const bs_vec<T, VEC>*>(vals + row * nnz);
        const bs_vec<I, VEC>* o = reinterpret_cast<const bs_vec<I, VEC>*>(offs + row * nnz);
        float acc[NC];
#pragma unroll
        for (int c = 0; c < NC; ++c) acc[c] = 0.f;
        // BS_SPMV_U chunks per lane per step, all loaded before any is used: several loads in flight per lane
        // (a row has only a few chunks per lane). The chunks are still summed in ascending order, as the emulator
        // does.
        for (long long c0 = lane; c0 < nchunks; c0 += (long long)BS_SPMV_U * lanes) {
            bs_vec<T, VEC> vv[BS_SPMV_U];
            bs_vec<I, VEC> oo[BS_SPMV_U];
#pragma unroll
            for (int u = 0; u < BS_SPMV_U; ++u) {
                const long long c = c0 + (long long)u * lanes;
                if (c < nchunks) {
                    vv[u] = v[c];
                    oo[u] = o[c];
                }
            }
#pragma unroll
            for (int u = 0; u < BS_SPMV_U; ++u) {
                const long long c = c0 + (long long)u * lanes;
                if (c < nchunks) {
#pragma unroll
                    for (int i = 0; i < VEC; ++i) {
                        const long long e = c * VEC + i;
                        const unsigned o = bs_u<I>(oo[u].v[i]);
                        const unsigned col = (unsigned)(e / k) * (unsigned)bank_size + o;
                        if (o < (unsigned)bank_size && col < (unsigned)cols) {
                            const float w = bs_f(vv[u].v[i]);
                            if (NC == 1) {
                                acc[0] += w * bs_f(SX ? xs[col] : __ldg(x + col));
                            } else {
                                const T* xr = xsrc + (long long)col * n;
                                if (NC % XV == 0 && xvec) {
#pragma unroll
                                    for (int c = 0; c < NC; c += XV) {
                                        if (c < n) {
                                            const bs_vec<T, XV> q = *reinterpret_cast<const bs_vec<T, XV>*>(xr + c);
#pragma unroll
                                            for (int t = 0; t < XV; ++t) acc[c + t] += w * bs_f(q.v[t]);
                                        }
                                    }
                                } else {
#pragma unroll
                                    for (int c = 0; c < NC; ++c)
                                        if (c < n) acc[c] += w * bs_f(xr[c]);
                                }
                            }
                        }
                    }
                }
            }
        }
#pragma unroll
        for (int c = 0; c < NC; ++c) {
            float a = acc[c];
            for (int s = lanes >> 1; s > 0; s >>= 1) a += __shfl_down_sync(mask, a, s, lanes);
            if (lane == 0 && c < n) bs_store(y + row * n + c, a);
        }
    }
}

// ------------------------------------------------------------------------------------------------------------ spmm
#define BS_THREADS 256

template <typename T>
__device__ __forceinline__ int bs_pad16(int elems) {  // round a row of elements up to a multiple of 16 bytes
    const int per = 16 / (int)sizeof(T) > 0 ? 16 / (int)sizeof(T) : 1;
    return (elems + per - 1) / per * per;
}

// Copy `count` elements from global src to shared dst, lanes t0, t0 + step, ...: with cp.async chunks of vec_bytes
// (16, 8 or 4; the host checked that every row start and length is a multiple) when the whole row is valid, else
// element by element with zero fill past `valid`.
template <typename T>
__device__ __forceinline__ void bs_copy_row(T* dst, const T* src, int count, int valid, int vec_bytes, int t0,
                                            int step) {
    if (vec_bytes >= (int)sizeof(T) && valid == count) {
        const int per = vec_bytes / (int)sizeof(T);
        for (int i = t0 * per; i < count; i += step * per) __pipeline_memcpy_async(dst + i, src + i, vec_bytes);
    } else {
        for (int i = t0; i < count; i += step) dst[i] = i < valid ? src[i] : T(0);
    }
}

// Shared-memory layout of one stage (element counts; the host mirrors it in gpu.spmm_smem_bytes):
//   xs: G*B rows x TNP (TN padded to 16 bytes + 16 bytes) elements of T
//   ws: TR rows x GKP (G*k padded to 16 bytes) values of T
//   os: TR rows x GKO (G*k padded to 16 bytes) offsets of I
template <int K, int TN, int CPT, typename T, typename I>
__device__ __forceinline__ void bs_spmm_impl(const T* __restrict__ vals, const I* __restrict__ offs,
                                             const T* __restrict__ x, T* __restrict__ y, int rows, int cols,
                                             int banks, int k_rt, int bank_size, int n, int G, int x_vec, int v_vec,
                                             int o_vec) {
    extern __shared__ __align__(16) unsigned char bs_smem[];
    const int k = K > 0 ? K : k_rt;
    constexpr int TNT = TN / CPT;              // threads across the columns of the tile
    constexpr int TY = BS_THREADS / TNT;       // threads across the rows
    constexpr int TR = 64;                     // rows per tile
    constexpr int RPT = TR / TY;               // rows per thread
    const int TNP = bs_pad16<T>(TN) + 16 / (int)sizeof(T);
    const int GK = G * k;
    const int GKP = bs_pad16<T>(GK);
    const int GKO = bs_pad16<I>(GK);
    const int xs_elems = G * bank_size * TNP;
    const int stage_bytes = xs_elems * (int)sizeof(T) + TR * GKP * (int)sizeof(T) + TR * GKO * (int)sizeof(I);
    const int tid = threadIdx.x;
    const int tx = tid % TNT, ty = tid / TNT;
    const int col0 = blockIdx.x * TN;
    const long long row0 = (long long)blockIdx.y * TR + (long long)blockIdx.z * TR * gridDim.y;
    if (row0 >= rows) return;
    const long long nnz = (long long)banks * k;
    const int nstages = (banks + G - 1) / G;

    auto xs_of = [&](int buf) { return reinterpret_cast<T*>(bs_smem + buf * stage_bytes); };
    auto ws_of = [&](int buf) { return reinterpret_cast<T*>(bs_smem + buf * stage_bytes + xs_elems * sizeof(T)); };
    auto os_of = [&](int buf) {
        return reinterpret_cast<I*>(bs_smem + buf * stage_bytes + xs_elems * sizeof(T) + TR * GKP * sizeof(T));
    };
    auto load_stage = [&](int s, int buf) {
        T* xs = xs_of(buf);
        T* ws = ws_of(buf);
        I* os = os_of(buf);
        const int b0 = s * G;
        const int gb = min(G, banks - b0);
        // x slice: G*B rows of the tile's TN columns; one warp per row, lanes over the columns
        const int valid_c = max(0, min(TN, n - col0));
        for (int rr = tid / 32; rr < G * bank_size; rr += BS_THREADS / 32) {
            const long long gr = (long long)b0 * bank_size + rr;
            T* dst = xs + rr * TNP;
            if (rr < gb * bank_size && gr < cols)
                bs_copy_row<T>(dst, x + gr * n + col0, TN, valid_c, x_vec, tid & 31, 32);
            else
                for (int i = tid & 31; i < TN; i += 32) dst[i] = T(0);
        }
        // weights: TR rows x (gb * k) contiguous entries per row
        const int gk = gb * k;
        for (int rr = tid / 32; rr < TR; rr += BS_THREADS / 32) {
            const long long gr = row0 + rr;
            if (gr < rows) {
                const long long base = gr * nnz + (long long)b0 * k;
                bs_copy_row<T>(ws + rr * GKP, vals + base, GK, gk, v_vec, tid & 31, 32);
                bs_copy_row<I>(os + rr * GKO, offs + base, GK, gk, o_vec, tid & 31, 32);
            } else {
                for (int i = tid & 31; i < GK; i += 32) {
                    ws[rr * GKP + i] = T(0);
                    os[rr * GKO + i] = I(0);
                }
            }
        }
    };

    float acc[RPT][CPT];
#pragma unroll
    for (int i = 0; i < RPT; ++i)
#pragma unroll
        for (int c = 0; c < CPT; ++c) acc[i][c] = 0.f;

    load_stage(0, 0);
    __pipeline_commit();
    for (int s = 0; s < nstages; ++s) {
        const int buf = s & 1;
        if (s + 1 < nstages) {
            load_stage(s + 1, buf ^ 1);
            __pipeline_commit();
            __pipeline_wait_prior(1);
        } else {
            __pipeline_wait_prior(0);
        }
        __syncthreads();
        const T* xs = xs_of(buf);
        const T* ws = ws_of(buf);
        const I* os = os_of(buf);
        const int gb = min(G, banks - s * G);
        for (int bl = 0; bl < gb; ++bl) {
            const unsigned gbase = (unsigned)((s * G + bl) * bank_size);
#pragma unroll
            for (int i = 0; i < RPT; ++i) {
                const int rr = ty + i * TY;
                const T* wr = ws + rr * GKP + bl * k;
                const I* orr = os + rr * GKO + bl * k;
#pragma unroll
                for (int j = 0; j < (K > 0 ? K : 1); ++j) {
                    for (int jj = (K > 0 ? j : 0); jj < (K > 0 ? j + 1 : k); ++jj) {
                        const unsigned o = bs_u<I>(orr[jj]);
                        if (o < (unsigned)bank_size && gbase + o < (unsigned)cols) {
                            const float w = bs_f(wr[jj]);
                            const T* xr = xs + (bl * bank_size + (int)o) * TNP + tx * CPT;
#pragma unroll
                            for (int c = 0; c < CPT; ++c) acc[i][c] += w * bs_f(xr[c]);
                        }
                    }
                }
            }
        }
        __syncthreads();  // the next iteration's copies overwrite this buffer
    }
#pragma unroll
    for (int i = 0; i < RPT; ++i) {
        const long long gr = row0 + ty + i * TY;
        if (gr < rows) {
#pragma unroll
            for (int c = 0; c < CPT; ++c) {
                const int gc = col0 + tx * CPT + c;
                if (gc < n) bs_store(y + gr * n + gc, acc[i][c]);
            }
        }
    }
}

// --------------------------------------------------------------------------------------------------- spmm fallback
template <typename T, typename I>
__device__ __forceinline__ void bs_spmm_fallback_impl(const T* __restrict__ vals, const I* __restrict__ offs,
                                                      const T* __restrict__ x, T* __restrict__ y, long long rows,
                                                      int banks, int k, int bank_size, int cols, int n) {
    const int lane = threadIdx.x & 31;
    const long long chunks = (n + 31) / 32;
    const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const long long warps = ((long long)gridDim.x * blockDim.x) >> 5;
    const long long nnz = (long long)banks * k;
    for (long long w = warp; w < rows * chunks; w += warps) {
        const long long r = w / chunks;
        const int c = (int)(w - r * chunks) * 32 + lane;
        const T* v = vals + r * nnz;
        const I* o = offs + r * nnz;
        float acc = 0.f;
        for (long long e = 0; e < nnz; ++e) {
            const unsigned oe = bs_u<I>(o[e]);
            const unsigned col = (unsigned)(e / k) * (unsigned)bank_size + oe;
            if (oe < (unsigned)bank_size && col < (unsigned)cols && c < n)
                acc += bs_f(v[e]) * bs_f(x[(long long)col * n + c]);
        }
        if (c < n) bs_store(y + r * n + c, acc);
    }
}

// ---------------------------------------------------------------------------------------------------- entry points
#define BS_SPMV(NAME, K, VEC, NC, SX, T, I)                                                                       \
    extern "C" __global__ void __launch_bounds__(256)                                                              \
    NAME(const T* vals, const I* offs, const T* x, T* y, long long rows, int banks, int k, int bank_size,          \
         int cols, int lanes, int n, int xvec) {                                                                   \
        bs_spmv_impl<K, VEC, NC, SX, T, I>(vals, offs, x, y, rows, banks, k, bank_size, cols, lanes, n, xvec);     \
    }

#define BS_SPMM(NAME, K, TN, CPT, T, I)                                                                           \
    extern "C" __global__ void __launch_bounds__(BS_THREADS)                                                       \
    NAME(const T* vals, const I* offs, const T* x, T* y, int rows, int cols, int banks, int k, int bank_size,      \
         int n, int G, int x_vec, int v_vec, int o_vec) {                                                          \
        bs_spmm_impl<K, TN, CPT, T, I>(vals, offs, x, y, rows, cols, banks, k, bank_size, n, G, x_vec, v_vec,      \
                                       o_vec);                                                                     \
    }

#define BS_FALLBACK(NAME, T, I)                                                                                    \
    extern "C" __global__ void __launch_bounds__(256)                                                              \
    NAME(const T* vals, const I* offs, const T* x, T* y, long long rows, int banks, int k, int bank_size,          \
         int cols, int n) {                                                                                        \
        bs_spmm_fallback_impl<T, I>(vals, offs, x, y, rows, banks, k, bank_size, cols, n);                         \
    }

// per (value type, offset type): spmv with compile-time k (vector loads or scalar ones, "v1"; x in shared memory or
// not; the scalar ones with x in shared memory are timed only by the GPU A/B, gpu.spmv_variants) and run-time k
// (scalar loads); spmvn for 8 and 32 columns (vector loads, x in shared memory or not);
// spmm tiles 8/16/32/64 columns with compile-time and run-time k; the fallback. -DBS_ONE=<i> keeps only the i-th
// (value, offset) pair below (gpu.py compiles one module per k and pair: a ninth of the compile time).
#define BS_ALL(SUF, T, I, VEC)                                         \
    BS_SPMV(bs_spmv_k_##SUF, BS_K, VEC, 1, false, T, I)                \
    BS_SPMV(bs_spmv_k_sx_##SUF, BS_K, VEC, 1, true, T, I)              \
    BS_SPMV(bs_spmv_k_v1_##SUF, BS_K, 1, 1, false, T, I)               \
    BS_SPMV(bs_spmv_k_v1_sx_##SUF, BS_K, 1, 1, true, T, I)             \
    BS_SPMV(bs_spmv_rt_##SUF, 0, 1, 1, false, T, I)                    \
    BS_SPMV(bs_spmvn8_k_##SUF, BS_K, VEC, 8, false, T, I)              \
    BS_SPMV(bs_spmvn8_k_sx_##SUF, BS_K, VEC, 8, true, T, I)            \
    BS_SPMV(bs_spmvn32_k_##SUF, BS_K, VEC, 32, false, T, I)            \
    BS_SPMV(bs_spmvn32_k_sx_##SUF, BS_K, VEC, 32, true, T, I)          \
    BS_SPMM(bs_spmm8_k_##SUF, BS_K, 8, 1, T, I)                        \
    BS_SPMM(bs_spmm16_k_##SUF, BS_K, 16, 2, T, I)                      \
    BS_SPMM(bs_spmm32_k_##SUF, BS_K, 32, 2, T, I)                      \
    BS_SPMM(bs_spmm64_k_##SUF, BS_K, 64, 4, T, I)                      \
    BS_SPMM(bs_spmm8_rt_##SUF, 0, 8, 1, T, I)                          \
    BS_SPMM(bs_spmm16_rt_##SUF, 0, 16, 2, T, I)                        \
    BS_SPMM(bs_spmm32_rt_##SUF, 0, 32, 2, T, I)                        \
    BS_SPMM(bs_spmm64_rt_##SUF, 0, 64, 4, T, I)                        \
    BS_FALLBACK(bs_spmm_fallback_##SUF, T, I)

#if !defined(BS_ONE) || BS_ONE == 0
BS_ALL(f32_u8, float, unsigned char, 4)
#endif
#if !defined(BS_ONE) || BS_ONE == 1
BS_ALL(f32_i16, float, short, 4)
#endif
#if !defined(BS_ONE) || BS_ONE == 2
BS_ALL(f32_i32, float, int, 4)
#endif
#if !defined(BS_ONE) || BS_ONE == 3
BS_ALL(f16_u8, __half, unsigned char, 8)
#endif
#if !defined(BS_ONE) || BS_ONE == 4
BS_ALL(f16_i16, __half, short, 8)
#endif
#if !defined(BS_ONE) || BS_ONE == 5
BS_ALL(f16_i32, __half, int, 8)
#endif
#if !defined(BS_ONE) || BS_ONE == 6
BS_ALL(bf16_u8, bs_bf16, unsigned char, 8)
#endif
#if !defined(BS_ONE) || BS_ONE == 7
BS_ALL(bf16_i16, bs_bf16, short, 8)
#endif
#if !defined(BS_ONE) || BS_ONE == 8
BS_ALL(bf16_i32, bs_bf16, int, 8)
#endif

// L2 flush helper for the benchmark: writes a buffer larger than the L2 cache.
extern "C" __global__ void bs_flush(float* buf, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        buf[i] = buf[i] * 0.5f + 1.0f;
}
