// quantize.cuh: CUDA kernels and launchers for the quantization schemes of llmc/quantize.h (the math,
// layouts, error bounds and the zero / NaN conventions are documented there).
//
// Bit-identical to the CPU reference: the per-element code is the same QUANT_HD function on both sides,
// and the block absmax is a max (order-independent, hence exact whatever the reduction tree). The
// double-quantization mean is a double sum in the CPU's order (sequential inside groups of 256, then
// the group sums sequentially). Nothing here may be compiled with --use_fast_math: IEEE division is
// part of the contract (nvcc's default -prec-div=true).
//
// Kernels: one thread block per quantization block (threads stride through the block, coalesced),
// reduce the absmax in shared memory, then write the codes; the codebook midpoints are staged in shared
// memory so the binary search does not serialize on divergent constant-memory reads. Dequantization is
// elementwise. Per-tensor absmax is the blockwise kernel with block_size = n (one thread block: for the
// comparison in the checks, not for speed).
//
// Non-finite input: the block's absmax becomes NaN and its codes the zero code, as on the CPU. When
// d_bad_block is not null the launcher resets it to 0xFFFFFFFF and the kernel atomicMin's the index of
// every bad block into it; quantize_read_bad_block() copies it back (-1 when every block was finite).
#pragma once

#include <algorithm>
#include <cfloat>
#include <cstdint>

#include "llmc/cuda_common.h"
#include "llmc/quantize.h"

constexpr int QUANT_THREADS = 256;

enum QuantScheme { QUANT_INT8 = 0, QUANT_CODEBOOK = 1, QUANT_NF4 = 2 };

// max over the thread block (blockDim.x a multiple of 32); every thread gets the result. `shared` holds
// WARP_SIZE floats; ends with __syncthreads so it can be reused right away.
__device__ inline float quant_block_reduce_max(float val, float* shared) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int warp = threadIdx.x / WARP_SIZE;
    const int num_warps = blockDim.x / WARP_SIZE;
    val = warp_reduce_max(val);
    if (lane == 0) shared[warp] = val;
    __syncthreads();
    val = (lane < num_warps) ? shared[lane] : 0.0f;
    val = warp_reduce_max(val);
    __syncthreads();
    return val;
}

// x (n) -> codes, absmax (gridDim.x = number of blocks). For QUANT_INT8 codes holds int8 bits; for
// QUANT_NF4 codes holds ceil(n/2) packed bytes and block_size is even.
template <int SCHEME>
__global__ void quantize_blockwise_kernel(const float* x, size_t n, size_t block_size,
                                          const __grid_constant__ Codebook cb, uint8_t* codes, float* absmax,
                                          unsigned int* bad_block) {
    __shared__ float s_mid[CODEBOOK_MAX - 1];
    __shared__ float s_red[WARP_SIZE];
    if (SCHEME != QUANT_INT8) {
        for (int i = threadIdx.x; i < cb.size - 1; i += blockDim.x) s_mid[i] = cb.midpoints[i];
    }
    const size_t start = (size_t)blockIdx.x * block_size;
    const size_t end = (start + block_size < n) ? start + block_size : n;
    float a = 0.0f;
    bool finite = true;
    for (size_t i = start + threadIdx.x; i < end; i += blockDim.x) {
        const float v = x[i];
        a = fmaxf(a, fabsf(v));
        finite = finite && quant_is_finite(v);
    }
    a = quant_block_reduce_max(a, s_red); // its __syncthreads also publishes s_mid
    finite = __syncthreads_and(finite);
    if (SCHEME == QUANT_NF4) {
        for (size_t j = start / 2 + threadIdx.x; 2 * j < end; j += blockDim.x) {
            const size_t i = 2 * j;
            int lo = cb.zero_code, hi = 0;
            if (finite) {
                lo = codebook_quantize_value(s_mid, cb.size, cb.zero_code, x[i], a);
                if (i + 1 < end) hi = codebook_quantize_value(s_mid, cb.size, cb.zero_code, x[i + 1], a);
            } else if (i + 1 < end) {
                hi = cb.zero_code;
            }
            codes[j] = (uint8_t)(lo | (hi << 4));
        }
    } else {
        for (size_t i = start + threadIdx.x; i < end; i += blockDim.x) {
            if (SCHEME == QUANT_INT8) {
                codes[i] = (uint8_t)(finite ? quantize_int8_value(x[i], a) : 0);
            } else {
                codes[i] = (uint8_t)(finite ? codebook_quantize_value(s_mid, cb.size, cb.zero_code, x[i], a)
                                            : cb.zero_code);
            }
        }
    }
    if (threadIdx.x == 0) {
        absmax[blockIdx.x] = finite ? a : NAN;
        if (!finite && bad_block != nullptr) atomicMin(bad_block, blockIdx.x);
    }
}

