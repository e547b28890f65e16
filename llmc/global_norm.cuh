// global_norm.cuh: squared L2 norm of a gradient buffer, for gradient clipping, and the clipping scale.
//
//     out = sum_i g_i^2        (the SQUARED norm: under ZeRO each rank reduces its shard and the
//                               ranks add their squared partial norms before the square root)
//
// Deterministic two-stage reduction, no atomics: stage 1 launches a fixed number of blocks (a function
// of n only, at most GLOBAL_NORM_MAX_BLOCKS); thread j of block b sums g_i^2 for i = b*blockDim + j,
// + grid stride, in fp32, and the block reduces its threads in a fixed tree into partials[b]. Stage 2,
// one warp, adds the partials in double in a fixed order and writes one float. The same n and data give
// bit-identical results run to run.
#pragma once

#include "llmc/cuda_common.h"

constexpr int GLOBAL_NORM_BLOCK_SIZE = 512;
constexpr int GLOBAL_NORM_MAX_BLOCKS = 1024;

inline int global_norm_num_blocks(size_t n) {
    size_t blocks = (n + GLOBAL_NORM_BLOCK_SIZE - 1) / GLOBAL_NORM_BLOCK_SIZE;
    if (blocks < 1) blocks = 1;
    return blocks < (size_t)GLOBAL_NORM_MAX_BLOCKS ? (int)blocks : GLOBAL_NORM_MAX_BLOCKS;
}

// fp32 scratch of the partial sums
inline size_t global_norm_scratch_bytes(size_t n) {
    return (size_t)global_norm_num_blocks(n) * sizeof(float);
}

template <class T> __global__ void global_norm_partials_kernel(float* partials, const T* g, size_t n) {
    __shared__ float shared[WARP_SIZE];
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    float sum = 0.0f;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float x = (float)g[i];
        sum += x * x;
    }
    sum = block_reduce_sum(sum, shared);
    if (threadIdx.x == 0) partials[blockIdx.x] = sum;
}

__global__ void global_norm_final_kernel(float* out, const float* partials, int num_partials) {
    // one warp: lane j adds partials j, j+32, ... in order, then a fixed butterfly over the lanes
    double sum = 0.0;
    for (int i = threadIdx.x; i < num_partials; i += WARP_SIZE) sum += (double)partials[i];
    for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffff, sum, offset);
    if (threadIdx.x == 0) *out = (float)sum;
}

// out_device (1 float) = sum of g^2 over g (n); scratch of global_norm_scratch_bytes(n) bytes.
// T is float (the fp32 gradient accumulation buffer) or floatX.
template <class T>
void global_norm_squared(float* out_device, const T* g, size_t n, float* scratch, cudaStream_t stream) {
    const int blocks = global_norm_num_blocks(n);
    CUDA_LAUNCH(global_norm_partials_kernel<T>, blocks, GLOBAL_NORM_BLOCK_SIZE, 0, stream)(scratch, g, n);
    cudaCheck(cudaGetLastError());
    CUDA_LAUNCH(global_norm_final_kernel, 1, WARP_SIZE, 0, stream)(out_device, scratch, blocks);
    cudaCheck(cudaGetLastError());
}
