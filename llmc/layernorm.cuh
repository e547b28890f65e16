// layernorm.cuh: LayerNorm forward (plain, and fused with the residual add), the residual add alone, and
// backward.
//
// forward, per row x (C values) of N = B*T rows, eps = 1e-5, statistics in fp32:
//     mean = sum_i x_i / C,   var = sum_i (x_i - mean)^2 / C,   rstd = 1 / sqrt(var + eps)
//     xhat_i = (x_i - mean) rstd,   out_i = w_i xhat_i + b_i
// fused residual: residual = inp1 + inp2 (rounded to floatX, the value the next layer and the backward
// see), then out = LayerNorm(residual). One pass less over the residual stream than add + LayerNorm.
//
// backward (see layernorm_dinp_math in kernel_math.h), g_i = dout_i w_i:
//     dinp_i += rstd (g_i - mean_j g_j - xhat_i mean_j(g_j xhat_j))     (added: the residual stream)
//     dw_i += sum over rows of dout_i xhat_i,    db_i += sum over rows of dout_i
// dinp is a per-row computation (one warp per row). dw/db are column sums over all N rows, done
// deterministically without atomics: each block sums a fixed slice of LN_BWD_ROWS_PER_PARTIAL rows
// into fp32 scratch, then one thread per channel adds the slices up in slice order.
//
// Requires C to be a multiple of x128::size (128-bit loads: 8 bf16, 4 fp32). The mean/rstd pointers of the
// forward may be null: the statistics are then not written.
#pragma once

#include "llmc/cuda_common.h"
#include "llmc/kernel_math.h"

constexpr float LAYERNORM_EPS = 1e-5f;
constexpr int LN_BWD_ROWS_PER_PARTIAL = 32;

// ----------------------------------------------------------------------------------------------------
// forward: one warp per row; the row is read three times (mean, variance around the mean: two-pass
// for accuracy, normalise); the re-reads hit L1/L2.

template <bool FUSED_RESIDUAL>
__global__ void layernorm_forward_kernel(floatX* residual_out, floatX* out, float* mean_out, float* rstd_out,
                                         const floatX* inp1, const floatX* inp2, const floatX* weight,
                                         const floatX* bias, int N, int C) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int row = blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (row >= N) return;
    const size_t offset = (size_t)row * C;
    const floatX* x = FUSED_RESIDUAL ? residual_out + offset : inp1 + offset;

    float sum = 0.0f;
    for (int c = lane * x128::size; c < C; c += WARP_SIZE * x128::size) {
        x128 v;
        if (FUSED_RESIDUAL) {
            x128 a = load128cs(inp1 + offset + c);
            x128 b = load128cs(inp2 + offset + c);
            for (int k = 0; k < x128::size; k++) v[k] = (floatX)((float)a[k] + (float)b[k]);
            store128(residual_out + offset + c, v); // the same lane re-reads exactly these elements below
        } else {
            v = load128(x + c);
        }
        for (int k = 0; k < x128::size; k++) sum += (float)v[k];
    }
    const float mean = warp_reduce_sum(sum) / C;

    float var = 0.0f;
    for (int c = lane * x128::size; c < C; c += WARP_SIZE * x128::size) {
        x128 v = load128(x + c);
        for (int k = 0; k < x128::size; k++) {
            float d = (float)v[k] - mean;
            var += d * d;
        }
    }
    const float rstd = rsqrtf(warp_reduce_sum(var) / C + LAYERNORM_EPS);

    for (int c = lane * x128::size; c < C; c += WARP_SIZE * x128::size) {
        x128 v = load128(x + c);
        x128 w = load128(weight + c);
        x128 b = load128(bias + c);
        x128 o;
        for (int k = 0; k < x128::size; k++) {
            o[k] = (floatX)(((float)v[k] - mean) * rstd * (float)w[k] + (float)b[k]);
        }
        store128(out + offset + c, o);
    }
    if (lane == 0) {
        if (mean_out != nullptr) mean_out[row] = mean;
        if (rstd_out != nullptr) rstd_out[row] = rstd;
    }
}

// ----------------------------------------------------------------------------------------------------
// backward kernel 1: dinp, one warp per row (rows are independent, so this is deterministic)

