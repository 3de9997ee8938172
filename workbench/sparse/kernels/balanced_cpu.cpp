// Balanced Sparsity (Yao et al., AAAI 2019): CPU kernels for y = W x with W in the packed balanced format
//   values  (rows, banks, k)   kept weights, ascending column inside a bank
//   offsets (rows, banks, k)   in-bank position (uint8 / int16 / int32)
//   y[r] = sum_b sum_j values[r,b,j] * x[b*B + offsets[r,b,j]]                    (eq. 3 of formats.py)
//
// Built at first use by workbench/sparse/kernels/cpp.py (torch.utils.cpp_extension, cached by source hash) and
// called through ctypes; the work is split with at::parallel_for, i.e. on PyTorch's own intra-op thread pool
// (the same OpenMP runtime as torch's ops, no second pool). Compiled for baseline x86-64: the AVX2/FMA paths carry
// __attribute__((target)) and are chosen at run time (__builtin_cpu_supports), so a cached build can move between
// machines.
//
// spmv (batch 1): every row has the same entry count banks*k, so the bank base ((e / k) * B) of entry e follows a
//   pattern that repeats every lcm(8, k) entries: it is kept as P = k / gcd(k, 8) vectors of 8 int32 plus a
//   per-period step, and the row is processed 8 entries at a time: zero-extend 8 offsets, add the pattern, clamp to
//   the row length (memory safety for corrupted offsets), gather x, FMA with 8 values. The stream is then
//   5 bytes / nonzero (fp32 + uint8) and x stays in L1.
// spmm (batch n, x (cols, n) row-major, y (rows, n)): per row, per column tile of up to 32 columns held in 4 ymm
//   accumulators, every stored entry broadcasts its value and FMAs the contiguous x[col, tile] (one load per FMA);
//   a partial last vector uses masked loads/stores. For k <= 8 the banks are walked with k fixed at compile time,
//   the weight streams prefetched ahead in software; on AVX-512 machines 9..63 columns use the same walk with zmm
//   tiles of 16 or 32 columns, and n = 8 / 16 / 32 over full power-of-two banks are specialised (offset & (B - 1),
//   x row stride known at compile time).
// AVX-512 machines (float32) also use the tiled layout (rows in groups of 16, bank-major inside a group):
//   tiles (batch <= 8): the bank's x slice held in registers, 16 rows' entries picked with in-register permutes
//   (x (n, cols) and y (n, rows) as a Linear layer has them, or x (cols, n) and y (rows, n) for W @ X);
//   bspmm (batch >= 64): the SpMM above with banks walked in order inside a block of rows, so x rows come from L1/L2
//   instead of L3 (see bspmm_block_avx512).
// Generic scalar paths (float64, machines without AVX2) are plain loops the compiler vectorises where it can.
// Every entry point is extern "C", returns 0 on success or a negative code; no exception crosses the C ABI.
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define BS_X86 1
#else
#define BS_X86 0
#endif

namespace {

constexpr int BS_ABI = 6;
// software prefetch distance of the tile kernel's weight stream, bytes (measured: 10-15% faster than none with the
// caches flushed, flat between 1 and 8 KB; the hardware prefetchers stop at 4 KB page boundaries)
#ifndef BS_PF
#define BS_PF 2048
#endif
// 0: the AVX2 SpMM reads a column-base table instead of walking the banks (spmm_bank_avx2; kept for timing runs)
#ifndef BS_TGB
#define BS_TGB 4
#endif
// software prefetch distance of the bank-walking SpMM's value stream, bytes (the offsets stream is prefetched at a
// quarter of it, the same rows ahead). Measured, 4096^2 at 90.6%, caches flushed, 2 threads: 0.82x the time at
// 8 columns and 0.75x at 16 against no prefetch; 1-4 KB all within noise
// the AVX-512 bank walk from this many columns (below it, 8-column ymm tiles waste no lanes)
#ifndef BS_Z_MIN_N
#define BS_Z_MIN_N 9
#endif
#ifndef BS_SPF
#define BS_SPF 2048
#endif
#ifndef BS_BANKWALK
#define BS_BANKWALK 1
#endif

template <typename I>
inline uint64_t uoff(I o) {
    return (uint64_t)(typename std::make_unsigned<I>::type)o;
}

// f(std::integral_constant<int, K>{}) for the run-time k in 1..8: the bank walks take k at compile time. A lambda
// that handles vector types carries its caller's target attribute (else __m256 values cross an ABI boundary).
template <typename F>
inline void with_k(int64_t k, F&& f) {
    switch (k) {
        case 1: f(std::integral_constant<int, 1>{}); break;
        case 2: f(std::integral_constant<int, 2>{}); break;
        case 3: f(std::integral_constant<int, 3>{}); break;
        case 4: f(std::integral_constant<int, 4>{}); break;
        case 5: f(std::integral_constant<int, 5>{}); break;
        case 6: f(std::integral_constant<int, 6>{}); break;
        case 7: f(std::integral_constant<int, 7>{}); break;
        case 8: f(std::integral_constant<int, 8>{}); break;
    }
}

// f(I{}) for the offsets' index type code (0 uint8, 1 int16, 2 int32); -1 for another code
template <typename F>
inline int with_index(int it, F&& f) {
    switch (it) {
        case 0: return f(uint8_t{});
        case 1: return f(int16_t{});
        case 2: return f(int32_t{});
        default: return -1;
    }
}

// ------------------------------------------------------------------------------------------------ scalar paths
template <typename T, typename I>
void spmv_rows_scalar(const T* vals, const I* offs, const T* x, T* y, const T* bias, int64_t r0, int64_t r1,
                      int64_t banks, int64_t k, int64_t B, int64_t cols) {
    const int64_t nnz = banks * k;
    const uint64_t last = (uint64_t)cols - 1;
    for (int64_t r = r0; r < r1; ++r) {
        const T* v = vals + r * nnz;
        const I* o = offs + r * nnz;
        T a0 = 0, a1 = 0;
        int64_t e = 0;
        for (int64_t b = 0; b < banks; ++b) {
            const uint64_t base = (uint64_t)(b * B);
            int64_t j = 0;
            for (; j + 1 < k; j += 2, e += 2) {
                a0 += v[e] * x[std::min(base + uoff(o[e]), last)];
                a1 += v[e + 1] * x[std::min(base + uoff(o[e + 1]), last)];
            }
            if (j < k) {
                a0 += v[e] * x[std::min(base + uoff(o[e]), last)];
                ++e;
            }
        }
        y[r] = a0 + a1 + (bias ? bias[r] : T(0));
    }
}

template <typename T, typename I>
void spmm_rows_scalar(const T* vals, const I* offs, const T* x, T* y, const T* bias, int64_t r0, int64_t r1,
                      int64_t banks, int64_t k, int64_t B, int64_t cols, int64_t n, int64_t rows, bool yt) {
    const int64_t nnz = banks * k;
    const uint64_t last = (uint64_t)cols - 1;
    std::vector<T> tmp(yt ? n : 0);
    for (int64_t r = r0; r < r1; ++r) {
        const T* v = vals + r * nnz;
        const I* o = offs + r * nnz;
        T* yr = yt ? tmp.data() : y + r * n;
        const T b0 = bias ? bias[r] : T(0);
        for (int64_t t = 0; t < n; ++t) yr[t] = b0;
        int64_t e = 0;
        for (int64_t b = 0; b < banks; ++b) {
            const uint64_t base = (uint64_t)(b * B);
            for (int64_t j = 0; j < k; ++j, ++e) {
                const T w = v[e];
                const T* xr = x + std::min(base + uoff(o[e]), last) * n;
                for (int64_t t = 0; t < n; ++t) yr[t] += w * xr[t];
            }
        }
        if (yt)
            for (int64_t t = 0; t < n; ++t) y[t * rows + r] = yr[t];
    }
}

#if BS_X86

// one column tile of an AVX-512 SpMM: cnt = min(width, n - t0) columns in nv zmm vectors, the last one holding the
// lanes of mlast (partial when masked)
struct ZTile {
    int64_t cnt;
    int nv;
    __mmask16 mlast;
    bool masked;
};

inline ZTile ztile(int64_t n, int64_t t0, int64_t width) {
    const int64_t cnt = std::min(width, n - t0);
    const int nv = (int)((cnt + 15) / 16);
    const int64_t m = cnt - 16 * (nv - 1);
    return {cnt, nv, m >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << m) - 1u), m != 16};
}
// ------------------------------------------------------------------------------------------------ AVX2 paths
template <typename I>
__attribute__((target("avx2,fma"))) inline __m256i load8_idx(const I* p);
template <>
__attribute__((target("avx2,fma"))) inline __m256i load8_idx<uint8_t>(const uint8_t* p) {
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)p));
}
template <>
__attribute__((target("avx2,fma"))) inline __m256i load8_idx<int16_t>(const int16_t* p) {
    return _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p));
}
template <>
__attribute__((target("avx2,fma"))) inline __m256i load8_idx<int32_t>(const int32_t* p) {
    return _mm256_loadu_si256((const __m256i*)p);
}

