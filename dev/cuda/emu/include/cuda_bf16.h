// cuda_bf16.h for the CPU emulator (dev/cuda/emu): __nv_bfloat16 with the GPU's rounding.
//
// bf16 is the top 16 bits of an fp32. Conversion from fp32 rounds to nearest, ties to even, as
// cvt.rn.bf16.f32 does on sm_80+; any NaN becomes the canonical NaN 0x7fff (what CUDA's own host
// conversion returns). Conversion to fp32 is exact. Arithmetic (+ - * /) computes in fp32 and rounds
// the result once, as CUDA's host operators do.
#pragma once

#include <cstdint>
#include <cstring>

struct __nv_bfloat16_raw {
    unsigned short x;
};

inline unsigned short emu_float_to_bf16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof(u));
    if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
    // round to nearest even: add half an ulp less one, plus one if the kept lsb is odd
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

inline float emu_bf16_bits_to_float(unsigned short bits) {
    const uint32_t u = (uint32_t)bits << 16;
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

struct __nv_bfloat16 {
    unsigned short __x;

    __nv_bfloat16() = default;
    __nv_bfloat16(float f) : __x(emu_float_to_bf16_bits(f)) {}
    __nv_bfloat16(double d) : __x(emu_float_to_bf16_bits((float)d)) {}
    __nv_bfloat16(int i) : __x(emu_float_to_bf16_bits((float)i)) {}
    __nv_bfloat16(const __nv_bfloat16_raw& raw) : __x(raw.x) {}
    __nv_bfloat16& operator=(const __nv_bfloat16_raw& raw) {
        __x = raw.x;
        return *this;
    }
    operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }
    operator float() const { return emu_bf16_bits_to_float(__x); }
};
typedef __nv_bfloat16 nv_bfloat16;

inline __nv_bfloat16 __float2bfloat16(float f) {
    return __nv_bfloat16(f);
}
inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    return __nv_bfloat16(f);
}
inline float __bfloat162float(__nv_bfloat16 h) {
    return (float)h;
}

inline __nv_bfloat16 operator+(__nv_bfloat16 a, __nv_bfloat16 b) {
    return __nv_bfloat16((float)a + (float)b);
}
inline __nv_bfloat16 operator-(__nv_bfloat16 a, __nv_bfloat16 b) {
    return __nv_bfloat16((float)a - (float)b);
}
inline __nv_bfloat16 operator*(__nv_bfloat16 a, __nv_bfloat16 b) {
    return __nv_bfloat16((float)a * (float)b);
}
inline __nv_bfloat16 operator/(__nv_bfloat16 a, __nv_bfloat16 b) {
    return __nv_bfloat16((float)a / (float)b);
}
