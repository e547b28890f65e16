// kernel_math.h: the scalar math of the GPU layer kernels, written once as plain inline functions that
// compile both for the device (nvcc marks them __host__ __device__) and for a plain g++ build, so that
// tests/unit/test_kernel_math.cpp can check the very same code on a CPU-only machine:
//   - bf16 rounding: round-to-nearest-even and stochastic rounding, on raw bit patterns
//   - a counter-based hash (random bits from (seed, index), no state)
//   - tanh GELU and its derivative
//   - the online softmax state used by the fused classifier
//   - the LayerNorm input gradient of one element
//   - one AdamW step of one parameter
// No CUDA types appear here; the .cuh headers wrap these for floatX.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define KM_HD __host__ __device__
#else
#define KM_HD
#endif

// ----------------------------------------------------------------------------------------------------
// bf16 as bits. bf16 is the top 16 bits of an IEEE fp32: sign, 8 exponent bits, 7 mantissa bits
// (8 significant bits with the implicit one, so the unit roundoff is 2^-8 under round-to-nearest).

KM_HD inline uint32_t float_to_bits(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof(bits));
    return bits;
}
KM_HD inline float bits_to_float(uint32_t bits) {
    float x;
    memcpy(&x, &bits, sizeof(x));
    return x;
}
KM_HD inline float bf16_bits_to_float(uint16_t bits) {
    return bits_to_float((uint32_t)bits << 16);
}

// Round to nearest, ties to even: add 0x7FFF plus the lowest kept bit, then truncate. NaN stays NaN
// (quiet, sign kept); values past the largest bf16 round to infinity as IEEE rounding does.
KM_HD inline uint16_t float_to_bf16_bits_rne(float x) {
    uint32_t bits = float_to_bits(x);
    if ((bits & 0x7F800000u) == 0x7F800000u && (bits & 0x007FFFFFu) != 0) {
        return (uint16_t)((bits >> 16) | 0x0040u); // NaN
    }
    uint32_t lsb = (bits >> 16) & 1u;
    return (uint16_t)((bits + 0x7FFFu + lsb) >> 16);
}

// Stochastic rounding: add 16 uniformly random bits to the 16 bits that bf16 drops, then truncate.
// Write |x| = hi + f * ulp with hi the bf16 value just below |x| in magnitude and f = low16 / 2^16 in
// [0,1). The carry out of the low 16 bits happens for exactly low16 of the 2^16 random values, so
// |x| rounds to hi + ulp with probability f and to hi with probability 1 - f:
//     E[round(x)] = hi + f * ulp = x           (unbiased; also across a binade boundary, where the
//                                               carry turns mantissa 0x7F into the next exponent)
// and the result is always one of the two bf16 neighbours of x (x itself when x is a bf16 value).
// Sign-magnitude format, so negative values work the same way. Inf and NaN are passed through.
KM_HD inline uint16_t float_to_bf16_bits_stochastic(float x, uint32_t random) {
    uint32_t bits = float_to_bits(x);
    if ((bits & 0x7F800000u) == 0x7F800000u) return float_to_bf16_bits_rne(x); // inf, NaN
    return (uint16_t)((bits + (random & 0xFFFFu)) >> 16);
}

// ----------------------------------------------------------------------------------------------------
// counter-based hash: random bits as a pure function of (seed, index), so stochastic rounding is
// deterministic for a given seed regardless of the launch configuration. The mixer is the "lowbias32"
// integer finalizer (xorshift-multiply rounds, constants found by Chris Wellons' hash-prospector);
// chaining it over the words of (seed, index) gives independent-looking streams per seed.

KM_HD inline uint32_t hash_mix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7FEB352Du;
    x ^= x >> 15;
    x *= 0x846CA68Bu;
    x ^= x >> 16;
    return x;
}
KM_HD inline uint32_t random_u32(uint32_t seed, uint64_t index) {
    uint32_t h = hash_mix32(seed ^ 0x9E3779B9u);
    h = hash_mix32(h ^ (uint32_t)index);
    h = hash_mix32(h ^ (uint32_t)(index >> 32));
    return h;
}

// ----------------------------------------------------------------------------------------------------
// GELU, tanh approximation (the one GPT-2 was trained with):
//     gelu(x)  = 0.5 x (1 + tanh(u)),   u = s (x + a x^3),   s = sqrt(2/pi), a = 0.044715
//     gelu'(x) = 0.5 (1 + tanh(u)) + 0.5 x (1 - tanh(u)^2) s (1 + 3 a x^2)