__attribute__((target("avx2,fma"))) inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// P = number of 8-entry vectors in one period of the bank-base pattern (compile time for the common k)
template <typename I, int P>
__attribute__((target("avx2,fma"))) void spmv_rows_avx2(const float* vals, const I* offs, const float* x, float* y,
                                                         const float* bias, int64_t r0, int64_t r1, int64_t banks,
                                                         int64_t k, int64_t B, int64_t cols, const int32_t* pattern,
                                                         int32_t step, int Pdyn) {
    const int64_t nnz = banks * k;
    const int np = P > 0 ? P : Pdyn;
    const int64_t nvec = nnz / 8;
    const int64_t nper = nvec / np;  // whole periods
    const __m256i vmax = _mm256_set1_epi32((int32_t)(cols - 1));
    const __m256i vstep = _mm256_set1_epi32(step);
    __m256i pat[P > 0 ? P : 1];
    if (P > 0)
        for (int q = 0; q < P; ++q) pat[q] = _mm256_loadu_si256((const __m256i*)(pattern + 8 * q));
    for (int64_t r = r0; r < r1; ++r) {
        const float* v = vals + r * nnz;
        const I* o = offs + r * nnz;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        __m256i pb = _mm256_setzero_si256();
        int64_t e = 0;
        if (P > 0) {
            for (int64_t p = 0; p < nper; ++p) {
#pragma GCC unroll 8
                for (int q = 0; q < P; ++q, e += 8) {
                    __m256i idx = _mm256_add_epi32(_mm256_add_epi32(pat[q], pb), load8_idx<I>(o + e));
                    idx = _mm256_min_epu32(idx, vmax);
                    const __m256 xv = _mm256_i32gather_ps(x, idx, 4);
                    if (q & 1)
                        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(v + e), xv, acc1);
                    else
                        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + e), xv, acc0);
                }
                pb = _mm256_add_epi32(pb, vstep);
            }
        } else {
            for (int64_t p = 0; p < nper; ++p) {
                for (int q = 0; q < np; ++q, e += 8) {
                    const __m256i pq = _mm256_loadu_si256((const __m256i*)(pattern + 8 * q));
                    __m256i idx = _mm256_add_epi32(_mm256_add_epi32(pq, pb), load8_idx<I>(o + e));
                    idx = _mm256_min_epu32(idx, vmax);
                    const __m256 xv = _mm256_i32gather_ps(x, idx, 4);
                    if (q & 1)
                        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(v + e), xv, acc1);
                    else
                        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(v + e), xv, acc0);
                }
                pb = _mm256_add_epi32(pb, vstep);
            }
        }
        float s = hsum8(_mm256_add_ps(acc0, acc1));
        const uint64_t last = (uint64_t)cols - 1;
        for (; e < nnz; ++e) s += v[e] * x[std::min((uint64_t)((e / k) * B) + uoff(o[e]), last)];
        y[r] = s + (bias ? bias[r] : 0.f);
    }
}

__attribute__((target("avx2,fma"))) inline __m256i tail_mask(int64_t m) {  // first m of 8 lanes
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int32_t)m), lane);
}

// the end of one row's column tile: sum the U accumulator sets, add the bias, store y[r, t0:t0+cnt] (cs = 1) or the
// transposed y[t0:t0+cnt, r] (cs = rows: a strided scatter of <= 32 values per row, negligible next to the FMAs)
template <int NV, int U, bool MASK>
__attribute__((target("avx2,fma"))) inline void row_out_avx2(__m256 (&acc)[U][NV], float b0, float* yr, int64_t t0,
                                                             __m256i mask, int64_t cs, int64_t cnt) {
#pragma GCC unroll 8
    for (int u = 1; u < U; ++u)
#pragma GCC unroll 8
        for (int i = 0; i < NV; ++i) acc[0][i] = _mm256_add_ps(acc[0][i], acc[u][i]);
    const __m256 vb = _mm256_set1_ps(b0);
    if (cs == 1) {
#pragma GCC unroll 8
        for (int i = 0; i < NV; ++i) {
            const __m256 out = _mm256_add_ps(acc[0][i], vb);
            if (MASK && i == NV - 1)
                _mm256_maskstore_ps(yr + t0 + 8 * i, mask, out);
            else
                _mm256_storeu_ps(yr + t0 + 8 * i, out);
        }
    } else {
        alignas(32) float tmp[8 * NV];
#pragma GCC unroll 8
        for (int i = 0; i < NV; ++i) _mm256_store_ps(tmp + 8 * i, _mm256_add_ps(acc[0][i], vb));
        for (int64_t i = 0; i < cnt; ++i) yr[(t0 + i) * cs] = tmp[i];
    }
}

// one row, columns [t0, t0 + 8*(NV-1) + m) with m in 1..8 lanes in the last vector (masked when m < 8).
// U independent accumulator sets (entries e, e+1, ... go to different sets) keep enough FMA chains in flight when
// the tile is narrow. colbase[e] = (e / k) * B (the same for every row). yr points at y[r, 0]; element t of the
// row is yr[t * cs] (cs = 1: y (rows, n); cs = rows: y (n, rows)).
template <typename I, int NV, int U, bool MASK>
__attribute__((target("avx2,fma"))) inline void spmm_tile_avx2(const float* v, const I* o, const int32_t* colbase,
                                                               int64_t nnz, const float* x, float* yr, float b0,
                                                               uint64_t last, int64_t n, int64_t t0, __m256i mask,
                                                               int64_t cs, int64_t cnt) {
    __m256 acc[U][NV];
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u)
#pragma GCC unroll 8
        for (int i = 0; i < NV; ++i) acc[u][i] = _mm256_setzero_ps();
    const float* xt = x + t0;
    int64_t e = 0;
    for (; e + U <= nnz; e += U) {
#pragma GCC unroll 8
        for (int u = 0; u < U; ++u) {
            const __m256 w = _mm256_broadcast_ss(v + e + u);
            const float* xr = xt + std::min((uint64_t)colbase[e + u] + uoff(o[e + u]), last) * n;
#pragma GCC unroll 8
            for (int i = 0; i < NV; ++i) {
                const __m256 xv = (MASK && i == NV - 1) ? _mm256_maskload_ps(xr + 8 * i, mask)
                                                         : _mm256_loadu_ps(xr + 8 * i);
                acc[u][i] = _mm256_fmadd_ps(w, xv, acc[u][i]);
            }
        }
    }
    for (; e < nnz; ++e) {
        const __m256 w = _mm256_broadcast_ss(v + e);
        const float* xr = xt + std::min((uint64_t)colbase[e] + uoff(o[e]), last) * n;
#pragma GCC unroll 8
        for (int i = 0; i < NV; ++i) {
            const __m256 xv = (MASK && i == NV - 1) ? _mm256_maskload_ps(xr + 8 * i, mask) : _mm256_loadu_ps(xr + 8 * i);
            acc[0][i] = _mm256_fmadd_ps(w, xv, acc[0][i]);
        }
    }
    row_out_avx2<NV, U, MASK>(acc, b0, yr, t0, mask, cs, cnt);
}

// The same tile with the banks walked in order and k known at compile time (K <= 8, i.e. sparsity >= 87.5% at bank
// 64): the bank's x base is a running pointer and entry j of a bank goes to accumulator set j % U, so no column-base
// table is read and the clamp is one min against the bank's last valid row (B - 1, less in a partial last bank).
// Measured against spmm_tile_avx2, interleaved, 4096^2 at 90.6%, 2 threads: 1.05-1.18x at batches 6-32.
// S > 0: n == S (one full tile, the x row stride known at compile time) and every bank full with B a power of two,
// so the offset is masked with B - 1 instead of clamped (measured ~0.85x the time at 8 columns)
template <typename I, int NV, int K, int U0, bool MASK, int S = 0>
__attribute__((target("avx2,fma"))) inline void spmm_bank_avx2(const float* v, const I* o, int64_t banks, int64_t B,
                                                               int64_t cols, const float* x, float* yr, float b0,
                                                               int64_t n, int64_t t0, __m256i mask, int64_t cs,
                                                               int64_t cnt) {
    constexpr int U = U0 < K ? U0 : K;
    __m256 acc[U][NV];
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u)
#pragma GCC unroll 8
        for (int i = 0; i < NV; ++i) acc[u][i] = _mm256_setzero_ps();
    const float* xb = x + t0;
    const int64_t bstride = B * (S ? S : n);
    const uint64_t full = (uint64_t)B - 1;
    for (int64_t b = 0; b < banks; ++b, v += K, o += K, xb += bstride) {
        if (BS_SPF > 0) {  // prefetching past the end of the arrays is harmless (no fault)
            _mm_prefetch((const char*)v + BS_SPF, _MM_HINT_T0);
            _mm_prefetch((const char*)o + BS_SPF / 4 * sizeof(I), _MM_HINT_T0);
        }
        const int64_t rem = cols - 1 - b * B;
        const uint64_t lim = rem < (int64_t)full ? (uint64_t)rem : full;
#pragma GCC unroll 8
        for (int j = 0; j < K; ++j) {
            const __m256 w = _mm256_broadcast_ss(v + j);
            const float* xr = S ? xb + (int64_t)(uoff(o[j]) & full) * S : xb + (int64_t)std::min(uoff(o[j]), lim) * n;
#pragma GCC unroll 8
            for (int i = 0; i < NV; ++i) {
                const __m256 xv = (MASK && i == NV - 1) ? _mm256_maskload_ps(xr + 8 * i, mask)
                                                         : _mm256_loadu_ps(xr + 8 * i);
                acc[j % U][i] = _mm256_fmadd_ps(w, xv, acc[j % U][i]);
            }
        }
    }
    row_out_avx2<NV, U, MASK>(acc, b0, yr, t0, mask, cs, cnt);
}

