// Balanced Sparsity (Yao et al., AAAI 2019): GPU kernels for y = W x with W in the packed balanced format
//   values  (rows, banks, k)   kept weights, ascending column inside a bank
//   offsets (rows, banks, k)   in-bank position (uint8 / int16 / int32)
//   y[r] = sum_b sum_j values[r,b,j] * x[b*B + offsets[r,b,j]]
// Loaded by workbench/sparse/kernels/gpu.py with cupy.RawModule; every entry point is extern "C".
//
// spmv  : one warp per output row; lanes stride over the row's banks*k entries (coalesced values/offsets),
//         x is read through the read-only cache; warp-shuffle reduction. Equal work per warp (balance).
// spmm  : x is (cols, n) row-major, y is (rows, n). A block computes a tile of TR rows x TN batch columns.
//         For each bank b it stages the x slice x[b*B:(b+1)*B, tile] and the tile's k values/offsets of
//         bank b in shared memory — balanced banks mean every row of the tile reads only this slice — then
//         every thread accumulates TR/8 rows for its batch column from shared memory.
// spmm_simple : one thread per (row, column), global loads only: the fallback when the tile does not fit
//         shared memory (large banks / large k).
// Accumulation is always in fp32; fp16 kernels read and write __half.
#include <cuda_fp16.h>

#define BS_TR 64   // rows per spmm block
#define BS_TN 32   // batch columns per spmm block (one warp wide)
#define BS_TY 8    // warps per spmm block

__device__ __forceinline__ float bs_to_float(float v) { return v; }
__device__ __forceinline__ float bs_to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ void bs_store(float* p, float v) { *p = v; }
__device__ __forceinline__ void bs_store(__half* p, float v) { *p = __float2half(v); }

template <typename T, typename I>
__device__ __forceinline__ void bs_spmv_impl(const T* __restrict__ vals, const I* __restrict__ offs,
                                             const T* __restrict__ x, T* __restrict__ y,
                                             int rows, int banks, int k, int bank_size) {
    const long long warp = ((long long)blockIdx.x * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (warp >= rows) return;  // whole warps leave together (blockDim is a multiple of 32)
    const int nnz = banks * k;
    const T* v = vals + warp * (long long)nnz;
    const I* o = offs + warp * (long long)nnz;
    float acc = 0.f;
    for (int e = lane; e < nnz; e += 32) {
        const int col = (e / k) * bank_size + (int)o[e];
        acc += bs_to_float(v[e]) * bs_to_float(x[col]);
    }
    #pragma unroll
    for (int s = 16; s > 0; s >>= 1) acc += __shfl_down_sync(0xffffffffu, acc, s);
    if (lane == 0) bs_store(y + warp, acc);
}

template <typename T, typename I>
__device__ __forceinline__ void bs_spmm_impl(const T* __restrict__ vals, const I* __restrict__ offs,
                                             const T* __restrict__ x, T* __restrict__ y,
                                             int rows, int cols, int banks, int k, int bank_size, int n) {
    extern __shared__ float bs_smem[];
    float* sx = bs_smem;                         // bank_size * BS_TN
    float* sv = sx + bank_size * BS_TN;          // BS_TR * k
    int* so = (int*)(sv + BS_TR * k);            // BS_TR * k
    const int tx = threadIdx.x, ty = threadIdx.y;
    const int tid = ty * BS_TN + tx;
    const int nthreads = BS_TN * BS_TY;
    const int row0 = blockIdx.y * BS_TR;
    const int col0 = blockIdx.x * BS_TN;
    const long long nnz = (long long)banks * k;
    float acc[BS_TR / BS_TY];
    #pragma unroll
    for (int i = 0; i < BS_TR / BS_TY; ++i) acc[i] = 0.f;

    for (int b = 0; b < banks; ++b) {
        for (int i = tid; i < bank_size * BS_TN; i += nthreads) {
            const int rr = i / BS_TN, cc = i - rr * BS_TN;
            const int gr = b * bank_size + rr, gc = col0 + cc;
            sx[i] = (gr < cols && gc < n) ? bs_to_float(x[(long long)gr * n + gc]) : 0.f;
        }
        for (int i = tid; i < BS_TR * k; i += nthreads) {
            const int rr = i / k, j = i - rr * k;
            const int gr = row0 + rr;
            if (gr < rows) {
                const long long idx = (long long)gr * nnz + (long long)b * k + j;
                sv[i] = bs_to_float(vals[idx]);
                so[i] = (int)offs[idx];
            } else {
                sv[i] = 0.f;
                so[i] = 0;
            }
        }
        __syncthreads();
        #pragma unroll
        for (int i = 0; i < BS_TR / BS_TY; ++i) {
            const int rr = ty + i * BS_TY;
            const float* rv = sv + rr * k;
            const int* ro = so + rr * k;
            float a = acc[i];
            for (int j = 0; j < k; ++j) a += rv[j] * sx[ro[j] * BS_TN + tx];
            acc[i] = a;
        }
        __syncthreads();
    }
    const int c = col0 + tx;
    if (c < n) {
        #pragma unroll
        for (int i = 0; i < BS_TR / BS_TY; ++i) {
            const int gr = row0 + ty + i * BS_TY;
            if (gr < rows) bs_store(y + (long long)gr * n + c, acc[i]);
        }
    }
}

template <typename T, typename I>
__device__ __forceinline__ void bs_spmm_simple_impl(const T* __restrict__ vals, const I* __restrict__ offs,
                                                    const T* __restrict__ x, T* __restrict__ y,
                                                    int rows, int banks, int k, int bank_size, int n) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    const int r = blockIdx.y;
    if (c >= n || r >= rows) return;
    const int nnz = banks * k;
    const T* v = vals + (long long)r * nnz;
    const I* o = offs + (long long)r * nnz;
    float acc = 0.f;
    for (int e = 0; e < nnz; ++e) {
        const int col = (e / k) * bank_size + (int)o[e];
        acc += bs_to_float(v[e]) * bs_to_float(x[(long long)col * n + c]);
    }
    bs_store(y + (long long)r * n + c, acc);
}