constexpr float GELU_SQRT_2_OVER_PI = 0.7978845608028654f; // sqrt(2/pi)
constexpr float GELU_CUBIC_COEFF = 0.044715f;

KM_HD inline float gelu_forward_math(float x) {
    float u = GELU_SQRT_2_OVER_PI * (x + GELU_CUBIC_COEFF * x * x * x);
    return 0.5f * x * (1.0f + tanhf(u));
}
KM_HD inline float gelu_backward_math(float x) {
    float u = GELU_SQRT_2_OVER_PI * (x + GELU_CUBIC_COEFF * x * x * x);
    float th = tanhf(u);
    float du_dx = GELU_SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_CUBIC_COEFF * x * x);
    return 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du_dx;
}

// ----------------------------------------------------------------------------------------------------
// online softmax: a running (max, sum of exp(x - max)) over a stream of logits, in one pass. Two
// partial states combine exactly like two halves of the stream, so every thread can own a strided
// part of a row and the block combines the states in a fixed tree. The start state uses -FLT_MAX (not
// -inf) so that combining two empty states gives exp(0) * 0 = 0 instead of NaN.
//     update(x):     m' = max(m, x),  s' = s exp(m - m') + exp(x - m')
//     combine(a, b): m  = max(ma, mb), s = sa exp(ma - m) + sb exp(mb - m)
// Then logsumexp = m + log(s), softmax_i = exp(x_i - m) / s, loss = logsumexp - x_target.

struct SoftmaxState {
    float max;
    float sum;
};
KM_HD inline SoftmaxState softmax_state_init() {
    return SoftmaxState{-FLT_MAX, 0.0f};
}
KM_HD inline SoftmaxState softmax_state_update(SoftmaxState s, float x) {
    if (x > s.max) {
        s.sum = s.sum * expf(s.max - x) + 1.0f;
        s.max = x;
    } else {
        s.sum += expf(x - s.max);
    }
    return s;
}
KM_HD inline SoftmaxState softmax_state_combine(SoftmaxState a, SoftmaxState b) {
    float m = fmaxf(a.max, b.max);
    return SoftmaxState{m, a.sum * expf(a.max - m) + b.sum * expf(b.max - m)};
}
// dloss/dlogit for column i of a row with the final state s: (softmax_i - [i == target]) * scale,
// and exactly 0 for the padded columns i >= V.
KM_HD inline float classifier_dlogit(float x, int i, int target, int V, SoftmaxState s, float scale) {
    if (i >= V) return 0.0f;
    float p = expf(x - s.max) / s.sum;
    return (p - (i == target ? 1.0f : 0.0f)) * scale;
}

// ----------------------------------------------------------------------------------------------------
// LayerNorm backward, one element of one row. With xhat = (x - mean) rstd, y = w xhat + b and the
// upstream gradient dy, write g = dy w. Then (derivation: d xhat_j / d x_i = rstd (delta_ij - 1/C -
// xhat_i xhat_j / C)):
//     dx_i = rstd (g_i - mean_j(g_j) - xhat_i mean_j(g_j xhat_j))
//     dw_i = sum over rows of dy_i xhat_i,      db_i = sum over rows of dy_i

KM_HD inline float layernorm_dinp_math(float g, float xhat, float rstd, float mean_g, float mean_g_xhat) {
    return rstd * (g - mean_g - xhat * mean_g_xhat);
}

// ----------------------------------------------------------------------------------------------------
// AdamW (decoupled weight decay, Loshchilov & Hutter), one parameter. grad is already multiplied by
// the clipping factor. bias_correction1 = 1 - beta1^t, bias_correction2 = 1 - beta2^t (t from 1).
//     m = beta1 m + (1 - beta1) g
//     v = beta2 v + (1 - beta2) g^2
//     p = p - lr ( (m / bc1) / (sqrt(v / bc2) + eps) + weight_decay p )
// Returns the new parameter; m and v are updated in place.

KM_HD inline float adamw_step_math(float param, float grad, float* m, float* v, float lr, float beta1,
                                   float beta2, float bias_correction1, float bias_correction2, float eps,
                                   float weight_decay) {
    float m_new = beta1 * *m + (1.0f - beta1) * grad;
    float v_new = beta2 * *v + (1.0f - beta2) * grad * grad;
    *m = m_new;
    *v = v_new;
    float m_hat = m_new / bias_correction1;
    float v_hat = v_new / bias_correction2;
    return param - lr * (m_hat / (sqrtf(v_hat) + eps) + weight_decay * param);
}
