// The CUDA toolkit's own host conversions between fp32 and bf16 (its cuda_bf16.h, compiled by the host
// compiler), the reference tests/emu/test_emu_bf16.cpp checks the emulator's __nv_bfloat16 against. Kept in a
// file of its own: the toolkit's header and the emulator's define the same names.
#include <cuda_bf16.h>

extern "C" unsigned short nvidia_float_to_bf16_bits(float f) {
    return __nv_bfloat16_raw(__float2bfloat16(f)).x;
}
extern "C" float nvidia_bf16_bits_to_float(unsigned short bits) {
    __nv_bfloat16_raw raw;
    raw.x = bits;
    return __bfloat162float(__nv_bfloat16(raw));
}