// Column tiles of 32 (x[:, tile] of a 4096-row x is 512 KB: it stays in L2 while the task's rows stream past).
// Measured alternatives that were not faster here: 64-column tiles; a bank-major order that keeps a bank's x slice
// in L1 (the dependent address chain offset -> row -> load, not the cache level, bounds this loop); AVX-512 for
// n < 64 (masked zmm loads of a narrow x row are slower on Zen 4, full ones at most ~10% faster).
constexpr int SPMM_TILE_V = 4;

// rows [r0, r1): column tiles outer, rows inner
template <typename I>
__attribute__((target("avx2,fma"))) void spmm_rows_avx2(const float* vals, const I* offs, const int32_t* colbase,
                                                         const float* x, float* y, const float* bias, int64_t r0,
                                                         int64_t r1, int64_t nnz, int64_t cols, int64_t n,
                                                         int64_t rows, bool yt, int64_t banks, int64_t k,
                                                         int64_t B) {
    const uint64_t last = (uint64_t)cols - 1;
    const int64_t tw = 8 * SPMM_TILE_V;
    const __m256i all = _mm256_set1_epi32(-1);
    const int64_t cs = yt ? rows : 1;
    const bool bankwalk = BS_BANKWALK && k <= 8 && (banks - 1) * B < cols;  // every bank starts inside x
    const bool exact = cols % B == 0 && (B & (B - 1)) == 0;                  // every bank full, B a power of two
    for (int64_t t0 = 0; t0 < n; t0 += tw) {
        const int64_t cnt = std::min(tw, n - t0);
        const int nv = (int)((cnt + 7) / 8);
        const int64_t m = cnt - 8 * (nv - 1);
        const __m256i mask = tail_mask(m);
        const bool masked = m != 8;
        for (int64_t r = r0; r < r1; ++r) {
            const float* v = vals + r * nnz;
            const I* o = offs + r * nnz;
            float* yr = yt ? y + r : y + r * n;
            const float b0 = bias ? bias[r] : 0.f;
#define BS_TILE(NV, U)                                                                                               \
    (masked ? spmm_tile_avx2<I, NV, U, true>(v, o, colbase, nnz, x, yr, b0, last, n, t0, mask, cs, cnt)              \
            : spmm_tile_avx2<I, NV, U, false>(v, o, colbase, nnz, x, yr, b0, last, n, t0, all, cs, cnt))
// the bank walk with NV vectors and U accumulator sets, k from with_k (S: see spmm_bank_avx2)
#define BS_BANK(NV, U)                                                                                               \
    with_k(k, [&](auto K) __attribute__((target("avx2,fma"))) {                                                      \
        constexpr int KK = decltype(K)::value;                                                                       \
        masked ? spmm_bank_avx2<I, NV, KK, U, true>(v, o, banks, B, cols, x, yr, b0, n, t0, mask, cs, cnt)           \
               : spmm_bank_avx2<I, NV, KK, U, false>(v, o, banks, B, cols, x, yr, b0, n, t0, all, cs, cnt);          \
    })
            if (bankwalk && n == 8 && exact) {
                with_k(k, [&](auto K) __attribute__((target("avx2,fma"))) {  // the lambda takes __m256i: same ABI
                    spmm_bank_avx2<I, 1, decltype(K)::value, 3, false, 8>(v, o, banks, B, cols, x, yr, b0, n, t0, all,
                                                                          cs, cnt);
                });
            } else if (bankwalk) {
                switch (nv) {
                    case 1: BS_BANK(1, 6); break;
                    case 2: BS_BANK(2, 3); break;
                    case 3: BS_BANK(3, 2); break;
                    default: BS_BANK(4, 2); break;
                }
            } else {
                switch (nv) {
                    case 1: BS_TILE(1, 4); break;
                    case 2: BS_TILE(2, 4); break;
                    case 3: BS_TILE(3, 2); break;
                    default: BS_TILE(4, 2); break;
                }
            }
#undef BS_BANK
#undef BS_TILE
        }
    }
}

// ------------------------------------------------------------------------------------------------ AVX-512 tiles
// Tiled layout for banks of at most 64 columns: rows in groups of 16, vt[g][b][j][l] = values[16 g + l, b, j] (the
// same bytes as the packed format, reordered; padded rows hold value 0 at offset 0). The x slice of bank b (<= 64
// floats) is held in NX = 1, 2 or 4 zmm registers and the 16 lanes (16 rows) of entry j pick their x with in-register
// permutes (vpermps / vpermt2ps + a blend on bit 5 of the offset): no gathers, ~4x the gather rate in cache. Only
// the low 6 bits of an offset are used and the slice loads are masked at the end of x, so no offset can read outside
// x. NC columns of x (x is (n, cols) row-major here, y is (n, rows)) share one pass over the weights.
template <typename I>
__attribute__((target("avx512f"))) inline __m512i load16_idx(const I* p);
template <>
__attribute__((target("avx512f"))) inline __m512i load16_idx<uint8_t>(const uint8_t* p) {
    return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)p));
}
template <>
__attribute__((target("avx512f"))) inline __m512i load16_idx<int16_t>(const int16_t* p) {
    return _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)p));
}
template <>
__attribute__((target("avx512f"))) inline __m512i load16_idx<int32_t>(const int32_t* p) {
    return _mm512_loadu_si512((const void*)p);
}

template <int NX>
__attribute__((target("avx512f"))) inline __m512 pick(const __m512* xs, __m512i idx) {
    if (NX == 1) return _mm512_permutexvar_ps(idx, xs[0]);
    if (NX == 2) return _mm512_permutex2var_ps(xs[0], idx, xs[1]);
    const __m512 lo = _mm512_permutex2var_ps(xs[0], idx, xs[1]);
    const __m512 hi = _mm512_permutex2var_ps(xs[2], idx, xs[3]);
    return _mm512_mask_blend_ps(_mm512_test_epi32_mask(idx, _mm512_set1_epi32(32)), lo, hi);
}

// the AVX-512 counterpart of row_out_avx2: sum the U accumulator sets, add the bias, store the tile (the last vector
// masked when MASK) into y[r, :] (cs = 1) or the transposed y[:, r] (cs = rows)
template <int NV, int U, bool MASK>
__attribute__((target("avx512f"))) inline void row_out_avx512(__m512 (&acc)[U][NV], float b0, float* yr, int64_t t0,
                                                               __mmask16 mlast, int64_t cs, int64_t cnt) {
#pragma GCC unroll 8
    for (int u = 1; u < U; ++u)
#pragma GCC unroll 8
        for (int i = 0; i < NV; ++i) acc[0][i] = _mm512_add_ps(acc[0][i], acc[u][i]);
    const __m512 vb = _mm512_set1_ps(b0);
    if (cs == 1) {
#pragma GCC unroll 8
        for (int i = 0; i < NV; ++i) {
            const __m512 out = _mm512_add_ps(acc[0][i], vb);
            if (MASK && i == NV - 1)
                _mm512_mask_storeu_ps(yr + t0 + 16 * i, mlast, out);
            else
                _mm512_storeu_ps(yr + t0 + 16 * i, out);
        }
    } else {
        alignas(64) float tmp[16 * NV];
#pragma GCC unroll 8
        for (int i = 0; i < NV; ++i) _mm512_store_ps(tmp + 16 * i, _mm512_add_ps(acc[0][i], vb));
        for (int64_t i = 0; i < cnt; ++i) yr[(t0 + i) * cs] = tmp[i];
    }
}

