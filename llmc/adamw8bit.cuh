// adamw8bit.cuh: the fused CUDA 8-bit AdamW step (the math, state layout and conventions are in
// llmc/adamw8bit.h, whose CPU adamw8bit_update is the reference this kernel is tested against).
//
// One thread block per quantization block (block_size <= 4096: 256 threads x up to 16 values each, kept
// in registers). Each thread: dequantize its m and v codes with the block's old absmax, new fp32 moments
// from the gradient (fp32 or floatX, template), update the fp32 master parameter and write it back
// together with a floatX copy (bf16 for mixed-precision training: plain round-to-nearest; stochastic
// rounding is out of scope here). Then a block-wide max gives the new absmax of m and v, and every
// thread re-quantizes its values to the nearest level of the signed / unsigned dynamic map.
//
// Bit-identical to the CPU given the same fp32 inputs: the per-element math is the same QUANT_HD
// functions (explicit fmaf, IEEE division and sqrtf; never build with --use_fast_math), the step's
// scalars (bias corrections) are computed on the host by adamw8bit_hyperparams, as on the CPU, and a max
// does not depend on the reduction order. With floatX gradients the CPU reference gets the same values
// converted to fp32.
//
// Bytes moved per parameter: read p (4), g (4 or 2), m and v codes (2); write p (4), p_x (2 with bf16),
// codes (2): 18 bytes with fp32 grads, 16 with bf16, against 30 / 28 for fp32 AdamW (m, v in fp32).
#pragma once

#include <cstdint>

#include "llmc/adamw8bit.h"
#include "llmc/cuda_common.h"
#include "llmc/quantize.cuh"

constexpr int ADAMW8BIT_THREADS = 256;
constexpr int ADAMW8BIT_MAX_PER_THREAD = 16;
constexpr int ADAMW8BIT_MAX_BLOCK = ADAMW8BIT_THREADS * ADAMW8BIT_MAX_PER_THREAD; // 4096

// the two dynamic maps, passed by value as one kernel parameter (~4 KB: CUDA >= 12.1 allows 32 KB)
struct AdamW8bitMaps {
    Codebook m_map; // signed
    Codebook v_map; // unsigned
};

// param (n) fp32 master, param_x (n) floatX copy (may be null), grad (n), 8-bit state as in adamw8bit.h
template <typename GradT>
__global__ void __launch_bounds__(ADAMW8BIT_THREADS)
    adamw8bit_kernel(float* param, floatX* param_x, const GradT* grad, uint8_t* m_codes, float* m_absmax,
                     uint8_t* v_codes, float* v_absmax, size_t n, int block_size,
                     const AdamW8bitHyperparams h, const __grid_constant__ AdamW8bitMaps maps) {
    __shared__ float s_m_levels[CODEBOOK_MAX], s_v_levels[CODEBOOK_MAX];
    __shared__ float s_m_mid[CODEBOOK_MAX - 1], s_v_mid[CODEBOOK_MAX - 1];
    __shared__ float s_red[WARP_SIZE];
    for (int i = threadIdx.x; i < CODEBOOK_MAX; i += blockDim.x) {
        s_m_levels[i] = maps.m_map.levels[i];
        s_v_levels[i] = maps.v_map.levels[i];
        if (i < CODEBOOK_MAX - 1) {
            s_m_mid[i] = maps.m_map.midpoints[i];
            s_v_mid[i] = maps.v_map.midpoints[i];
        }
    }
    __syncthreads();
    const size_t start = (size_t)blockIdx.x * block_size;
    const size_t end = (start + block_size < n) ? start + block_size : n;
    const float m_absmax_old = m_absmax[blockIdx.x], v_absmax_old = v_absmax[blockIdx.x];

    // pass 1: new moments (kept in registers) and parameters, running max of |m| and v
    float m_new[ADAMW8BIT_MAX_PER_THREAD], v_new[ADAMW8BIT_MAX_PER_THREAD];
    float m_max = 0.0f, v_max = 0.0f;
    bool finite = true;
#pragma unroll
    for (int k = 0; k < ADAMW8BIT_MAX_PER_THREAD; k++) {
        const size_t i = start + threadIdx.x + (size_t)k * blockDim.x;
        m_new[k] = 0.0f, v_new[k] = 0.0f;
        if (i < end) {
            float m, v;
            adamw8bit_moments((float)grad[i], codebook_dequantize_value(s_m_levels, m_codes[i], m_absmax_old),
                              codebook_dequantize_value(s_v_levels, v_codes[i], v_absmax_old), h, &m, &v);
            const float p = adamw8bit_param(param[i], m, v, h);
            param[i] = p;
            if (param_x != nullptr) param_x[i] = (floatX)p;
            m_new[k] = m, v_new[k] = v;
            m_max = fmaxf(m_max, fabsf(m));
            v_max = fmaxf(v_max, fabsf(v));
            finite = finite && quant_is_finite(m) && quant_is_finite(v);
        }
    }
    // every thread has read the old absmax before these reductions' barriers; thread 0 overwrites it below
    m_max = quant_block_reduce_max(m_max, s_red);
    v_max = quant_block_reduce_max(v_max, s_red);
    finite = __syncthreads_and(finite);

    // pass 2: re-quantize with the new absmax
#pragma unroll
    for (int k = 0; k < ADAMW8BIT_MAX_PER_THREAD; k++) {
        const size_t i = start + threadIdx.x + (size_t)k * blockDim.x;
        if (i < end) {
            m_codes[i] = (uint8_t)(finite ? codebook_quantize_value(s_m_mid, CODEBOOK_MAX,
                                                                    maps.m_map.zero_code, m_new[k], m_max)
                                          : maps.m_map.zero_code);
            v_codes[i] =
                (uint8_t)(finite ? adamw8bit_quantize_v(s_v_mid, v_new[k], v_max) : maps.v_map.zero_code);
        }
    }
    if (threadIdx.x == 0) {
        m_absmax[blockIdx.x] = finite ? m_max : NAN;
        v_absmax[blockIdx.x] = finite ? v_max : NAN;
    }
}

// The GPU version of adamw8bit_update (same arguments, grad_scale not optional, plus the floatX parameter
// copy, which may be null, and the stream). block_size in [1, 4096].
template <typename GradT>
void adamw8bit_update_cuda(float* param, floatX* param_x, const GradT* grad, uint8_t* m_codes,
                           float* m_absmax, uint8_t* v_codes, float* v_absmax, size_t n, int block_size,
                           float lr, float beta1, float beta2, float eps, float weight_decay, int t,
                           float grad_scale, cudaStream_t stream) {
    if (block_size < 1 || block_size > ADAMW8BIT_MAX_BLOCK) {
        fail("adamw8bit_update_cuda: block size must be in [1, %d], got %d", ADAMW8BIT_MAX_BLOCK, block_size);
    }
    if (n == 0) return;
    const AdamW8bitHyperparams h = adamw8bit_hyperparams(lr, beta1, beta2, eps, weight_decay, t, grad_scale);
    AdamW8bitMaps maps;
    maps.m_map = dynamic_map_signed();
    maps.v_map = dynamic_map_unsigned();
    const int grid = quant_grid_for(adamw8bit_num_blocks(n, block_size), "adamw8bit_update_cuda");
    const int threads = quant_threads_for((size_t)block_size); // <= 256, and threads * 16 >= block_size
    CUDA_LAUNCH(adamw8bit_kernel<GradT>, grid, threads, 0, stream)
    (param, param_x, grad, m_codes, m_absmax, v_codes, v_absmax, n, block_size, h, maps);
    cudaCheck(cudaGetLastError());
}
