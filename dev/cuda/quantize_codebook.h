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
    auto write_codes = [&](size_t start, size_t count, float a, bool finite) {
        for (size_t i = start; i < start + count; i++) {
            codes[i] =
                (uint8_t)(finite ? codebook_quantize_value(cb.midpoints, cb.size, cb.zero_code, x[i], a)
                                 : cb.zero_code);
        }
    };
    return quant_for_each_block(x, n, block_size, absmax, write_codes);
}

inline void dequantize_codebook(const uint8_t* codes, const float* absmax, size_t n, size_t block_size,
                                const Codebook& cb, float* out) {
    quant_check_block_size(block_size, "dequantize_codebook");
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        out[i] = codebook_dequantize_value(cb.levels, codes[i], absmax[i / block_size]);
}