// AVX-512 SpMM for wide batches (n >= 64): column tiles of 16 * NV (up to 128) columns held in NV zmm accumulators,
// banks walked in order (no column-base table); fewer loads per FMA than the 32-column AVX2 tiles (measured ~1.2x at
// 64 columns, ~1.35x at 128 on Zen 4). The last partial vector of a tile is masked.
template <typename I, int NV, int U>
__attribute__((target("avx512f"))) inline void spmm_tile_avx512(const float* v, const I* o, const int32_t* colbase,
                                                                int64_t nnz, uint64_t last, const float* x, float* yr,
                                                                float b0, int64_t n, int64_t t0, __mmask16 mlast,
                                                                int64_t cs, int64_t cnt) {
    __m512 acc[U][NV];
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u)
#pragma GCC unroll 8
        for (int i = 0; i < NV; ++i) acc[u][i] = _mm512_setzero_ps();
    const float* xt = x + t0;
    int64_t e = 0;
    for (; e + U <= nnz; e += U) {
#pragma GCC unroll 8
        for (int u = 0; u < U; ++u) {
            if (e + u + 8 < nnz) {  // prefetch the x row of the entry 8 ahead (measured ~5% at 128 columns)
                const float* xp = xt + std::min((uint64_t)colbase[e + u + 8] + uoff(o[e + u + 8]), last) * n;
#pragma GCC unroll 8
                for (int i = 0; i < NV; ++i) _mm_prefetch((const char*)(xp + 16 * i), _MM_HINT_T0);
            }
            const __m512 w = _mm512_set1_ps(v[e + u]);
            const float* xr = xt + std::min((uint64_t)colbase[e + u] + uoff(o[e + u]), last) * n;
#pragma GCC unroll 8
            for (int i = 0; i < NV; ++i) {
                const __m512 xv = i == NV - 1 ? _mm512_maskz_loadu_ps(mlast, xr + 16 * i) : _mm512_loadu_ps(xr + 16 * i);
                acc[u][i] = _mm512_fmadd_ps(w, xv, acc[u][i]);
            }
        }
    }
    for (; e < nnz; ++e) {
        const __m512 w = _mm512_set1_ps(v[e]);
        const float* xr = xt + std::min((uint64_t)colbase[e] + uoff(o[e]), last) * n;
#pragma GCC unroll 8
        for (int i = 0; i < NV; ++i) {
            const __m512 xv = i == NV - 1 ? _mm512_maskz_loadu_ps(mlast, xr + 16 * i) : _mm512_loadu_ps(xr + 16 * i);
            acc[0][i] = _mm512_fmadd_ps(w, xv, acc[0][i]);
        }
    }
    row_out_avx512<NV, U, true>(acc, b0, yr, t0, mlast, cs, cnt);
}

// AVX-512 SpMM for 9..63 columns: spmm_bank_avx2's bank walk (k fixed at compile time, running x base, no
// column-base table) with column tiles of 16 * NV (NV = 1, 2) held in zmm accumulators, the last vector masked, and
// the weight streams prefetched BS_SPF bytes ahead. Measured against spmm_bank_avx2, 4096^2 at 90.6%, caches
// flushed, 2 threads: ~0.8x the time at 16 and 32 columns.
template <typename I, int NV, int K, int U0, bool MASK, int S = 0>
__attribute__((target("avx512f"))) inline void spmm_bank_avx512(const float* v, const I* o, int64_t banks, int64_t B,
                                                                int64_t cols, const float* x, float* yr, float b0,
                                                                int64_t n, int64_t t0, __mmask16 mlast, int64_t cs,
                                                                int64_t cnt) {
    constexpr int U = U0 < K ? U0 : K;
    __m512 acc[U][NV];
#pragma GCC unroll 8
    for (int u = 0; u < U; ++u)
#pragma GCC unroll 8
        for (int i = 0; i < NV; ++i) acc[u][i] = _mm512_setzero_ps();
    const float* xb = x + t0;
    const int64_t bstride = B * (S ? S : n);
    const uint64_t full = (uint64_t)B - 1;
    for (int64_t b = 0; b < banks; ++b, v += K, o += K, xb += bstride) {
        if (BS_SPF > 0) {
            _mm_prefetch((const char*)v + BS_SPF, _MM_HINT_T0);
            _mm_prefetch((const char*)o + BS_SPF / 4 * sizeof(I), _MM_HINT_T0);
        }
        const int64_t rem = cols - 1 - b * B;
        const uint64_t lim = rem < (int64_t)full ? (uint64_t)rem : full;
#pragma GCC unroll 8
        for (int j = 0; j < K; ++j) {
            const __m512 w = _mm512_set1_ps(v[j]);
            const float* xr = S ? xb + (int64_t)(uoff(o[j]) & full) * S : xb + (int64_t)std::min(uoff(o[j]), lim) * n;
#pragma GCC unroll 8
            for (int i = 0; i < NV; ++i) {
                const __m512 xv = (MASK && i == NV - 1) ? _mm512_maskz_loadu_ps(mlast, xr + 16 * i)
                                                         : _mm512_loadu_ps(xr + 16 * i);
                acc[j % U][i] = _mm512_fmadd_ps(w, xv, acc[j % U][i]);
            }
        }
    }
    row_out_avx512<NV, U, MASK>(acc, b0, yr, t0, mlast, cs, cnt);
}

// rows [r0, r1) of the bank walk above: column tiles of 32 outer, rows inner. Needs k <= 8 and every bank starting
// inside x (the caller checks, as for spmm_bank_avx2).
template <typename I>
__attribute__((target("avx512f"))) void spmm_bankrows_avx512(const float* vals, const I* offs, const float* x,
                                                              float* y, const float* bias, int64_t r0, int64_t r1,
                                                              int64_t nnz, int64_t cols, int64_t n, int64_t rows,
                                                              bool yt, int64_t banks, int64_t k, int64_t B) {
    const int64_t cs = yt ? rows : 1;
    const bool exact = cols % B == 0 && (B & (B - 1)) == 0;  // every bank full, B a power of two
    for (int64_t t0 = 0; t0 < n; t0 += 32) {
        const ZTile zt = ztile(n, t0, 32);
        for (int64_t r = r0; r < r1; ++r) {
            const float* v = vals + r * nnz;
            const I* o = offs + r * nnz;
            float* yr = yt ? y + r : y + r * n;
            const float b0 = bias ? bias[r] : 0.f;
            with_k(k, [&](auto K) __attribute__((target("avx512f"))) {
                constexpr int KK = decltype(K)::value;
#define BS_W(NV, MASK, S) \
    spmm_bank_avx512<I, NV, KK, 3, MASK, S>(v, o, banks, B, cols, x, yr, b0, n, t0, zt.mlast, cs, zt.cnt)
                if (exact && n == 16)
                    BS_W(1, false, 16);
                else if (exact && n == 32)
                    BS_W(2, false, 32);
                else if (zt.nv == 1 && zt.masked)
                    BS_W(1, true, 0);
                else if (zt.nv == 1)
                    BS_W(1, false, 0);
                else if (zt.masked)
                    BS_W(2, true, 0);
                else
                    BS_W(2, false, 0);
#undef BS_W
            });
        }
    }
}

template <typename I>
__attribute__((target("avx512f"))) void spmm_rows_avx512(const float* vals, const I* offs, const int32_t* colbase,
                                                          const float* x, float* y, const float* bias, int64_t r0,
                                                          int64_t r1, int64_t nnz, int64_t cols, int64_t n,
                                                          int64_t rows, bool yt) {
    const uint64_t last = (uint64_t)cols - 1;
    const int64_t tw = n >= 128 ? 128 : 64;
    const int64_t cs = yt ? rows : 1;
    for (int64_t t0 = 0; t0 < n; t0 += tw) {
        const ZTile zt = ztile(n, t0, tw);
        for (int64_t r = r0; r < r1; ++r) {
            const float* v = vals + r * nnz;
            const I* o = offs + r * nnz;
            float* yr = yt ? y + r : y + r * n;
            const float b0 = bias ? bias[r] : 0.f;
            switch (zt.nv) {
#define BS_Z(NV, U) \
    case NV: spmm_tile_avx512<I, NV, U>(v, o, colbase, nnz, last, x, yr, b0, n, t0, zt.mlast, cs, zt.cnt); break;
                BS_Z(1, 4) BS_Z(2, 4) BS_Z(3, 2) BS_Z(4, 2) BS_Z(5, 1) BS_Z(6, 1) BS_Z(7, 1) BS_Z(8, 1)
#undef BS_Z
            }
        }
    }
}

