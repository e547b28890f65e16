// quantize.h: blockwise quantization schemes, CPU reference (header-only). llmc/quantize.cuh has the
// CUDA kernels for the same schemes; both call the per-element functions marked QUANT_HD below, so the
// GPU performs the same fp32 operations in the same order and produces bit-identical codes.
//
// Every scheme splits a range of n values into blocks of `block_size` consecutive values (the last block
// may be partial: ceil(n / block_size) blocks) and stores per block the fp32 absmax a = max |x| of the
// block (we store the absmax, not the scale). Values are normalised y = x / a, which lies in [-1, 1]
// exactly (IEEE division is correctly rounded and |x| <= a), and y is turned into a code.
//
// 1. Blockwise absmax int8 (block 64 ... 4096, any size works):
//        q = rint(y * 127)  (int8 in [-127, 127], round half to even)      dequant: x' = (q / 127) * a
//    |y * 127 - q| <= 1/2, so |x - x'| <= a / 254 per element (plus a few fp32 ulps of a from the
//    rounding of y and of the dequant products). Per-tensor absmax is the same with block = whole tensor;
//    one outlier then sets a for every value, which is why blockwise wins on data with outliers.
//
// 2. Codebook quantization: a sorted table of levels in [-1, 1]; the code of y is the index of the
//    NEAREST level (ties go to the lower level), found by binary search over the midpoints between
//    adjacent levels; dequant x' = level[code] * a. Error bound: |x - x'| <= a * (half the gap between
//    the two levels around y), see codebook_half_gap(). Three codebooks:
//
//    a) Dynamic signed map (256 levels, for Adam's first moment m), in the spirit of the "dynamic tree"
//       quantization of 8-bit optimizers (Dettmers et al. 2021): one sign, then a decimal exponent e,
//       then a linear fraction, with fewer fraction levels for smaller exponents:
//           decade e covers (10^-(e+1), 10^-e] with K_e levels  10^-e * (0.1 + 0.9 * (k + 1) / K_e),
//           k = 0 .. K_e - 1,   K_e = 2^(6 - e) for e = 0 .. 6   (64 + 32 + ... + 1 = 127 levels)
//       on each side, plus 0, plus one extra positive level 1e-7 (what would otherwise be "-0"):
//       127 + 127 + 1 + 1 = 256 distinct sorted levels, -1 and 1 included (top level of decade 0).
//       In the top decade the levels are 0.9/64 = 0.014 apart (relative error <= 0.7% near 1, <= 7% near
//       0.1), and the map still resolves values down to 1e-6 of the block absmax, where a linear int8 map
//       would flush everything below a/254 to 0. The unsigned map has twice the levels per decade.
//    b) Dynamic unsigned map (256 levels >= 0, for the second moment v): no sign, so one more bit for the
//       fraction: K_e = 2^(7 - e) for e = 0 .. 7 (128 + 64 + ... + 1 = 255 levels) plus 0.
//       Negative inputs are quantized to 0.
//    c) NF4 (4-bit NormalFloat, QLoRA, Dettmers et al. 2023; block 64): 16 levels at quantiles of N(0,1):
//           positive: Phi^-1(p) for 8 p evenly spaced from delta down to 1/2 (excluding 1/2),
//           negative: -Phi^-1(p) for 7 p evenly spaced from delta down to 1/2 (excluding 1/2),
//           plus an exact 0, all divided by Phi^-1(delta) so the ends are exactly -1 and 1, with
//           delta = (1 - 1/(2*15) + 1 - 1/(2*16)) / 2 = 0.9677083 (QLoRA's offset: between the 15- and
//           16-quantile ends). Phi^-1 is computed in double by bisection on Phi(x) = erfc(-x/sqrt 2) / 2.
//       The resulting table (rounded to fp32), which the test checks against QLoRA's published values:
//           -1, -0.69619280, -0.52507305, -0.39491749, -0.28444138, -0.18477343, -0.09105004, 0,
//           0.07958030, 0.16093021, 0.24611230, 0.33791524, 0.44070983, 0.56261700, 0.72295684, 1
//       Two codes per byte: value 2j in the low nibble of byte j, value 2j+1 in the high nibble (a last
//       odd value leaves the high nibble 0). Block size must be even, so no byte straddles two blocks.
//       Worst case error: a * 0.152 (half the gap between -1 and -0.696).
//
// 3. Double quantization of the NF4 absmax values (QLoRA stores them in 8 bits; we pick blockwise
//    absmax int8, not QLoRA's 8-bit floats): subtract the mean mu of all absmax values (fp32, summed in
//    double in a fixed order: sequentially inside groups of 256, then the group sums sequentially, so
//    the GPU reproduces it bit for bit), then blockwise int8 with block DQ_BLOCK = 256. Stored: 1 byte per
//    absmax + one fp32 absmax per 256 absmax values + mu. NF4 then costs 4 + 8/64 + 32/(64*256) = 4.127
//    bits per parameter. Dequantized absmax a' = fma(q / 127, c, mu) with c the group's absmax of
//    (a - mu); |a - a'| <= c / 254, so an NF4 value is off by at most a * halfgap + |level| * c / 254.
//
// Zero and non-finite blocks (the same in every scheme, CPU and GPU):
//   - all-zero block: a = 0, every value gets the code of 0 (int8 0, signed map 127, unsigned map 0,
//     NF4 7), dequant gives exactly 0. A block of one repeated value c round-trips exactly in the int8 and
//     codebook schemes: y = c / |c| = +-1, which is a level of every map (for the unsigned map c > 0).
//   - a block holding a NaN or Inf: the block's absmax is stored as NaN and every code is the zero code,
//     so the whole block dequantizes to NaN (visibly poisoned, never silently wrong), and the quantize
//     function returns the index of the first such block (-1 when all values were finite);
//     quantize_check_status() turns that index into a failure whose message names the block.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstddef>
#include <cstdio>
#include <cstdlib>