// codes, absmax -> out (n)
template <int SCHEME>
__global__ void dequantize_blockwise_kernel(const uint8_t* codes, const float* absmax, size_t n,
                                            size_t block_size, const __grid_constant__ Codebook cb,
                                            float* out) {
    __shared__ float s_levels[CODEBOOK_MAX];
    if (SCHEME != QUANT_INT8) {
        for (int i = threadIdx.x; i < cb.size; i += blockDim.x) s_levels[i] = cb.levels[i];
        __syncthreads();
    }
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        const float a = absmax[i / block_size];
        if (SCHEME == QUANT_INT8) {
            out[i] = dequantize_int8_value((int8_t)codes[i], a);
        } else if (SCHEME == QUANT_CODEBOOK) {
            out[i] = codebook_dequantize_value(s_levels, codes[i], a);
        } else {
            const int code = (i % 2 == 0) ? (codes[i / 2] & 15) : (codes[i / 2] >> 4);
            out[i] = codebook_dequantize_value(s_levels, code, a);
        }
    }
}

// ----------------------------------------------------------------------------------------------------
// launchers

inline int quant_threads_for(size_t block_size) {
    size_t t = (block_size + WARP_SIZE - 1) / WARP_SIZE * WARP_SIZE;
    return (int)(t < (size_t)QUANT_THREADS ? t : (size_t)QUANT_THREADS);
}

inline int quant_grid_for(size_t num_blocks, const char* what) {
    if (num_blocks > (size_t)INT32_MAX) fail("%s: %zu blocks exceed the CUDA grid limit", what, num_blocks);
    return (int)num_blocks;
}

template <int SCHEME>
void quantize_blockwise_cuda(const float* x, size_t n, size_t block_size, const Codebook& cb, uint8_t* codes,
                             float* absmax, unsigned int* d_bad_block, cudaStream_t stream,
                             const char* what) {
    quant_check_block_size(block_size, what);
    if (d_bad_block != nullptr) cudaCheck(cudaMemsetAsync(d_bad_block, 0xFF, sizeof(unsigned int), stream));
    if (n == 0) return;
    const int grid = quant_grid_for(quant_num_blocks(n, block_size), what);
    CUDA_LAUNCH(quantize_blockwise_kernel<SCHEME>, grid, quant_threads_for(block_size), 0, stream)
    (x, n, block_size, cb, codes, absmax, d_bad_block);
    cudaCheck(cudaGetLastError());
}

template <int SCHEME>
void dequantize_blockwise_cuda(const uint8_t* codes, const float* absmax, size_t n, size_t block_size,
                               const Codebook& cb, float* out, cudaStream_t stream) {
    if (n == 0) return;
    const size_t grid = std::min<size_t>((n + QUANT_THREADS - 1) / QUANT_THREADS, 65536);
    CUDA_LAUNCH(dequantize_blockwise_kernel<SCHEME>, (int)grid, QUANT_THREADS, 0, stream)
    (codes, absmax, n, block_size, cb, out);
    cudaCheck(cudaGetLastError());
}

// the index of the first non-finite block reported by a quantize launcher, or -1 (synchronizes)
inline int64_t quantize_read_bad_block(const unsigned int* d_bad_block) {
    unsigned int bad;
    cudaCheck(cudaMemcpy(&bad, d_bad_block, sizeof(bad), cudaMemcpyDeviceToHost));
    return bad == 0xFFFFFFFFu ? -1 : (int64_t)bad;
}

// 1. blockwise absmax int8 (per-tensor: block_size = n)
inline void quantize_absmax_int8_cuda(const float* x, size_t n, size_t block_size, int8_t* codes,
                                      float* absmax, unsigned int* d_bad_block, cudaStream_t stream) {
    quantize_blockwise_cuda<QUANT_INT8>(x, n, block_size, Codebook{}, (uint8_t*)codes, absmax, d_bad_block,
                                        stream, "quantize_absmax_int8_cuda");
}
inline void dequantize_absmax_int8_cuda(const int8_t* codes, const float* absmax, size_t n, size_t block_size,
                                        float* out, cudaStream_t stream) {
    quant_check_block_size(block_size, "dequantize_absmax_int8_cuda");
    dequantize_blockwise_cuda<QUANT_INT8>((const uint8_t*)codes, absmax, n, block_size, Codebook{}, out,
                                          stream);
}
// NF4: packed holds ceil(n / 2) bytes
inline void quantize_nf4_cuda(const float* x, size_t n, size_t block_size, uint8_t* packed, float* absmax,
                              unsigned int* d_bad_block, cudaStream_t stream) {
    nf4_check_block_size(block_size, "quantize_nf4_cuda");
    quantize_blockwise_cuda<QUANT_NF4>(x, n, block_size, nf4_map(), packed, absmax, d_bad_block, stream,
                                       "quantize_nf4_cuda");
}
inline void dequantize_nf4_cuda(const uint8_t* packed, const float* absmax, size_t n, size_t block_size,
                                float* out, cudaStream_t stream) {
    nf4_check_block_size(block_size, "dequantize_nf4_cuda");
    dequantize_blockwise_cuda<QUANT_NF4>(packed, absmax, n, block_size, nf4_map(), out, stream);
}