template <typename I, int NX, int NC>
__attribute__((target("avx512f"))) void tiles_rows_avx512(const float* vt, const I* ot, const float* x, float* y,
                                                           const float* bias, int64_t g0, int64_t g1, int64_t rows,
                                                           int64_t banks, int64_t k, int64_t B, int64_t cols,
                                                           int64_t c0, int64_t yn) {
    const int64_t per_group = banks * k * 16;
    for (int64_t g = g0; g < g1; ++g) {
        const float* vg = vt + g * per_group;
        const I* og = ot + g * per_group;
        __m512 acc[NC][2];
#pragma GCC unroll 4
        for (int c = 0; c < NC; ++c) acc[c][0] = acc[c][1] = _mm512_setzero_ps();
        for (int64_t b = 0; b < banks; ++b) {
            const int64_t base = b * B;
            const int64_t rem = cols - base;  // >= 1
            __m512 xs[NC][NX];
#pragma GCC unroll 4
            for (int c = 0; c < NC; ++c) {
                const float* xb = x + (c0 + c) * cols + base;
#pragma GCC unroll 4
                for (int q = 0; q < NX; ++q) {
                    const int64_t m = rem - 16 * q;
                    if (m >= 16)
                        xs[c][q] = _mm512_loadu_ps(xb + 16 * q);
                    else if (m > 0)
                        xs[c][q] = _mm512_maskz_loadu_ps((__mmask16)((1u << m) - 1u), xb + 16 * q);
                    else
                        xs[c][q] = _mm512_setzero_ps();
                }
            }
            const float* vb = vg + b * k * 16;
            const I* ob = og + b * k * 16;
#if BS_PF > 0
            {  // software prefetch BS_PF bytes ahead in both streams (they are contiguous across groups)
                const char* pv = (const char*)vb + BS_PF;
                const char* po = (const char*)ob + BS_PF * sizeof(I) / 4;
                for (int64_t q = 0; q < k * 64; q += 64) _mm_prefetch(pv + q, _MM_HINT_T0);
                for (int64_t q = 0; q < k * 16 * (int64_t)sizeof(I); q += 64) _mm_prefetch(po + q, _MM_HINT_T0);
            }
#endif
            // two entries per step into two accumulator sets (measured 1.5x over one entry per step in cache)
            int64_t j = 0;
            for (; j + 1 < k; j += 2) {
                const __m512i i0 = load16_idx<I>(ob + 16 * j), i1 = load16_idx<I>(ob + 16 * j + 16);
                const __m512 w0 = _mm512_loadu_ps(vb + 16 * j), w1 = _mm512_loadu_ps(vb + 16 * j + 16);
#pragma GCC unroll 4
                for (int c = 0; c < NC; ++c) {
                    acc[c][0] = _mm512_fmadd_ps(w0, pick<NX>(xs[c], i0), acc[c][0]);
                    acc[c][1] = _mm512_fmadd_ps(w1, pick<NX>(xs[c], i1), acc[c][1]);
                }
            }
            if (j < k) {
                const __m512i idx = load16_idx<I>(ob + 16 * j);
                const __m512 w = _mm512_loadu_ps(vb + 16 * j);
#pragma GCC unroll 4
                for (int c = 0; c < NC; ++c) acc[c][0] = _mm512_fmadd_ps(w, pick<NX>(xs[c], idx), acc[c][0]);
            }
        }
        const int64_t left = rows - g * 16;
        const __mmask16 rm = left >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << left) - 1u);
        const __m512 vb = bias ? _mm512_maskz_loadu_ps(rm, bias + g * 16) : _mm512_setzero_ps();
        if (yn == 0) {  // y (n, rows)
#pragma GCC unroll 4
            for (int c = 0; c < NC; ++c)
                _mm512_mask_storeu_ps(y + (c0 + c) * rows + g * 16, rm,
                                      _mm512_add_ps(_mm512_add_ps(acc[c][0], acc[c][1]), vb));
        } else {  // y (rows, yn): 16 * NC scalar stores per group, next to its banks * k * 16 entries
            alignas(64) float tmp[NC][16];
#pragma GCC unroll 4
            for (int c = 0; c < NC; ++c) _mm512_store_ps(tmp[c], _mm512_add_ps(_mm512_add_ps(acc[c][0], acc[c][1]), vb));
            const int64_t nl = left >= 16 ? 16 : left;
            for (int64_t l = 0; l < nl; ++l)
#pragma GCC unroll 4
                for (int c = 0; c < NC; ++c) y[(g * 16 + l) * yn + c0 + c] = tmp[c][l];
        }
    }
}

template <typename I, int NX>
__attribute__((target("avx512f"))) void tiles_avx512_nc(int nc, const float* vt, const I* ot, const float* x, float* y,
                                                         const float* bias, int64_t g0, int64_t g1, int64_t rows,
                                                         int64_t banks, int64_t k, int64_t B, int64_t cols, int64_t c0,
                                                         int64_t yn) {
    switch (nc) {
        case 1: tiles_rows_avx512<I, NX, 1>(vt, ot, x, y, bias, g0, g1, rows, banks, k, B, cols, c0, yn); break;
        case 2: tiles_rows_avx512<I, NX, 2>(vt, ot, x, y, bias, g0, g1, rows, banks, k, B, cols, c0, yn); break;
        case 3: tiles_rows_avx512<I, NX, 3>(vt, ot, x, y, bias, g0, g1, rows, banks, k, B, cols, c0, yn); break;
        default: tiles_rows_avx512<I, NX, 4>(vt, ot, x, y, bias, g0, g1, rows, banks, k, B, cols, c0, yn); break;
    }
}

// AVX-512 SpMM on the tiled layout (bank-major inside a block of row groups): x (cols, n) row-major as in the packed
// SpMM. The packed SpMM walks a row's 384 entries and loads TW columns of a random x row for each: every load misses
// L1 (x is megabytes), so it runs at the L2 -> L1 line rate. Here a block of R rows (GB groups of 16) walks the banks
// in order: for bank b only x rows [bB, bB + B) are touched (B * TW * 4 bytes: 32 KB at the 128-column tiles of
// cpp.bspmm_plan), and the block's partial sums (R x TW floats, ~64 KB) stay in L2; each x line is fetched once per
// block and bank instead of once per entry (measured 1.3x over the packed SpMM at 128 columns, even at 64).
template <typename I, int NV, bool MASK>
__attribute__((target("avx512f"))) void bspmm_block_avx512(const float* vt, const I* ot, int64_t g0, int64_t g1,
                                                            int64_t banks, int64_t k, int64_t B, uint64_t last,
                                                            const float* x, int64_t n, int64_t t0, __mmask16 mlast,
                                                            float* ybuf) {
    constexpr int TW = 16 * NV;
    std::memset(ybuf, 0, sizeof(float) * (size_t)((g1 - g0) * 16 * TW));
    const float* xt = x + t0;
    for (int64_t b = 0; b < banks; ++b) {
        const uint64_t base = (uint64_t)(b * B);
        for (int64_t g = g0; g < g1; ++g) {
            const float* vb = vt + (g * banks + b) * k * 16;
            const I* ob = ot + (g * banks + b) * k * 16;
            float* yg = ybuf + (g - g0) * 16 * TW;
            for (int l = 0; l < 16; ++l) {
                float* yr = yg + l * TW;
                __m512 acc[NV];
#pragma GCC unroll 8
                for (int i = 0; i < NV; ++i) acc[i] = _mm512_load_ps(yr + 16 * i);
                for (int64_t j = 0; j < k; ++j) {
                    const __m512 w = _mm512_set1_ps(vb[j * 16 + l]);
                    const float* xr = xt + std::min(base + uoff(ob[j * 16 + l]), last) * n;
#pragma GCC unroll 8
                    for (int i = 0; i < NV; ++i) {
                        const __m512 xv = (MASK && i == NV - 1) ? _mm512_maskz_loadu_ps(mlast, xr + 16 * i)
                                                                : _mm512_loadu_ps(xr + 16 * i);
                        acc[i] = _mm512_fmadd_ps(w, xv, acc[i]);
                    }
                }
#pragma GCC unroll 8
                for (int i = 0; i < NV; ++i) _mm512_store_ps(yr + 16 * i, acc[i]);
            }
        }
    }
}

template <typename I>
__attribute__((target("avx512f"))) void bspmm_avx512(const float* vt, const I* ot, const float* x, float* y,
                                                      const float* bias, int64_t g0, int64_t g1, int64_t rows,
                                                      int64_t banks, int64_t k, int64_t B, int64_t cols, int64_t n,
                                                      bool yt, int64_t tw, int64_t gb) {
    const uint64_t last = (uint64_t)cols - 1;
    float* ybuf = (float*)std::aligned_alloc(64, sizeof(float) * (size_t)(gb * 16 * tw));
    if (!ybuf) return;
    for (int64_t t0 = 0; t0 < n; t0 += tw) {
        const ZTile zt = ztile(n, t0, tw);
        const int64_t ld = 16 * zt.nv;  // ybuf row stride of this tile
        for (int64_t a = g0; a < g1; a += gb) {
            const int64_t a1 = std::min(g1, a + gb);
#define BS_B(NV)                                                                                          \
    case NV:                                                                                              \
        if (zt.masked)                                                                                    \
            bspmm_block_avx512<I, NV, true>(vt, ot, a, a1, banks, k, B, last, x, n, t0, zt.mlast, ybuf);  \
        else                                                                                              \
            bspmm_block_avx512<I, NV, false>(vt, ot, a, a1, banks, k, B, last, x, n, t0, zt.mlast, ybuf); \
        break;
            switch (zt.nv) { BS_B(1) BS_B(2) BS_B(3) BS_B(4) BS_B(5) BS_B(6) BS_B(7) BS_B(8) }
#undef BS_B
            for (int64_t r = a * 16; r < std::min(rows, a1 * 16); ++r) {
                const float* src = ybuf + (r - a * 16) * ld;
                const float b0 = bias ? bias[r] : 0.f;
                if (yt)
                    for (int64_t i = 0; i < zt.cnt; ++i) y[(t0 + i) * rows + r] = src[i] + b0;
                else
                    for (int64_t i = 0; i < zt.cnt; ++i) y[r * n + t0 + i] = src[i] + b0;
            }
        }
    }
    std::free(ybuf);
}