__global__ void layernorm_backward_dinp_kernel(floatX* dinp, const floatX* dout, const floatX* inp,
                                               const floatX* weight, const float* mean, const float* rstd,
                                               int N, int C) {
    const int lane = threadIdx.x % WARP_SIZE;
    const int row = blockIdx.x * (blockDim.x / WARP_SIZE) + threadIdx.x / WARP_SIZE;
    if (row >= N) return;
    const size_t offset = (size_t)row * C;
    const float m = mean[row];
    const float s = rstd[row];

    float sum_g = 0.0f, sum_g_xhat = 0.0f;
    for (int c = lane * x128::size; c < C; c += WARP_SIZE * x128::size) {
        x128 dy = load128(dout + offset + c);
        x128 x = load128(inp + offset + c);
        x128 w = load128(weight + c);
        for (int k = 0; k < x128::size; k++) {
            float g = (float)dy[k] * (float)w[k];
            sum_g += g;
            sum_g_xhat += g * ((float)x[k] - m) * s;
        }
    }
    const float mean_g = warp_reduce_sum(sum_g) / C;
    const float mean_g_xhat = warp_reduce_sum(sum_g_xhat) / C;

    for (int c = lane * x128::size; c < C; c += WARP_SIZE * x128::size) {
        x128 dy = load128cs(dout + offset + c);
        x128 x = load128cs(inp + offset + c);
        x128 w = load128(weight + c);
        x128 d = load128(dinp + offset + c);
        for (int k = 0; k < x128::size; k++) {
            float g = (float)dy[k] * (float)w[k];
            float xhat = ((float)x[k] - m) * s;
            d[k] = (floatX)((float)d[k] + layernorm_dinp_math(g, xhat, s, mean_g, mean_g_xhat));
        }
        store128(dinp + offset + c, d);
    }
}

// backward kernel 2: partial column sums. grid (ceil(C/x128::size / blockDim.x), num_partials); the
// thread owning channels [c, c + x128::size) sums rows [slice * ROWS, (slice+1) * ROWS) in row order.
// scratch: dw_partial (num_partials, C) then db_partial (num_partials, C), fp32.
__global__ void layernorm_backward_partials_kernel(float* scratch, const floatX* dout, const floatX* inp,
                                                   const float* mean, const float* rstd, int N, int C,
                                                   int num_partials) {
    const int c = (blockIdx.x * blockDim.x + threadIdx.x) * x128::size;
    if (c >= C) return;
    const int slice = blockIdx.y;
    const int row_end = min(N, (slice + 1) * LN_BWD_ROWS_PER_PARTIAL);
    float dw[x128::size] = {};
    float db[x128::size] = {};
    for (int row = slice * LN_BWD_ROWS_PER_PARTIAL; row < row_end; row++) {
        const float m = mean[row];
        const float s = rstd[row];
        x128 dy = load128(dout + (size_t)row * C + c);
        x128 x = load128(inp + (size_t)row * C + c);
        for (int k = 0; k < x128::size; k++) {
            dw[k] += (float)dy[k] * ((float)x[k] - m) * s;
            db[k] += (float)dy[k];
        }
    }
    float* dw_partial = scratch + (size_t)slice * C + c;
    float* db_partial = scratch + ((size_t)num_partials + slice) * C + c;
    for (int k = 0; k < x128::size; k++) {
        dw_partial[k] = dw[k];
        db_partial[k] = db[k];
    }
}

// backward kernel 3: one thread per channel adds the partials in slice order into dweight/dbias
__global__ void layernorm_backward_reduce_kernel(floatX* dweight, floatX* dbias, const float* scratch, int C,
                                                 int num_partials) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= C) return;
    float dw = 0.0f, db = 0.0f;
    for (int p = 0; p < num_partials; p++) {
        dw += scratch[(size_t)p * C + c];
        db += scratch[((size_t)num_partials + p) * C + c];
    }
    dweight[c] = (floatX)((float)dweight[c] + dw);
    dbias[c] = (floatX)((float)dbias[c] + db);
}

// ----------------------------------------------------------------------------------------------------
// launchers

inline void layernorm_check_shapes(int C, const char* who) {
    if (C % x128::size != 0) fail("%s: C = %d must be a multiple of %d", who, C, x128::size);
}

// inp (N,C), weight (C), bias (C) -> out (N,C), mean (N), rstd (N)
inline void layernorm_forward(floatX* out, float* mean, float* rstd, const floatX* inp, const floatX* weight,
                              const floatX* bias, int N, int C, cudaStream_t stream) {
    layernorm_check_shapes(C, "layernorm_forward");
    const int block_size = 256;
    const int rows_per_block = block_size / WARP_SIZE;
    const int grid = (N + rows_per_block - 1) / rows_per_block;
    CUDA_LAUNCH(layernorm_forward_kernel<false>, grid, block_size, 0, stream)
    (nullptr, out, mean, rstd, inp, nullptr, weight, bias, N, C);
    cudaCheck(cudaGetLastError());
}