// ----------------------------------------------------------------------------------------------------
// 3. double quantization of absmax values (num floats): d_mean (1 float), codes (num), group_absmax
// (ceil(num / 256)), all on the device.

// one thread per group of DQ_BLOCK values: the group's double sum, in index order
__global__ void dq_group_sums_kernel(const float* a, size_t num, double* group_sums) {
    const size_t g = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (g * DQ_BLOCK >= num) return;
    double s = 0.0;
    for (size_t i = g * DQ_BLOCK; i < num && i < (g + 1) * DQ_BLOCK; i++) s += (double)a[i];
    group_sums[g] = s;
}

// one thread: the group sums in order, then the mean (as dq_mean on the CPU)
__global__ void dq_mean_kernel(const double* group_sums, size_t num_groups, size_t num, float* mean) {
    double total = 0.0;
    for (size_t g = 0; g < num_groups; g++) total += group_sums[g];
    *mean = (float)(total / (double)num);
}

__global__ void dq_center_kernel(const float* a, size_t num, const float* mean, float* centered) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < num;
         i += (size_t)gridDim.x * blockDim.x) {
        centered[i] = a[i] - *mean;
    }
}

__global__ void dq_dequantize_kernel(const int8_t* codes, const float* group_absmax, const float* mean,
                                     size_t num, float* a) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < num;
         i += (size_t)gridDim.x * blockDim.x) {
        a[i] = dq_dequantize_value(codes[i], group_absmax[i / DQ_BLOCK], *mean);
    }
}

inline void double_quantize_absmax_cuda(const float* a, size_t num, float* d_mean, int8_t* codes,
                                        float* group_absmax, unsigned int* d_bad_block, cudaStream_t stream) {
    if (num == 0) {
        cudaCheck(cudaMemsetAsync(d_mean, 0, sizeof(float), stream));
        if (d_bad_block != nullptr)
            cudaCheck(cudaMemsetAsync(d_bad_block, 0xFF, sizeof(unsigned int), stream));
        return;
    }
    const size_t groups = dq_num_groups(num);
    double* group_sums;
    float* centered;
    cudaCheck(cudaMallocAsync((void**)&group_sums, groups * sizeof(double), stream));
    cudaCheck(cudaMallocAsync((void**)&centered, num * sizeof(float), stream));
    CUDA_LAUNCH(dq_group_sums_kernel, (int)ceil_div(groups, (size_t)QUANT_THREADS), QUANT_THREADS, 0, stream)
    (a, num, group_sums);
    cudaCheck(cudaGetLastError());
    CUDA_LAUNCH(dq_mean_kernel, 1, 1, 0, stream)(group_sums, groups, num, d_mean);
    cudaCheck(cudaGetLastError());
    const int grid = (int)std::min<size_t>(ceil_div(num, (size_t)QUANT_THREADS), 65536);
    CUDA_LAUNCH(dq_center_kernel, grid, QUANT_THREADS, 0, stream)(a, num, d_mean, centered);
    cudaCheck(cudaGetLastError());
    quantize_absmax_int8_cuda(centered, num, DQ_BLOCK, codes, group_absmax, d_bad_block, stream);
    cudaCheck(cudaFreeAsync(group_sums, stream));
    cudaCheck(cudaFreeAsync(centered, stream));
}

inline void double_dequantize_absmax_cuda(const int8_t* codes, const float* group_absmax, const float* d_mean,
                                          size_t num, float* a, cudaStream_t stream) {
    if (num == 0) return;
    const int grid = (int)std::min<size_t>(ceil_div(num, (size_t)QUANT_THREADS), 65536);
    CUDA_LAUNCH(dq_dequantize_kernel, grid, QUANT_THREADS, 0, stream)(codes, group_absmax, d_mean, num, a);
    cudaCheck(cudaGetLastError());
}
