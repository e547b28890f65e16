// gelu.cuh: GELU (tanh approximation) forward and backward, elementwise.
//
//     gelu(x)  = 0.5 x (1 + tanh(u)),   u = sqrt(2/pi) (x + 0.044715 x^3)
//     gelu'(x) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) sqrt(2/pi) (1 + 3 0.044715 x^2)
//     forward:  out = gelu(inp)
//     backward: d = d * gelu'(inp)   (in place: the gradient buffer arrives holding dout)
// The constants and the scalar math live in kernel_math.h (gelu_forward_math, gelu_backward_math); the
// emulator's cuBLASLt GELU epilogues call the same functions. The trainer's forward always runs
// gelu_forward; its backward runs gelu_backward_inplace unless -ge 1 fuses it into the dinp matmul's DGELU
// epilogue (llmc/matmul.cuh, MatmulContext::fuse_gelu), and also when cuBLASLt has no algorithm for it.
// Requires N to be a multiple of x128::size (8 bf16, 4 fp32: one 128-bit load per thread).
#pragma once

#include "llmc/cuda_common.h"
#include "llmc/kernel_math.h"

__global__ void gelu_forward_kernel(floatX* out, const floatX* inp, size_t N) {
    size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * x128::size;
    if (i >= N) return;
    x128 x = load128cs(inp + i);
    x128 o;
    for (int k = 0; k < x128::size; k++) o[k] = (floatX)gelu_forward_math((float)x[k]);
    store128(out + i, o);
}

__global__ void gelu_backward_inplace_kernel(floatX* d_in_out, const floatX* inp, size_t N) {
    size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * x128::size;
    if (i >= N) return;
    x128 d = load128cs(d_in_out + i);
    x128 x = load128cs(inp + i);
    for (int k = 0; k < x128::size; k++) d[k] = (floatX)((float)d[k] * gelu_backward_math((float)x[k]));
    store128(d_in_out + i, d);
}

inline unsigned int gelu_grid(size_t N, int block_size, const char* who) {
    if (N % x128::size != 0) fail("%s: N = %zu must be a multiple of %d", who, N, x128::size);
    size_t threads = N / x128::size;
    return (unsigned int)((threads + block_size - 1) / block_size);
}

// inp (N) -> out (N)
inline void gelu_forward(floatX* out, const floatX* inp, size_t N, cudaStream_t stream) {
    const int block_size = 256;
    unsigned int grid = gelu_grid(N, block_size, "gelu_forward");
    if (grid == 0) return;
    CUDA_LAUNCH(gelu_forward_kernel, grid, block_size, 0, stream)(out, inp, N);
    cudaCheck(cudaGetLastError());
}

// d_in_out (N) holds dout on entry and dinp = dout * gelu'(inp) on exit
inline void gelu_backward_inplace(floatX* d_in_out, const floatX* inp, size_t N, cudaStream_t stream) {
    const int block_size = 256;
    unsigned int grid = gelu_grid(N, block_size, "gelu_backward_inplace");
    if (grid == 0) return;
    CUDA_LAUNCH(gelu_backward_inplace_kernel, grid, block_size, 0, stream)(d_in_out, inp, N);
    cudaCheck(cudaGetLastError());
}