// ------------------------------------------------------------------------------------------------ bank-group layout
// SpMM for 6..63 columns (fewer: x padded to 8) on the bank-group layout of cpp.make_groups: the banks cut into
// groups of G consecutive banks, stored group-major, vg[q][r][e] = values[r, q G + e / k, e % k] (e < G k; the last
// group padded, never read).
// Per task, row blocks of BS_GRB rows; per block the groups in order and every row of the block per group. The x
// rows of one group (G B rows x 32 columns: 32 KB at G = 4, B = 64) stay in L1 while the group's weights stream past
// contiguously; a row's partial sum waits in a per-task buffer (BS_GRB x 32 floats, L2) until the last group writes
// y. The packed bank walk (spmm_bankrows_avx512) instead loads every x row from L2 and reads all of a row's banks.
// Measured against it, 4096^2 at 90.6%, caches flushed, 2 threads, interleaved: 0.44-0.53 vs 0.60-0.70 ms at 8
// columns, 0.55-0.58 vs 0.65-0.80 at 16, 0.85-0.88 vs 1.23-1.30 at 32 (the same groups read in place from the packed
// layout, a 1.5 KB stride per row, ran 0.9-1.2x the packed walk: the contiguous stream is what pays).
#ifndef BS_GRB
#define BS_GRB 1024
#endif
constexpr int BS_GROUP = 4;  // banks per group (cpp.GROUP_BANKS)

template <typename I, int K>
inline void prefetch_row(const float* v, const I* o, int64_t gk) {
    if (BS_SPF <= 0) return;
    const int64_t n = K ? BS_GROUP * K : gk;
#pragma GCC unroll 8
    for (int64_t q = 0; q < n * 4; q += 64) _mm_prefetch((const char*)v + BS_SPF + q, _MM_HINT_T0);
#pragma GCC unroll 8
    for (int64_t q = 0; q < n * (int64_t)sizeof(I); q += 64)
        _mm_prefetch((const char*)o + BS_SPF / 4 * (int64_t)sizeof(I) + q, _MM_HINT_T0);
}

// rows [r0, r1) of one group (nb banks from bank0) for one column tile of 16 NV columns; K = 0: k at run time.
// S > 0: n == S (the x row stride known at compile time). EXACT: every bank full and B a power of two (the offset is
// masked with B - 1 instead of clamped). buf holds the tile's running sums, row r at (r - r0) 16 NV.
template <typename I, int NV, int K, bool MASK, int S, bool EXACT>
__attribute__((target("avx512f"))) void gspmm_rows_avx512(const float* v, const I* o, int64_t gk, int64_t k,
                                                           int64_t r0, int64_t r1, int64_t nb, int64_t bank0,
                                                           int64_t B, int64_t cols, const float* xg, int64_t n,
                                                           __mmask16 mlast, float* buf, bool first, bool last,
                                                           float* y, const float* bias, int64_t rows, bool yt,
                                                           int64_t t0, int64_t cnt) {
    constexpr int U = K == 0 ? 1 : (K < 3 ? K : 3);
    const int64_t kk = K ? K : k;
    const int64_t xs = S ? S : n;
    const int64_t cs = yt ? rows : 1;
    for (int64_t r = r0; r < r1; ++r, v += gk, o += gk) {
        prefetch_row<I, K>(v, o, gk);
        __m512 acc[U][NV];
#pragma GCC unroll 8
        for (int u = 0; u < U; ++u)
#pragma GCC unroll 8
            for (int i = 0; i < NV; ++i) acc[u][i] = _mm512_setzero_ps();
        const float* vb = v;
        const I* ob = o;
        const float* xb = xg;
#pragma GCC unroll 4
        for (int b = 0; b < BS_GROUP; ++b, vb += kk, ob += kk, xb += B * xs) {
            if (b >= nb) break;
            const int64_t rem = cols - 1 - (bank0 + b) * B;
            const uint64_t lim = EXACT ? (uint64_t)B - 1 : (uint64_t)(rem < B - 1 ? rem : B - 1);
#pragma GCC unroll 8
            for (int64_t j = 0; j < kk; ++j) {
                const __m512 w = _mm512_set1_ps(vb[j]);
                const float* xr = xb + (int64_t)(EXACT ? uoff(ob[j]) & lim : std::min(uoff(ob[j]), lim)) * xs;
#pragma GCC unroll 8
                for (int i = 0; i < NV; ++i) {
                    const __m512 xv = (MASK && i == NV - 1) ? _mm512_maskz_loadu_ps(mlast, xr + 16 * i)
                                                             : _mm512_loadu_ps(xr + 16 * i);
                    acc[j % U][i] = _mm512_fmadd_ps(w, xv, acc[j % U][i]);
                }
            }
        }
#pragma GCC unroll 8
        for (int u = 1; u < U; ++u)
#pragma GCC unroll 8
            for (int i = 0; i < NV; ++i) acc[0][i] = _mm512_add_ps(acc[0][i], acc[u][i]);
        float* br = buf ? buf + (r - r0) * 16 * NV : nullptr;  // no buffer when the matrix is one group
        if (!first)
#pragma GCC unroll 8
            for (int i = 0; i < NV; ++i) acc[0][i] = _mm512_add_ps(acc[0][i], _mm512_load_ps(br + 16 * i));
        if (last) {
            __m512 out[1][NV];
#pragma GCC unroll 8
            for (int i = 0; i < NV; ++i) out[0][i] = acc[0][i];
            row_out_avx512<NV, 1, MASK>(out, bias ? bias[r] : 0.f, yt ? y + r : y + r * n, t0, mlast, cs, cnt);
        } else {
#pragma GCC unroll 8
            for (int i = 0; i < NV; ++i) _mm512_store_ps(br + 16 * i, acc[0][i]);
        }
    }
}

// the same for x rows of 8 floats in one ymm accumulator (masked zmm loads of 8-float rows are slower on Zen 4); the
// first nout <= 8 columns are written (fewer than 8: x was padded to 8 columns by the caller)
template <typename I, int K, bool EXACT>
__attribute__((target("avx2,fma"))) void gspmm_rows8_avx2(const float* v, const I* o, int64_t gk, int64_t k,
                                                          int64_t r0, int64_t r1, int64_t nb, int64_t bank0,
                                                          int64_t B, int64_t cols, const float* xg, float* buf,
                                                          bool first, bool last, float* y, const float* bias,
                                                          int64_t rows, bool yt, int64_t nout) {
    constexpr int U = K == 0 ? 1 : (K < 3 ? K : 3);
    const int64_t kk = K ? K : k;
    const int64_t cs = yt ? rows : 1;
    const __m256i mask = tail_mask(nout);
    for (int64_t r = r0; r < r1; ++r, v += gk, o += gk) {
        prefetch_row<I, K>(v, o, gk);
        __m256 acc[U][1];
#pragma GCC unroll 8
        for (int u = 0; u < U; ++u) acc[u][0] = _mm256_setzero_ps();
        const float* vb = v;
        const I* ob = o;
        const float* xb = xg;
#pragma GCC unroll 4
        for (int b = 0; b < BS_GROUP; ++b, vb += kk, ob += kk, xb += B * 8) {
            if (b >= nb) break;
            const int64_t rem = cols - 1 - (bank0 + b) * B;
            const uint64_t lim = EXACT ? (uint64_t)B - 1 : (uint64_t)(rem < B - 1 ? rem : B - 1);
#pragma GCC unroll 8
            for (int64_t j = 0; j < kk; ++j) {
                const uint64_t row = EXACT ? uoff(ob[j]) & lim : std::min(uoff(ob[j]), lim);
                acc[j % U][0] = _mm256_fmadd_ps(_mm256_broadcast_ss(vb + j), _mm256_loadu_ps(xb + (int64_t)row * 8),
                                                acc[j % U][0]);
            }
        }
#pragma GCC unroll 8
        for (int u = 1; u < U; ++u) acc[0][0] = _mm256_add_ps(acc[0][0], acc[u][0]);
        float* br = buf ? buf + (r - r0) * 8 : nullptr;
        if (!first) acc[0][0] = _mm256_add_ps(acc[0][0], _mm256_load_ps(br));
        if (last) {
            __m256 out[1][1] = {{acc[0][0]}};
            float* yr = yt ? y + r : y + r * nout;
            if (nout == 8)
                row_out_avx2<1, 1, false>(out, bias ? bias[r] : 0.f, yr, 0, mask, cs, 8);
            else
                row_out_avx2<1, 1, true>(out, bias ? bias[r] : 0.f, yr, 0, mask, cs, nout);
        } else {
            _mm256_store_ps(br, acc[0][0]);
        }
    }
}

