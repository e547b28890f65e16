// adamw.cuh: the fused AdamW update and the fp32 gradient accumulation of the mixed-precision trainer.
//
// AdamW (see adamw_step_math in kernel_math.h), per parameter p with gradient g, t counting from 1:
//     g = grad_scale * g                                  (grad_scale: the gradient clipping factor)
//     m = beta1 m + (1 - beta1) g,   v = beta2 v + (1 - beta2) g^2
//     p = p - lr ( (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps) + weight_decay p )
// Weight decay is decoupled (applied to p directly, not through the gradient) and applies to every
// parameter of the range: the caller passes weight_decay = 0 for ranges that should not decay.
//
// Mixed precision: the fp32 master copy is read and updated; the bf16 parameters the model computes
// with are written from it with STOCHASTIC ROUNDING (float_to_bf16_bits_stochastic): E[bf16(p)] = p,
// so updates smaller than half a bf16 ulp are not systematically lost, as they would be with
// round-to-nearest when there is no master copy to keep them. The random bits are a hash of
// (seed, t, index): deterministic for a given seed and step, independent of the launch shape.
// In the FP32 build params are fp32 and written exactly; master_fp32 may then be null (params are the
// master copy).
//
// Gradient accumulation: each micro-step's floatX gradient is added into an fp32 buffer
// (accumulate_grads_fp32, 4 bytes per parameter), so summing many micro-steps does not round at bf16
// precision every time; AdamW and the global norm read the fp32 buffer. Zero it with cudaMemsetAsync.
#pragma once

#include <cmath>

#include "llmc/cuda_common.h"
#include "llmc/kernel_math.h"

__device__ inline floatX floatX_from_float_stochastic(float x, uint32_t random) {
#if defined(ENABLE_FP32)
    (void)random;
    return x;
#else
    __nv_bfloat16_raw raw;
    raw.x = float_to_bf16_bits_stochastic(x, random);
    return __nv_bfloat16(raw);
#endif
}

// the per-step seed: mixes the step into the caller's seed so one seed gives fresh bits every step
KM_HD inline uint32_t adamw_step_seed(uint32_t seed, int t) {
    return hash_mix32(seed ^ hash_mix32((uint32_t)t));
}

template <class GradT>
__global__ void adamw_kernel(floatX* params, float* master, const GradT* grads, float* m, float* v, size_t n,
                             float lr, float beta1, float beta2, float bias_correction1,
                             float bias_correction2, float eps, float weight_decay, float grad_scale,
                             uint32_t step_seed) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        float grad = grad_scale * (float)grads[i];
        float mi = m[i];
        float vi = v[i];
        float p = master != nullptr ? master[i] : (float)params[i];
        p = adamw_step_math(p, grad, &mi, &vi, lr, beta1, beta2, bias_correction1, bias_correction2, eps,
                            weight_decay);
        m[i] = mi;
        v[i] = vi;
        if (master != nullptr) master[i] = p;
        params[i] = floatX_from_float_stochastic(p, random_u32(step_seed, i));
    }
}

// Updates n parameters: params (floatX, written), master_fp32 (read + written, or null in the FP32
// build), grads (fp32 accumulation buffer, or floatX), m, v (fp32 optimizer state). t >= 1.
template <class GradT>
void adamw_update(floatX* params, float* master_fp32, const GradT* grads, float* m, float* v, size_t n,
                  float lr, float beta1, float beta2, float eps, float weight_decay, float grad_scale, int t,
                  unsigned int seed, cudaStream_t stream) {
    if (t < 1) fail("adamw_update: step t = %d must start at 1", t);
#if !defined(ENABLE_FP32)
    if (master_fp32 == nullptr) fail("adamw_update: the bf16 build needs the fp32 master weights");
#endif
    if (n == 0) return;
    // bias corrections in double on the host: beta2^t for t ~ 1e5 underflows gracefully either way
    const float bias_correction1 = (float)(1.0 - pow((double)beta1, (double)t));
    const float bias_correction2 = (float)(1.0 - pow((double)beta2, (double)t));
    const int block_size = 512;
    size_t blocks = (n + block_size - 1) / block_size;
    const unsigned int grid = (unsigned int)(blocks < 65536 * 8 ? blocks : 65536 * 8); // grid-stride beyond
    CUDA_LAUNCH(adamw_kernel<GradT>, grid, block_size, 0, stream)
    (params, master_fp32, grads, m, v, n, lr, beta1, beta2, bias_correction1, bias_correction2, eps,
     weight_decay, grad_scale, adamw_step_seed(seed, t));
    cudaCheck(cudaGetLastError());
}

template <class T> __global__ void accumulate_grads_fp32_kernel(float* acc, const T* g, size_t n) {
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) acc[i] += (float)g[i];
}

// acc (n, fp32) += g (n, floatX, or fp32: ZeRO-2/3 add a reduce-scattered slice into the step's shard)
template <class T> inline void accumulate_grads_fp32(float* acc, const T* g, size_t n, cudaStream_t stream) {
    if (n == 0) return;
    const int block_size = 512;
    size_t blocks = (n + block_size - 1) / block_size;
    const unsigned int grid = (unsigned int)(blocks < 65536 * 8 ? blocks : 65536 * 8);
    CUDA_LAUNCH(accumulate_grads_fp32_kernel<T>, grid, block_size, 0, stream)(acc, g, n);
    cudaCheck(cudaGetLastError());
}