#include "llmc/utils.h"

// the per-element math is shared with the CUDA kernels; under nvcc it is host + device code
#if defined(__CUDACC__)
#define QUANT_HD __host__ __device__
#else
#define QUANT_HD
#endif

constexpr int DQ_BLOCK = 256; // double quantization: absmax values per int8 block
constexpr int NF4_BLOCK = 64; // QLoRA's NF4 block size
constexpr int CODEBOOK_MAX = 256;

// ----------------------------------------------------------------------------------------------------
// per-element math (CPU and GPU). No fp32 expression here has the shape a * b + c without an explicit
// fmaf: compilers may fuse such a pair (g++ does at -O3 -march=native, nvcc by default), and they
// would not fuse it the same way on both sides.

// false for NaN and +-Inf
QUANT_HD inline bool quant_is_finite(float x) {
    return fabsf(x) <= FLT_MAX;
}

QUANT_HD inline int8_t quantize_int8_value(float x, float absmax) {
    if (absmax == 0.0f) return 0;
    float y = x / absmax; // in [-1, 1]
    return (int8_t)rintf(y * 127.0f);
}

QUANT_HD inline float dequantize_int8_value(int8_t q, float absmax) {
    return ((float)q / 127.0f) * absmax;
}

// A sorted table of levels in [-1, 1] and the midpoints between neighbours, rounded toward -infinity to
// fp32. The nearest level to y (ties to the lower one) is level[#{i : midpoint[i] < y}]: for y <= exact
// midpoint the lower level is nearest or tied, and a y above the rounded-down midpoint is above the exact
// one too (no fp32 value lies strictly between them), so the search is exact, not approximately nearest.
struct Codebook {
    int size = 0;      // 256 or 16 (a power of two)
    int zero_code = 0; // index of the level 0
    float levels[CODEBOOK_MAX];
    float midpoints[CODEBOOK_MAX - 1];
};

// binary search over size - 1 sorted midpoints: the number of midpoints < y, in [0, size - 1]
QUANT_HD inline int codebook_search(const float* midpoints, int size, float y) {
    int idx = 0;
    for (int step = size / 2; step > 0; step /= 2) {
        if (midpoints[idx + step - 1] < y) idx += step;
    }
    return idx;
}