#define BS_DEFINE(SUFFIX, T, I)                                                                              \
    extern "C" __global__ void __launch_bounds__(256)                                                         \
    bs_spmv_##SUFFIX(const T* vals, const I* offs, const T* x, T* y, int rows, int banks, int k,              \
                     int bank_size) {                                                                          \
        bs_spmv_impl<T, I>(vals, offs, x, y, rows, banks, k, bank_size);                                      \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(BS_TN * BS_TY)                                               \
    bs_spmm_##SUFFIX(const T* vals, const I* offs, const T* x, T* y, int rows, int cols, int banks, int k,    \
                     int bank_size, int n) {                                                                   \
        bs_spmm_impl<T, I>(vals, offs, x, y, rows, cols, banks, k, bank_size, n);                             \
    }                                                                                                         \
    extern "C" __global__ void __launch_bounds__(256)                                                         \
    bs_spmm_simple_##SUFFIX(const T* vals, const I* offs, const T* x, T* y, int rows, int banks, int k,       \
                            int bank_size, int n) {                                                            \
        bs_spmm_simple_impl<T, I>(vals, offs, x, y, rows, banks, k, bank_size, n);                            \
    }

BS_DEFINE(f32_u8, float, unsigned char)
BS_DEFINE(f32_i16, float, short)
BS_DEFINE(f32_i32, float, int)
BS_DEFINE(f16_u8, __half, unsigned char)
BS_DEFINE(f16_i16, __half, short)
BS_DEFINE(f16_i32, __half, int)

// L2 flush helper for the benchmark: writes a buffer larger than the L2 cache.
extern "C" __global__ void bs_flush(float* buf, long long n) {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (long long)gridDim.x * blockDim.x)
        buf[i] = buf[i] * 0.5f + 1.0f;
}
