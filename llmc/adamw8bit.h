// adamw8bit.h: AdamW with 8-bit blockwise-quantized moments (Dettmers et al. 2021), CPU reference.
// llmc/adamw8bit.cuh is the fused CUDA kernel doing the same; both call the per-element functions below.
//
// The update, for one contiguous range of n parameters split into ceil(n / block_size) blocks (the last
// block may be partial; the caller gives every tensor / shard its own range, so blocks never straddle
// tensors), per block:
//   m_old = level_s[m_code] * m_absmax          (signed dynamic map, llmc/quantize.h)
//   v_old = level_u[v_code] * v_absmax          (unsigned dynamic map)
//   m = b1 * m_old + (1 - b1) * g,  v = b2 * v_old + (1 - b2) * g^2          (fp32, from the fp32 grad)
//   p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps) + lr * wd * p    (decoupled weight decay)
//   m_absmax = max |m| over the block, v_absmax = max v; m, v re-quantized to the nearest levels.
// The parameter update uses the fp32 m and v of this step, before re-quantization; only the state
// carried to the next step is quantized. A block whose new m or v holds a NaN or Inf stores absmax NaN
// and zero codes (the quantize.h convention), so its state stays NaN from then on, as a NaN gradient
// leaves fp32 AdamW's m and v NaN. The trainers never get there from a NaN gradient: a step whose global
// gradient norm is not finite is skipped before any optimizer runs (llmc/run_plan.h).
//
// One deliberate departure from plain nearest rounding: a v > 0 that would round to the level 0 (v below
// 5e-8 of the block's largest v) is stored as the smallest non-zero level, 1e-7 * v_absmax. A v stored as
// 0 next to a non-zero m would make the next step divide m by sqrt((1 - b2) g^2) alone: an update ~30x
// too large, which on a test problem with gradients spread over 3 decades per block diverged. Over-
// estimating a tiny v only shrinks that parameter's step. Known limitation (inherent to 8-bit state with
// round-to-nearest): when v decays by less than half a level gap per step (b2 = 0.999: 0.1% per step)
// its code does not move unless the block absmax moves, so v lags on the high side and steps are a
// little small; tests/unit/test_adamw8bit.cpp measures the effect (on its test problem the loss stays within
// 6.5% of float64 AdamW's at block 2048). Stochastic rounding of the codes would remove the bias; it is
// not done here.
//
// State layout, per range of n parameters with nb = ceil(n / block_size) blocks (no struct, four arrays):
//   uint8_t m_codes[n], uint8_t v_codes[n]   1 byte per parameter each (2 bytes/param)
//   float m_absmax[nb], float v_absmax[nb]   8 bytes per block
// against 8 bytes/param for fp32 m and v. Initial state: all bytes zero. With absmax 0 every code
// dequantizes to 0, so zeroed memory (calloc / cudaMemset 0) is the "m = v = 0" state.
//
// Default block size 2048, as in the 8-bit optimizer paper: the absmax costs 8 / 2048 bytes per
// parameter, 0.2% of the 2 bytes of codes (< 0.5%), while a block is still small enough that one large
// value only coarsens the resolution of its 2047 neighbours, not of the whole tensor.
//
// Bit-identical CPU and GPU: every fp32 operation below is an IEEE op in a fixed order, products that feed
// an addition are explicit fmaf (so no compiler contracts them differently), sqrtf and division are
// correctly rounded as long as nothing is built with -ffast-math / --use_fast_math, and the bias
// corrections are computed once on the host (adamw8bit_hyperparams) and passed to both.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>

#include "llmc/quantize.h"
#include "llmc/utils.h"

constexpr int ADAMW8BIT_DEFAULT_BLOCK = 2048;

// the scalars of one step, computed once on the host in fp32
struct AdamW8bitHyperparams {
    float lr, beta1, beta2, one_minus_beta1, one_minus_beta2;
    float bias_correction1, bias_correction2; // 1 - beta^t
    float eps, weight_decay;
    float grad_scale; // the gradient is grad_scale * g (the clipping scale, applied as g is read)
};

inline AdamW8bitHyperparams adamw8bit_hyperparams(float lr, float beta1, float beta2, float eps,
                                                  float weight_decay, int t, float grad_scale = 1.0f) {
    if (t < 1) fail("adamw8bit: step t must be >= 1 (1-based), got %d", t);
    AdamW8bitHyperparams h;
    h.lr = lr, h.beta1 = beta1, h.beta2 = beta2, h.eps = eps, h.weight_decay = weight_decay;
    h.grad_scale = grad_scale;
    h.one_minus_beta1 = 1.0f - beta1;
    h.one_minus_beta2 = 1.0f - beta2;
    h.bias_correction1 = 1.0f - powf(beta1, (float)t);
    h.bias_correction2 = 1.0f - powf(beta2, (float)t);
    return h;
}