QUANT_HD inline int codebook_quantize_value(const float* midpoints, int size, int zero_code, float x,
                                            float absmax) {
    if (absmax == 0.0f) return zero_code;
    return codebook_search(midpoints, size, x / absmax);
}

QUANT_HD inline float codebook_dequantize_value(const float* levels, int code, float absmax) {
    return levels[code] * absmax;
}

// ----------------------------------------------------------------------------------------------------
// building the codebooks (host only, double precision, deterministic)

// finish a codebook from sorted double-precision levels: round levels to fp32, midpoints rounded down
inline Codebook codebook_from_levels(const double* levels, int size) {
    Codebook cb;
    cb.size = size;
    cb.zero_code = -1;
    for (int i = 0; i < size; i++) {
        cb.levels[i] = (float)levels[i];
        if (levels[i] == 0.0) cb.zero_code = i;
        if (i > 0 && !(levels[i] > levels[i - 1])) fail("codebook levels not strictly increasing at %d", i);
    }
    if (cb.zero_code < 0) fail("codebook has no zero level");
    for (int i = 0; i + 1 < size; i++) {
        // the sum of two neighbouring fp32 levels is exact in double, and so is the halving
        double mid = ((double)cb.levels[i] + (double)cb.levels[i + 1]) / 2.0;
        float m = (float)mid;
        if ((double)m > mid) m = nextafterf(m, -INFINITY);
        cb.midpoints[i] = m;
    }
    return cb;
}

// append the levels sign * 10^-e * (0.1 + 0.9 * (k + 1) / K), k = 0 .. K-1, of decade e
inline void dynamic_map_decade(double* levels, int* count, int e, int K, double sign) {
    for (int k = 0; k < K; k++) levels[(*count)++] = sign * pow(10.0, -e) * (0.1 + 0.9 * (k + 1) / K);
}

inline int quant_compare_doubles(const void* a, const void* b) {
    double x = *(const double*)a, y = *(const double*)b;
    return (x > y) - (x < y);
}

inline Codebook build_dynamic_map(bool is_signed) {
    double levels[CODEBOOK_MAX];
    int count = 0;
    levels[count++] = 0.0;
    if (is_signed) {
        for (int e = 0; e <= 6; e++) {
            dynamic_map_decade(levels, &count, e, 1 << (6 - e), 1.0);
            dynamic_map_decade(levels, &count, e, 1 << (6 - e), -1.0);
        }
        levels[count++] = 1e-7; // the slot sign-magnitude would spend on "-0"
    } else {
        for (int e = 0; e <= 7; e++) dynamic_map_decade(levels, &count, e, 1 << (7 - e), 1.0);
    }
    if (count != CODEBOOK_MAX) fail("dynamic map has %d levels, expected 256", count);
    qsort(levels, count, sizeof(double), quant_compare_doubles);
    return codebook_from_levels(levels, count);
}

// standard normal CDF and its inverse (bisection: 200 halvings of [-40, 40] reach double resolution)
inline double quant_normal_cdf(double x) {
    return 0.5 * erfc(-x / sqrt(2.0));
}
inline double quant_normal_cdf_inverse(double p) {
    double lo = -40.0, hi = 40.0;
    for (int it = 0; it < 200; it++) {
        double mid = 0.5 * (lo + hi);
        if (quant_normal_cdf(mid) < p)
            lo = mid;
        else
            hi = mid;
    }
    return 0.5 * (lo + hi);
}

inline Codebook build_nf4_map() {
    const double delta = 0.5 * ((1.0 - 1.0 / 30.0) + (1.0 - 1.0 / 32.0)); // 0.9677083...
    double levels[16];
    int count = 0;
    const double top = quant_normal_cdf_inverse(delta);
    for (int k = 0; k < 8; k++)
        levels[count++] = quant_normal_cdf_inverse(delta - (delta - 0.5) * k / 8.0) / top;
    for (int k = 0; k < 7; k++)
        levels[count++] = -quant_normal_cdf_inverse(delta - (delta - 0.5) * k / 7.0) / top;
    levels[count++] = 0.0;
    levels[0] = 1.0; // exactly (it is top / top)
    levels[8] = -1.0;
    qsort(levels, count, sizeof(double), quant_compare_doubles);
    return codebook_from_levels(levels, count);
}

