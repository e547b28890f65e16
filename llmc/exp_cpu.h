// exp_cpu.h: e^x for the CPU trainer's GELU and softmax, written so that the loops calling it vectorize.
// It needs -fno-trapping-math (the Makefile's flags) for its clamp to become min/max instructions.
#pragma once

#include <cstdint>
#include <cstring>

// e^x in plain arithmetic, so that the loops calling it vectorize (glibc's expf is a call per element):
// e^x = 2^n e^r with n = round(x / ln 2) and r = x - n ln 2 in [-0.35, 0.35] (ln 2 in two parts, so r is
// exact), e^r by its Taylor polynomial to r^7 (truncation error 0.35^8/8! < 1e-8, relative), 2^n built in
// the exponent bits. x is clamped to [-87, 88], where 2^n stays a normal float: below, e^x is 1.6e-38 in
// place of a smaller number or 0 (no matter beside the 1 it is added to or the sum it is divided by).
// Relative error 7.8e-8 at most, under one ulp (tests/unit/test_exp_cpu.cpp measures it against exp in
// double).
inline float exp_poly(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x); // (ternaries: min and max instructions, no branch)
    const float shifter = 12582912.0f; // 1.5 * 2^23: adding and subtracting it rounds to an integer
    const float n = (x * 1.44269504f + shifter) - shifter;
    const float r = (x - n * 0.693145752f) - n * 1.42860677e-6f; // ln 2 = 0.693145752 + 1.42860677e-6
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23; // 2^n
    float two_n;
    memcpy(&two_n, &bits, sizeof(two_n));
    return p * two_n;
}
