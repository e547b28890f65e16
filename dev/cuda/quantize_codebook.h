// quantize_codebook.h: blockwise quantization of a whole array with a one-byte codebook (the dynamic maps
// of llmc/quantize.h), CPU reference. No trainer runs it: 8-bit AdamW (llmc/adamw8bit.h) quantizes its
// moments element by element inside its update with the same per-element functions. This is the array
// form the lecture notes' blockwise 8-bit quantization describes, kept for tests/unit/test_quantize.cpp
// (error bounds) and dev/cuda/quantize_check.cu (the CUDA kernel bit-identical to it).
#pragma once

#include <cmath>
#include <cstdint>

#include "llmc/quantize.h"

inline int64_t quantize_codebook(const float* x, size_t n, size_t block_size, const Codebook& cb,
                                 uint8_t* codes, float* absmax) {
    quant_check_block_size(block_size, "quantize_codebook");
    const size_t num_blocks = quant_num_blocks(n, block_size);
    int64_t bad = INT64_MAX;
#pragma omp parallel for schedule(static) reduction(min : bad)
    for (size_t b = 0; b < num_blocks; b++) {
        const size_t start = b * block_size;
        const size_t count = (start + block_size <= n) ? block_size : n - start;
        float a;
        if (quant_block_absmax(x + start, count, &a)) {
            absmax[b] = a;
            for (size_t i = 0; i < count; i++) {
                codes[start + i] =
                    (uint8_t)codebook_quantize_value(cb.midpoints, cb.size, cb.zero_code, x[start + i], a);
            }
        } else {
            absmax[b] = NAN;
            for (size_t i = 0; i < count; i++) codes[start + i] = (uint8_t)cb.zero_code;
            if ((int64_t)b < bad) bad = (int64_t)b;
        }
    }
    return bad == INT64_MAX ? -1 : bad;
}

inline void dequantize_codebook(const uint8_t* codes, const float* absmax, size_t n, size_t block_size,
                                const Codebook& cb, float* out) {
    quant_check_block_size(block_size, "dequantize_codebook");
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        out[i] = codebook_dequantize_value(cb.levels, codes[i], absmax[i / block_size]);
}