// rows [r0, r1): column tiles of 32 outer, then row blocks, groups, rows (see above)
template <typename I>
__attribute__((target("avx512f"))) int gspmm_avx512(const float* vg, const I* og, const float* x, float* y,
                                                     const float* bias, int64_t r0, int64_t r1, int64_t rows,
                                                     int64_t banks, int64_t k, int64_t B, int64_t cols, int64_t n,
                                                     bool yt, int64_t nout) {
    const int64_t gb = BS_GROUP;
    const int64_t gk = gb * k;
    const int64_t groups = (banks + gb - 1) / gb;
    const bool exact = cols % B == 0 && (B & (B - 1)) == 0;  // every bank full, B a power of two
    float* buf = nullptr;
    if (groups > 1) {
        buf = (float*)std::aligned_alloc(64, sizeof(float) * (size_t)(BS_GRB * 32));
        if (!buf) return -7;
    }
    for (int64_t t0 = 0; t0 < n; t0 += 32) {
        const ZTile zt = ztile(n, t0, 32);
        for (int64_t rb = r0; rb < r1; rb += BS_GRB) {
            const int64_t re = std::min<int64_t>(r1, rb + BS_GRB);
            for (int64_t q = 0; q < groups; ++q) {
                const int64_t nb = std::min(gb, banks - q * gb);
                const float* v = vg + (q * rows + rb) * gk;
                const I* o = og + (q * rows + rb) * gk;
                const float* xg = x + q * gb * B * n + t0;
                const bool first = q == 0, last = q == groups - 1;
                auto pick = [&](auto K) __attribute__((target("avx512f"))) {
                    constexpr int KK = decltype(K)::value;
#define BS_G(NV, MASK, S)                                                                                    \
    gspmm_rows_avx512<I, NV, KK, MASK, S, S != 0>(v, o, gk, k, rb, re, nb, q * gb, B, cols, xg, n, zt.mlast, buf, \
                                                  first, last, y, bias, rows, yt, t0, zt.cnt)
                    if (n == 8 && exact)
                        gspmm_rows8_avx2<I, KK, true>(v, o, gk, k, rb, re, nb, q * gb, B, cols, xg, buf, first, last,
                                                      y, bias, rows, yt, nout);
                    else if (n == 8)
                        gspmm_rows8_avx2<I, KK, false>(v, o, gk, k, rb, re, nb, q * gb, B, cols, xg, buf, first, last,
                                                       y, bias, rows, yt, nout);
                    else if (n == 16 && exact)
                        BS_G(1, false, 16);
                    else if (n == 32 && exact)
                        BS_G(2, false, 32);
                    else if (zt.nv == 1 && zt.masked)
                        BS_G(1, true, 0);
                    else if (zt.nv == 1)
                        BS_G(1, false, 0);
                    else if (zt.masked)
                        BS_G(2, true, 0);
                    else
                        BS_G(2, false, 0);
#undef BS_G
                };
                if (k <= 8)
                    with_k(k, pick);
                else
                    pick(std::integral_constant<int, 0>{});
            }
        }
    }
    std::free(buf);
    return 0;
}
#endif  // BS_X86

bool cpu_has_avx2() {
#if BS_X86 && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return false;
#endif
}

bool cpu_has_avx512() {
#if BS_X86 && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
#else
    return false;
#endif
}

// rows per task: enough work per task to pay the wake-up of a pool thread, at most `threads` tasks
int64_t grain_for(int64_t rows, int64_t work_per_row, int threads) {
    const int64_t min_work = 1 << 15;  // multiply-adds
    int64_t g = std::max<int64_t>(1, min_work / std::max<int64_t>(1, work_per_row));
    if (threads > 0) g = std::max(g, (rows + threads - 1) / threads);
    return g;
}

template <typename T, typename I>
int run(const void* vals_, const void* offs_, const void* x_, void* y_, const void* bias_, int64_t rows,
        int64_t banks, int64_t k, int64_t B, int64_t cols, int64_t n, int threads, int flags) {
    const T* vals = (const T*)vals_;
    const I* offs = (const I*)offs_;
    const T* x = (const T*)x_;
    T* y = (T*)y_;
    const T* bias = (const T*)bias_;
    if (rows <= 0 || n <= 0) return 0;
    if (banks <= 0 || k <= 0 || B <= 0 || cols <= 0) return -2;
    const bool vec = n == 1;
    const bool yt = (flags & 2) != 0;  // y stored (n, rows)
    const int64_t nnz = banks * k;
    const int64_t g = grain_for(rows, nnz * n, threads);
#if BS_X86
    const bool avx2 = std::is_same<T, float>::value && !(flags & 1) && cpu_has_avx2() && cols < (int64_t(1) << 31);
    if (avx2) {
        const float* fv = (const float*)vals;
        const float* fx = (const float*)x;
        float* fy = (float*)y;
        const float* fb = (const float*)bias;
        if (vec) {
            // bank-base pattern of one period (lcm(8, k) entries)
            int64_t gcd = k, b8 = 8;
            while (b8) {
                const int64_t t = gcd % b8;
                gcd = b8;
                b8 = t;
            }
            const int P = (int)(k / gcd);
            const int64_t per = 8 * (int64_t)P;  // entries in one period
            if ((per / k) * B >= (int64_t(1) << 31)) return -3;
            std::vector<int32_t> pattern(per);
            for (int64_t e = 0; e < per; ++e) pattern[e] = (int32_t)((e / k) * B);
            const int32_t step = (int32_t)((per / k) * B);
            const int32_t* pat = pattern.data();
            at::parallel_for(0, rows, g, [&](int64_t r0, int64_t r1) {
                switch (P) {
#define BS_P(PP) \
    case PP: spmv_rows_avx2<I, PP>(fv, offs, fx, fy, fb, r0, r1, banks, k, B, cols, pat, step, P); break;
                    BS_P(1) BS_P(2) BS_P(3) BS_P(4) BS_P(5) BS_P(6) BS_P(7) BS_P(8)
#undef BS_P
                    default: spmv_rows_avx2<I, 0>(fv, offs, fx, fy, fb, r0, r1, banks, k, B, cols, pat, step, P);
                }
            });
        } else {
            std::vector<int32_t> colbase(nnz);
            for (int64_t e = 0; e < nnz; ++e) colbase[e] = (int32_t)((e / k) * B);
            const int32_t* cb = colbase.data();
            if (n >= 64 && cpu_has_avx512()) {
                at::parallel_for(0, rows, g, [&](int64_t r0, int64_t r1) {
                    spmm_rows_avx512<I>(fv, offs, cb, fx, fy, fb, r0, r1, nnz, cols, n, rows, yt);
                });
                return 0;
            }
            if (n >= BS_Z_MIN_N && BS_BANKWALK && k <= 8 && (banks - 1) * B < cols && cpu_has_avx512()) {
                at::parallel_for(0, rows, g, [&](int64_t r0, int64_t r1) {
                    spmm_bankrows_avx512<I>(fv, offs, fx, fy, fb, r0, r1, nnz, cols, n, rows, yt, banks, k, B);
                });
                return 0;
            }
            at::parallel_for(0, rows, g, [&](int64_t r0, int64_t r1) {
                spmm_rows_avx2<I>(fv, offs, cb, fx, fy, fb, r0, r1, nnz, cols, n, rows, yt, banks, k, B);
            });
        }
        return 0;
    }
#endif
    if (vec)
        at::parallel_for(0, rows, g, [&](int64_t r0, int64_t r1) {
            spmv_rows_scalar<T, I>(vals, offs, x, y, bias, r0, r1, banks, k, B, cols);
        });
    else
        at::parallel_for(0, rows, g, [&](int64_t r0, int64_t r1) {
            spmm_rows_scalar<T, I>(vals, offs, x, y, bias, r0, r1, banks, k, B, cols, n, rows, yt);
        });
    return 0;
}

template <typename T>
int run_idx(int it, const void* v, const void* o, const void* x, void* y, const void* b, int64_t rows, int64_t banks,
            int64_t k, int64_t B, int64_t cols, int64_t n, int threads, int flags) {
    return with_index(it, [&](auto tag) {
        return run<T, decltype(tag)>(v, o, x, y, b, rows, banks, k, B, cols, n, threads, flags);
    });
}

// dst (n, cols) = src (cols, n)^T; n fixed at compile time for the tile kernel's batches (vectorised by the compiler)
template <int N>
void transpose_n(const float* src, float* dst, int64_t cols) {
    for (int64_t i = 0; i < cols; ++i)
#pragma GCC unroll 4
        for (int c = 0; c < N; ++c) dst[c * cols + i] = src[i * N + c];
}

inline void transpose_into(const float* src, float* dst, int64_t cols, int64_t n) {
    switch (n) {
        case 2: transpose_n<2>(src, dst, cols); return;
        case 3: transpose_n<3>(src, dst, cols); return;
        case 4: transpose_n<4>(src, dst, cols); return;
        default:
            for (int64_t i = 0; i < cols; ++i)
                for (int64_t c = 0; c < n; ++c) dst[c * cols + i] = src[i * n + c];
    }
}