// new first and second moments from the dequantized old ones and the gradient grad_scale * g (the same
// fp32 product as scaling the gradient buffer first; with grad_scale 1, g itself)
QUANT_HD inline void adamw8bit_moments(float g_unscaled, float m_old, float v_old,
                                       const AdamW8bitHyperparams& h, float* m, float* v) {
    const float g = g_unscaled * h.grad_scale;
    *m = fmaf(h.beta1, m_old, h.one_minus_beta1 * g);
    *v = fmaf(h.beta2, v_old, (h.one_minus_beta2 * g) * g);
}

// the new parameter: p - lr * (mhat / (sqrt(vhat) + eps) + wd * p)
QUANT_HD inline float adamw8bit_param(float p, float m, float v, const AdamW8bitHyperparams& h) {
    float mhat = m / h.bias_correction1;
    float vhat = v / h.bias_correction2;
    float update = fmaf(h.weight_decay, p, mhat / (sqrtf(vhat) + h.eps));
    return fmaf(-h.lr, update, p);
}

// v to its unsigned-map code: the nearest level, except that a v > 0 is never stored as 0 (see top)
QUANT_HD inline int adamw8bit_quantize_v(const float* midpoints, float v, float v_absmax) {
    int code = codebook_quantize_value(midpoints, CODEBOOK_MAX, 0, v, v_absmax);
    return (code == 0 && v > 0.0f) ? 1 : code;
}

inline size_t adamw8bit_num_blocks(size_t n, int block_size) {
    return quant_num_blocks(n, (size_t)block_size);
}

// One AdamW step on param (n), the fp32 gradient grad_scale * grad (n) and the 8-bit state of this range
// (layout above). t is the 1-based step. Blocks are independent: OpenMP runs them in parallel, results do not
// depend on the number of threads.
inline void adamw8bit_update(float* param, const float* grad, uint8_t* m_codes, float* m_absmax,
                             uint8_t* v_codes, float* v_absmax, size_t n, int block_size, float lr,
                             float beta1, float beta2, float eps, float weight_decay, int t,
                             float grad_scale = 1.0f) {
    if (block_size < 1) fail("adamw8bit_update: block size must be >= 1, got %d", block_size);
    const AdamW8bitHyperparams h = adamw8bit_hyperparams(lr, beta1, beta2, eps, weight_decay, t, grad_scale);
    const Codebook& ms = dynamic_map_signed();
    const Codebook& vs = dynamic_map_unsigned();
    const size_t num_blocks = adamw8bit_num_blocks(n, block_size);
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < num_blocks; b++) {
        const size_t start = b * (size_t)block_size;
        const size_t end = (start + block_size <= n) ? start + block_size : n;
        const float m_absmax_old = m_absmax[b], v_absmax_old = v_absmax[b];
        // pass 1: new moments and parameters, block absmax of the new moments
        float m_max = 0.0f, v_max = 0.0f;
        bool finite = true;
        for (size_t i = start; i < end; i++) {
            float m, v;
            adamw8bit_moments(grad[i], codebook_dequantize_value(ms.levels, m_codes[i], m_absmax_old),
                              codebook_dequantize_value(vs.levels, v_codes[i], v_absmax_old), h, &m, &v);
            param[i] = adamw8bit_param(param[i], m, v, h);
            m_max = fmaxf(m_max, fabsf(m));
            v_max = fmaxf(v_max, fabsf(v));
            finite = finite && quant_is_finite(m) && quant_is_finite(v);
        }
        // pass 2: recompute the same moments from the old codes (not yet overwritten) and re-quantize;
        // cheaper in memory than keeping a block_size buffer per thread, and identical by construction
        for (size_t i = start; i < end; i++) {
            float m, v;
            adamw8bit_moments(grad[i], codebook_dequantize_value(ms.levels, m_codes[i], m_absmax_old),
                              codebook_dequantize_value(vs.levels, v_codes[i], v_absmax_old), h, &m, &v);
            m_codes[i] =
                (uint8_t)(finite ? codebook_quantize_value(ms.midpoints, ms.size, ms.zero_code, m, m_max)
                                 : ms.zero_code);
            v_codes[i] = (uint8_t)(finite ? adamw8bit_quantize_v(vs.midpoints, v, v_max) : vs.zero_code);
        }
        m_absmax[b] = finite ? m_max : NAN;
        v_absmax[b] = finite ? v_max : NAN;
    }
}