// the tables, built once on first use (thread-safe static initialisation)
inline const Codebook& dynamic_map_signed() {
    static const Codebook cb = build_dynamic_map(true);
    return cb;
}
inline const Codebook& dynamic_map_unsigned() {
    static const Codebook cb = build_dynamic_map(false);
    return cb;
}
inline const Codebook& nf4_map() {
    static const Codebook cb = build_nf4_map();
    return cb;
}

// Half the gap between the two levels around y (the error bound of nearest-level quantization of y,
// in units of the absmax); for y outside [level[0], level[size-1]] the distance to the end level.
inline double codebook_half_gap(const Codebook& cb, double y) {
    if (y <= cb.levels[0]) return cb.levels[0] - y;
    if (y >= cb.levels[cb.size - 1]) return y - cb.levels[cb.size - 1];
    int i = 0;
    while (!(y >= cb.levels[i] && y <= cb.levels[i + 1])) i++;
    return 0.5 * ((double)cb.levels[i + 1] - (double)cb.levels[i]);
}

// ----------------------------------------------------------------------------------------------------
// block absmax (CPU). Returns false when the block holds a NaN or Inf.

inline bool quant_block_absmax(const float* x, size_t count, float* absmax) {
    float a = 0.0f;
    bool finite = true;
    for (size_t i = 0; i < count; i++) {
        a = fmaxf(a, fabsf(x[i]));
        finite = finite && quant_is_finite(x[i]);
    }
    *absmax = a;
    return finite;
}

inline size_t quant_num_blocks(size_t n, size_t block_size) {
    return (n + block_size - 1) / block_size;
}

inline void quant_check_block_size(size_t block_size, const char* what) {
    if (block_size < 1) fail("%s: block size must be >= 1, got %zu", what, block_size);
}

// fail naming the block when a quantize function reported a non-finite block
inline void quantize_check_status(int64_t bad_block, const char* what) {
    if (bad_block >= 0) {
        fail("%s: block %lld holds a NaN or Inf value; its absmax is stored as NaN", what,
             (long long)bad_block);
    }
}

// The loop every CPU quantizer shares: block b of x (the last one may be partial) gets its absmax, NaN
// when the block holds a NaN or Inf, and write_codes(start, count, a, finite) writes its codes (the zero
// code when not finite). Blocks are independent: OpenMP runs them in parallel. Returns the first
// non-finite block, or -1.
template <class WriteCodes>
inline int64_t quant_for_each_block(const float* x, size_t n, size_t block_size, float* absmax,
                                    WriteCodes write_codes) {
    const size_t num_blocks = quant_num_blocks(n, block_size);
    int64_t bad = INT64_MAX;
#pragma omp parallel for schedule(static) reduction(min : bad)
    for (size_t b = 0; b < num_blocks; b++) {
        const size_t start = b * block_size;
        const size_t count = (start + block_size <= n) ? block_size : n - start;
        float a;
        const bool finite = quant_block_absmax(x + start, count, &a);
        absmax[b] = finite ? a : NAN;
        if (!finite && (int64_t)b < bad) bad = (int64_t)b;
        write_codes(start, count, a, finite);
    }
    return bad == INT64_MAX ? -1 : bad;
}

// ----------------------------------------------------------------------------------------------------
// 1. blockwise absmax int8
// x (n) -> codes (n), absmax (ceil(n / block_size)). Returns the first non-finite block, or -1.

inline int64_t quantize_absmax_int8(const float* x, size_t n, size_t block_size, int8_t* codes,
                                    float* absmax) {
    quant_check_block_size(block_size, "quantize_absmax_int8");
    auto write_codes = [&](size_t start, size_t count, float a, bool finite) {
        for (size_t i = start; i < start + count; i++) codes[i] = finite ? quantize_int8_value(x[i], a) : 0;
    };
    return quant_for_each_block(x, n, block_size, absmax, write_codes);
}