template <typename I>
int tiles_run_t(const I* ot, const float* vt, const float* x, float* y, const float* bias, int64_t rows, int64_t banks,
                int64_t k, int64_t B, int64_t cols, int64_t n, int threads, int flags) {
#if BS_X86
    if (!cpu_has_avx512()) return -4;
    if (B > 64 || B < 1) return -5;
    // flags bit 0: x (cols, n) and y (rows, n), the layout of W @ X. x is transposed here into a per-thread buffer
    // (n * cols floats; measured ~0.1 ms less than torch's transposes of x and y around the call at n = 4, 4096^2),
    // and y is written in place.
    const int64_t yn = (flags & 1) && n > 1 ? n : 0;
    if (yn) {
        thread_local std::vector<float> xt;
        if ((int64_t)xt.size() < n * cols) xt.resize(n * cols);
        transpose_into(x, xt.data(), cols, n);
        x = xt.data();
    }
    const int nx = B <= 16 ? 1 : (B <= 32 ? 2 : 4);
    const int64_t groups = (rows + 15) / 16;
    const int64_t g = grain_for(groups, banks * k * 16 * std::min<int64_t>(n, 4), threads);
    // more than 4 columns: passes of 4 over a block of BS_TGB groups while its weights are still in L2, so the
    // weights are read from memory once, not once per pass
    auto body = [&](int64_t g0, int64_t g1) {
        for (int64_t b0 = g0; b0 < g1; b0 += BS_TGB) {
            const int64_t b1 = std::min<int64_t>(g1, b0 + BS_TGB);
            for (int64_t c0 = 0; c0 < n; c0 += 4) {
                const int nc = (int)std::min<int64_t>(4, n - c0);
                if (nx == 1)
                    tiles_avx512_nc<I, 1>(nc, vt, ot, x, y, bias, b0, b1, rows, banks, k, B, cols, c0, yn);
                else if (nx == 2)
                    tiles_avx512_nc<I, 2>(nc, vt, ot, x, y, bias, b0, b1, rows, banks, k, B, cols, c0, yn);
                else
                    tiles_avx512_nc<I, 4>(nc, vt, ot, x, y, bias, b0, b1, rows, banks, k, B, cols, c0, yn);
            }
        }
    };
    at::parallel_for(0, groups, g, body);
    return 0;
#else
    return -4;
#endif
}


template <typename I>
int bspmm_run_t(const I* ot, const float* vt, const float* x, float* y, const float* bias, int64_t rows, int64_t banks,
                int64_t k, int64_t B, int64_t cols, int64_t n, int threads, int flags, int64_t tw, int64_t gb) {
#if BS_X86
    if (!cpu_has_avx512()) return -4;
    const int64_t groups = (rows + 15) / 16;
    const int64_t per_task = std::max<int64_t>(gb, (groups + std::max(threads, 1) - 1) / std::max(threads, 1));
    at::parallel_for(0, groups, per_task, [&](int64_t g0, int64_t g1) {
        bspmm_avx512<I>(vt, ot, x, y, bias, g0, g1, rows, banks, k, B, cols, n, (flags & 2) != 0, tw, gb);
    });
    return 0;
#else
    return -4;
#endif
}

template <typename I>
int groups_run_t(const void* og, const void* vg, const void* x, void* y, const void* bias, int64_t rows,
                 int64_t banks, int64_t k, int64_t B, int64_t cols, int64_t n, int threads, int flags) {
#if BS_X86
    if (!cpu_has_avx512()) return -4;
    const int64_t g = grain_for(rows, banks * k * n, threads);
    // fewer than 8 columns: x padded with zero columns to rows of 8 floats, read by the 8-column ymm kernel (measured
    // 4096^2 at 90.6%, caches flushed: 5-7 columns in about the time of 8, against 0.6-0.7 ms for the tiles' passes)
    const int64_t nout = n;
    if (n < 8) {
        thread_local std::vector<float> x8;
        x8.assign((size_t)(cols * 8), 0.f);
        const float* src = (const float*)x;
        for (int64_t i = 0; i < cols; ++i)
            for (int64_t c = 0; c < n; ++c) x8[i * 8 + c] = src[i * n + c];
        x = x8.data();
        n = 8;
    }
    std::atomic<int> rc{0};
    at::parallel_for(0, rows, g, [&](int64_t r0, int64_t r1) {
        const int e = gspmm_avx512<I>((const float*)vg, (const I*)og, (const float*)x, (float*)y,
                                      (const float*)bias, r0, r1, rows, banks, k, B, cols, n, (flags & 2) != 0, nout);
        if (e) rc = e;
    });
    return rc;
#else
    return -4;
#endif
}

int tiles_run(int it, const void* vt, const void* ot, const void* x, void* y, const void* bias, int64_t rows,
              int64_t banks, int64_t k, int64_t B, int64_t cols, int64_t n, int threads, int flags) {
    if (rows <= 0 || n <= 0) return 0;
    if (banks <= 0 || k <= 0 || cols <= 0) return -2;
    const float* v = (const float*)vt;
    const float* xx = (const float*)x;
    float* yy = (float*)y;
    const float* bb = (const float*)bias;
    return with_index(it, [&](auto tag) {
        using I = decltype(tag);
        return tiles_run_t<I>((const I*)ot, v, xx, yy, bb, rows, banks, k, B, cols, n, threads, flags);
    });
}

}  // namespace

extern "C" {

int bs_abi_version() { return BS_ABI; }

int bs_has_avx2() { return cpu_has_avx2() ? 1 : 0; }

int bs_has_avx512() { return cpu_has_avx512() ? 1 : 0; }

// Tiled layout (see tiles_rows_avx512), float32, bank_size <= 64, AVX-512F machines only (returns -4 otherwise).
// x (n, cols) row-major, y (n, rows) row-major (a Linear layer's layout); with flags bit 0 x (cols, n) and y (rows, n)
// (W @ X); bias (rows,) or NULL.
int bs_matmul_tiles(int it, const void* vt, const void* ot, const void* x, void* y, const void* bias, int64_t rows,
                    int64_t banks, int64_t k, int64_t B, int64_t cols, int64_t n, int threads, int flags) {
    try {
        return tiles_run(it, vt, ot, x, y, bias, rows, banks, k, B, cols, n, threads, flags);
    } catch (...) {
        return -100;
    }
}

// Bank-major SpMM on the tiled layout (see bspmm_block_avx512), float32, AVX-512F only (-4 otherwise). x (cols, n)
// row-major; y (rows, n), or (n, rows) with flags bit 1; tw columns per tile (multiple of 16, <= 128), gb groups of
// 16 rows per block.
int bs_spmm_tiles(int it, const void* vt, const void* ot, const void* x, void* y, const void* bias, int64_t rows,
                  int64_t banks, int64_t k, int64_t B, int64_t cols, int64_t n, int threads, int flags, int64_t tw,
                  int64_t gb) {
    try {
        if (rows <= 0 || n <= 0) return 0;
        if (banks <= 0 || k <= 0 || B <= 0 || cols <= 0 || tw < 16 || tw > 128 || tw % 16 || gb < 1) return -2;
        if (threads <= 0) threads = at::get_num_threads();
        const float* v = (const float*)vt;
        return with_index(it, [&](auto tag) {
            using I = decltype(tag);
            return bspmm_run_t<I>((const I*)ot, v, (const float*)x, (float*)y, (const float*)bias, rows, banks, k, B,
                                  cols, n, threads, flags, tw, gb);
        });
    } catch (...) {
        return -100;
    }
}

// SpMM on the bank-group layout (see gspmm_avx512), float32, AVX-512F only (-4 otherwise). vg / og (groups, rows,
// gb * k); x (cols, n) row-major; y (rows, n), or (n, rows) with flags bit 1; bias (rows,) or NULL.
int bs_spmm_groups(int it, const void* vg, const void* og, const void* x, void* y, const void* bias, int64_t rows,
                   int64_t banks, int64_t k, int64_t B, int64_t cols, int64_t n, int threads, int flags, int64_t gb) {
    try {
        if (rows <= 0 || n <= 0) return 0;
        if (banks <= 0 || k <= 0 || B <= 0 || cols <= 0 || gb != BS_GROUP || (banks - 1) * B >= cols)
            return -2;
        if (threads <= 0) threads = at::get_num_threads();
        return with_index(it, [&](auto tag) {
            return groups_run_t<decltype(tag)>(og, vg, x, y, bias, rows, banks, k, B, cols, n, threads, flags);
        });
    } catch (...) {
        return -100;
    }
}

// vt: 0 float32, 1 float64; it: 0 uint8, 1 int16, 2 int32. x is (cols,) for n == 1 or (cols, n) row-major;
// y (rows,) / (rows, n), or (n, rows) with flags bit 1; bias (rows,) or NULL. threads <= 0: torch's intra-op
// thread count. flags bit 0: no SIMD (tests).
int bs_matmul(int vt, int it, const void* vals, const void* offs, const void* x, void* y, const void* bias,
              int64_t rows, int64_t banks, int64_t k, int64_t B, int64_t cols, int64_t n, int threads, int flags) {
    try {
        if (vt == 0) return run_idx<float>(it, vals, offs, x, y, bias, rows, banks, k, B, cols, n, threads, flags);
        if (vt == 1) return run_idx<double>(it, vals, offs, x, y, bias, rows, banks, k, B, cols, n, threads, flags);
        return -1;
    } catch (...) {
        return -100;
    }
}

}  // extern "C"
