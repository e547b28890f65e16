// sampler.h: draw a token from the logits of the last position.
//
// With temperature tau > 0 the distribution is softmax(logits / tau):
//   p_i = exp((l_i - m) / tau) / sum_j exp((l_j - m) / tau),   m = max_j l_j
// Subtracting the max changes nothing mathematically (it cancels in the ratio) but keeps every
// exponent <= 0, so nothing overflows; the exponentials and their sum are computed in double.
// Sampling is by inverse CDF: given a uniform coin c in [0,1), return the first i with
// p_0 + ... + p_i > c, i.e. the first i whose unnormalized prefix sum exceeds c * sum.
// tau <= 0 means greedy decoding: argmax (the first index of the largest logit).
#pragma once

#include <algorithm>
#include <cmath>

inline int sample_argmax(const float* logits, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) {
        if (logits[i] > logits[best]) best = i;
    }
    return best;
}

// logits (n) -> token index in [0, n); coin uniform in [0, 1), e.g. rng_uniform().
inline int sample_softmax(const float* logits, int n, float temperature, float coin) {
    if (temperature <= 0.0f) return sample_argmax(logits, n);
    double inv_tau = 1.0 / (double)temperature;
    double m = logits[0];
    for (int i = 1; i < n; i++) m = std::max(m, (double)logits[i]);
    double sum = 0.0;
    for (int i = 0; i < n; i++) sum += std::exp(((double)logits[i] - m) * inv_tau);
    double threshold = (double)coin * sum;
    double cdf = 0.0;
    int last_positive = 0;
    for (int i = 0; i < n; i++) {
        double e = std::exp(((double)logits[i] - m) * inv_tau);
        if (e > 0.0) last_positive = i;
        cdf += e;
        if (cdf > threshold) return i;
    }
    // Only reached if rounding left the final prefix sum <= coin*sum (coin just below 1): return the
    // last token that has non-zero probability, never one with probability 0.
    return last_positive;
}