inline void dequantize_absmax_int8(const int8_t* codes, const float* absmax, size_t n, size_t block_size,
                                   float* out) {
    quant_check_block_size(block_size, "dequantize_absmax_int8");
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) out[i] = dequantize_int8_value(codes[i], absmax[i / block_size]);
}

// ----------------------------------------------------------------------------------------------------
// NF4: x (n) -> packed (ceil(n / 2) bytes), absmax (ceil(n / block_size)); block_size even (QLoRA: 64)

inline void nf4_check_block_size(size_t block_size, const char* what) {
    if (block_size < 2 || block_size % 2 != 0) {
        fail("%s: NF4 block size must be even (two 4-bit codes per byte), got %zu", what, block_size);
    }
}

inline int64_t quantize_nf4(const float* x, size_t n, size_t block_size, uint8_t* packed, float* absmax) {
    nf4_check_block_size(block_size, "quantize_nf4");
    const Codebook& cb = nf4_map();
    auto write_codes = [&](size_t start, size_t count, float a, bool finite) {
        for (size_t i = 0; i < count; i += 2) { // two codes per byte, the even element in the low nibble
            int lo = cb.zero_code, hi = 0;
            if (finite) {
                lo = codebook_quantize_value(cb.midpoints, cb.size, cb.zero_code, x[start + i], a);
                if (i + 1 < count)
                    hi = codebook_quantize_value(cb.midpoints, cb.size, cb.zero_code, x[start + i + 1], a);
            } else if (i + 1 < count) {
                hi = cb.zero_code;
            }
            packed[(start + i) / 2] = (uint8_t)(lo | (hi << 4));
        }
    };
    return quant_for_each_block(x, n, block_size, absmax, write_codes);
}

inline void dequantize_nf4(const uint8_t* packed, const float* absmax, size_t n, size_t block_size,
                           float* out) {
    nf4_check_block_size(block_size, "dequantize_nf4");
    const Codebook& cb = nf4_map();
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        const int code = (i % 2 == 0) ? (packed[i / 2] & 15) : (packed[i / 2] >> 4);
        out[i] = codebook_dequantize_value(cb.levels, code, absmax[i / block_size]);
    }
}

// ----------------------------------------------------------------------------------------------------
// 3. double quantization of absmax values a (num, all >= 0):
//    mean (1 float), codes (num int8), group_absmax (ceil(num / 256)). Returns the first bad group or -1.

inline size_t dq_num_groups(size_t num) {
    return quant_num_blocks(num, DQ_BLOCK);
}

// mean in double, summed sequentially inside each group of DQ_BLOCK, then over the group sums in order
inline float dq_mean(const float* a, size_t num) {
    if (num == 0) return 0.0f;
    double total = 0.0;
    for (size_t g = 0; g < dq_num_groups(num); g++) {
        double s = 0.0;
        for (size_t i = g * DQ_BLOCK; i < num && i < (g + 1) * DQ_BLOCK; i++) s += (double)a[i];
        total += s;
    }
    return (float)(total / (double)num);
}

QUANT_HD inline float dq_dequantize_value(int8_t q, float group_absmax, float mean) {
    return fmaf((float)q / 127.0f, group_absmax, mean);
}

inline int64_t double_quantize_absmax(const float* a, size_t num, float* mean, int8_t* codes,
                                      float* group_absmax) {
    *mean = dq_mean(a, num);
    float* centered = (float*)malloc_check(num * sizeof(float), "double quantization (centered absmax)");
    for (size_t i = 0; i < num; i++) centered[i] = a[i] - *mean;
    int64_t bad = quantize_absmax_int8(centered, num, DQ_BLOCK, codes, group_absmax);
    free(centered);
    return bad;
}

inline void double_dequantize_absmax(const int8_t* codes, const float* group_absmax, float mean, size_t num,
                                     float* a) {
    for (size_t i = 0; i < num; i++) a[i] = dq_dequantize_value(codes[i], group_absmax[i / DQ_BLOCK], mean);
}
