// test_emu_bf16: the emulator's bf16 conversions (dev/cuda/emu/include/cuda_bf16.h) give the bits of the
// CUDA toolkit's own (tests/emu/emu_bf16_nvidia.cpp), which round as the GPU does (round to nearest, ties to
// even; NaN to the canonical 0x7fff): fp32 -> bf16 for every 61st of the 2^32 fp32 bit patterns plus every
// pattern whose low 16 bits are a tie or next to one (0x7fff, 0x8000, 0x8001) -- the cases a wrong rounding
// gets wrong -- and bf16 -> fp32 for all 65536 patterns. Exact: any difference fails.
#include <cstdio>
#include <cstring>
#include <initializer_list>

#include <cuda_bf16.h>

#include "tests/common/test_common.h"

extern "C" unsigned short nvidia_float_to_bf16_bits(float f);
extern "C" float nvidia_bf16_bits_to_float(unsigned short bits);

static float from_bits(unsigned u) {
    float f;
    memcpy(&f, &u, sizeof(f));
    return f;
}

int main() {
    test_list_checks();
    long checked = 0, wrong = 0;
    auto check = [&](unsigned u) {
        const float f = from_bits(u);
        const unsigned short ours = __nv_bfloat16(f).__x, theirs = nvidia_float_to_bf16_bits(f);
        checked++;
        if (ours != theirs && wrong++ < 5)
            printf("fp32 0x%08x -> bf16 0x%04x, CUDA's 0x%04x\n", u, ours, theirs);
    };
    for (unsigned long u = 0; u < (1ul << 32); u += 61) check((unsigned)u);
    for (unsigned long high = 0; high < (1ul << 16); high++) {
        for (unsigned low : {0x7fffu, 0x8000u, 0x8001u}) check((unsigned)(high << 16 | low));
    }
    CHECK(wrong == 0, "fp32 -> bf16: %ld patterns, %ld differ from CUDA's conversion", checked, wrong);
    long wrong_back = 0;
    for (unsigned b = 0; b < 65536; b++) {
        __nv_bfloat16_raw raw{(unsigned short)b};
        const float ours = (float)__nv_bfloat16(raw), theirs = nvidia_bf16_bits_to_float((unsigned short)b);
        if (memcmp(&ours, &theirs, sizeof(float)) != 0) wrong_back++;
    }
    CHECK(wrong_back == 0, "bf16 -> fp32: 65536 patterns, %ld differ", wrong_back);
    return test_summary("test_emu_bf16");
}