// inp1, inp2 (N,C) -> residual_out = inp1 + inp2 (N,C), ln_out = LayerNorm(residual_out) (N,C),
// mean, rstd (N)
inline void fused_residual_layernorm_forward(floatX* residual_out, floatX* ln_out, float* mean, float* rstd,
                                             const floatX* inp1, const floatX* inp2, const floatX* weight,
                                             const floatX* bias, int N, int C, cudaStream_t stream) {
    layernorm_check_shapes(C, "fused_residual_layernorm_forward");
    const int block_size = 256;
    const int rows_per_block = block_size / WARP_SIZE;
    const int grid = (N + rows_per_block - 1) / rows_per_block;
    CUDA_LAUNCH(layernorm_forward_kernel<true>, grid, block_size, 0, stream)
    (residual_out, ln_out, mean, rstd, inp1, inp2, weight, bias, N, C);
    cudaCheck(cudaGetLastError());
}

// The residual add alone, rounded as the fused kernel rounds it: out = inp1 + inp2 (n values, a multiple
// of x128::size). For the last layer of a pipeline stage before the last, whose output goes to the next
// stage (the next LayerNorm runs there).
__global__ void residual_forward_kernel(floatX* out, const floatX* inp1, const floatX* inp2, size_t n) {
    const size_t i = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * x128::size;
    if (i >= n) return;
    const x128 a = load128cs(inp1 + i), b = load128cs(inp2 + i);
    x128 v;
    for (int k = 0; k < x128::size; k++) v[k] = (floatX)((float)a[k] + (float)b[k]);
    store128(out + i, v);
}
inline void residual_forward(floatX* out, const floatX* inp1, const floatX* inp2, size_t n,
                             cudaStream_t stream) {
    if (n % x128::size != 0) fail("residual_forward: n = %zu must be a multiple of %d", n, x128::size);
    const int block_size = 256;
    const size_t grid = (n / x128::size + block_size - 1) / block_size;
    CUDA_LAUNCH(residual_forward_kernel, (unsigned)grid, block_size, 0, stream)(out, inp1, inp2, n);
    cudaCheck(cudaGetLastError());
}

inline int layernorm_backward_num_partials(int N) {
    return (N + LN_BWD_ROWS_PER_PARTIAL - 1) / LN_BWD_ROWS_PER_PARTIAL;
}

// fp32 scratch the backward needs for the deterministic dweight/dbias reduction
inline size_t layernorm_backward_scratch_bytes(int B, int T, int C) {
    return 2 * (size_t)layernorm_backward_num_partials(B * T) * C * sizeof(float);
}

// dout, inp (B,T,C), weight (C), mean, rstd (B,T) -> dinp (B,T,C) +=, dweight (C) +=, dbias (C) +=
inline void layernorm_backward(floatX* dinp, floatX* dweight, floatX* dbias, float* scratch,
                               const floatX* dout, const floatX* inp, const floatX* weight, const float* mean,
                               const float* rstd, int B, int T, int C, cudaStream_t stream) {
    layernorm_check_shapes(C, "layernorm_backward");
    const int N = B * T;
    const int block_size = 256;
    const int rows_per_block = block_size / WARP_SIZE;
    CUDA_LAUNCH(layernorm_backward_dinp_kernel, (N + rows_per_block - 1) / rows_per_block, block_size, 0,
                stream)
    (dinp, dout, inp, weight, mean, rstd, N, C);
    cudaCheck(cudaGetLastError());
    if (dweight == nullptr) return; // a frozen LayerNorm (LoRA): no weight and bias gradients

    const int num_partials = layernorm_backward_num_partials(N);
    const int chunks = C / x128::size;
    const int partial_block = 128;
    dim3 grid((chunks + partial_block - 1) / partial_block, num_partials);
    CUDA_LAUNCH(layernorm_backward_partials_kernel, grid, partial_block, 0, stream)
    (scratch, dout, inp, mean, rstd, N, C, num_partials);
    cudaCheck(cudaGetLastError());

    CUDA_LAUNCH(layernorm_backward_reduce_kernel, (C + block_size - 1) / block_size, block_size, 0, stream)
    (dweight, dbias, scratch, C, num_partials);
    cudaCheck(cudaGetLastError());
}
