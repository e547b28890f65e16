// test_quantize.cpp: the quantization schemes of llmc/quantize.h against float64 references.
// Each check prints its measured maximum error next to the bound it must meet; any failure makes the
// program exit 1. Bounds come from the math in quantize.h (a/254 for int8, a * half-gap for codebooks)
// plus a small fp32 slack (1e-6 * a: the rounding of y = x/a, of y*127 and of the dequant product are
// each at most one ulp, ~6e-8 relative), so a real error in the scheme (a wrong code, a wrong absmax,
// an off-by-one in the block grid) is far above the tolerance.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "dev/cuda/quantize_codebook.h"
#include "llmc/quantize.h"
#include "tests/common/test_common.h"

// standard normal samples from a seeded Mersenne twister (Box-Muller, so the numbers are the same
// with every standard library)
static std::vector<float> random_normal(size_t n, uint32_t seed, float stddev = 1.0f) {
    std::mt19937 rng(seed);
    std::vector<float> x(n);
    for (size_t i = 0; i < n; i++) {
        double u1 = (rng() + 1.0) / 4294967297.0, u2 = rng() / 4294967296.0;
        x[i] = (float)(stddev * sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
    }
    return x;
}

static double block_absmax_ref(const std::vector<float>& x, size_t start, size_t count) {
    double a = 0.0;
    for (size_t i = start; i < start + count; i++) a = std::max(a, fabs((double)x[i]));
    return a;
}

// ----------------------------------------------------------------------------------------------------
// int8 blockwise: error <= a/254 per element; codes agree with the float64 rounding except at near-ties

static void test_int8_roundtrip(size_t n, size_t block_size, uint32_t seed) {
    std::vector<float> x = random_normal(n, seed);
    size_t nb = quant_num_blocks(n, block_size);
    std::vector<int8_t> codes(n);
    std::vector<float> absmax(nb), deq(n);
    int64_t bad = quantize_absmax_int8(x.data(), n, block_size, codes.data(), absmax.data());
    dequantize_absmax_int8(codes.data(), absmax.data(), n, block_size, deq.data());
    double worst_ratio = 0.0; // max over elements of |x - deq| / (a / 254)
    bool absmax_exact = (bad == -1);
    size_t code_mismatch = 0;
    for (size_t b = 0; b < nb; b++) {
        size_t start = b * block_size, count = std::min(block_size, n - start);
        double a = block_absmax_ref(x, start, count);
        if ((double)absmax[b] != a) absmax_exact = false;
        for (size_t i = start; i < start + count; i++) {
            double err = fabs((double)x[i] - (double)deq[i]);
            worst_ratio = std::max(worst_ratio, err / (a / 254.0));
            double t = (double)x[i] / a * 127.0; // float64 reference of the code
            double q_ref = nearbyint(t);
            if (fabs(fabs(t - floor(t)) - 0.5) > 1e-4 && (double)codes[i] != q_ref) code_mismatch++;
        }
    }
    char what[128];
    snprintf(what, sizeof(what), "int8 n=%zu block=%zu: max |x-deq| / (a/254)", n, block_size);
    CHECK_BOUND(worst_ratio <= 1.0 + 1e-4 && worst_ratio > 0.9, worst_ratio, 1.0 + 1e-4, "%s", what);
    snprintf(what, sizeof(what), "int8 n=%zu block=%zu: absmax exact, codes = float64 rounding (%zu differ)",
             n, block_size, code_mismatch);
    CHECK(absmax_exact && code_mismatch == 0, "%s", what);
}

// data with planted outliers: blockwise (64) vs per-tensor RMS error
static void test_outliers() {
    const size_t n = 1 << 18;
    std::vector<float> x = random_normal(n, 7);
    std::mt19937 rng(8);
    for (size_t k = 0; k < n / 10000; k++) x[rng() % n] *= 100.0f; // ~0.01% of values, 100x larger
    std::vector<int8_t> c1(n), c2(n);
    std::vector<float> a1(quant_num_blocks(n, 64)), a2(1), d1(n), d2(n);
    quantize_absmax_int8(x.data(), n, 64, c1.data(), a1.data());
    dequantize_absmax_int8(c1.data(), a1.data(), n, 64, d1.data());
    quantize_absmax_int8(x.data(), n, n, c2.data(), a2.data()); // per tensor: one block of n
    dequantize_absmax_int8(c2.data(), a2.data(), n, n, d2.data());
    // mean absolute error (the typical element's error) and RMS error (dominated by the few blocks that
    // hold an outlier, where blockwise is no better than per-tensor)
    double mae1 = 0.0, mae2 = 0.0, rms1 = 0.0, rms2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        mae1 += fabs((double)x[i] - d1[i]), rms1 += pow((double)x[i] - d1[i], 2);
        mae2 += fabs((double)x[i] - d2[i]), rms2 += pow((double)x[i] - d2[i], 2);
    }
    mae1 /= n, mae2 /= n, rms1 = sqrt(rms1 / n), rms2 = sqrt(rms2 / n);
    printf("     outliers: blockwise(64) mean abs error %.4e RMS %.4e; per-tensor mean abs %.4e RMS %.4e\n",
           mae1, rms1, mae2, rms2);
    CHECK_BOUND(mae2 / mae1 > 10.0, mae2 / mae1, 10.0,
                "outliers: per-tensor / blockwise mean absolute error");
    CHECK_BOUND(rms2 / rms1 > 5.0, rms2 / rms1, 5.0, "outliers: per-tensor / blockwise RMS error");
    // the per-tensor scheme obeys its own bound too: a/254 with a the tensor absmax
    double worst = 0.0, a = block_absmax_ref(x, 0, n);
    for (size_t i = 0; i < n; i++) worst = std::max(worst, fabs((double)x[i] - d2[i]) / (a / 254.0));
    CHECK_LE(worst, 1.0 + 1e-4, "per-tensor: max |x-deq| / (a/254)");
}

static void test_int8_edge_cases() {
    // block 0 all zero, block 1 one repeated negative value, block 2 one repeated positive value,
    // block 3 holds a NaN, block 4 an Inf, block 5 normal data, block 6 partial (10 values)
    const size_t bs = 64, n = 6 * bs + 10;
    std::vector<float> x(n, 0.0f);
    for (size_t i = bs; i < 2 * bs; i++) x[i] = -0.3172f;
    for (size_t i = 2 * bs; i < 3 * bs; i++) x[i] = 1234.5f;
    std::vector<float> r = random_normal(n, 3);
    for (size_t i = 3 * bs; i < n; i++) x[i] = r[i];
    x[3 * bs + 17] = NAN;
    x[4 * bs + 5] = INFINITY;
    std::vector<int8_t> codes(n, 99);
    std::vector<float> absmax(7), deq(n);
    int64_t bad = quantize_absmax_int8(x.data(), n, bs, codes.data(), absmax.data());
    dequantize_absmax_int8(codes.data(), absmax.data(), n, bs, deq.data());
    bool zero_ok = absmax[0] == 0.0f, rep_ok = true, nan_ok = std::isnan(absmax[3]) && std::isnan(absmax[4]);
    for (size_t i = 0; i < bs; i++) zero_ok = zero_ok && codes[i] == 0 && deq[i] == 0.0f;
    for (size_t i = bs; i < 3 * bs; i++) rep_ok = rep_ok && deq[i] == x[i];
    for (size_t i = 3 * bs; i < 5 * bs; i++) nan_ok = nan_ok && codes[i] == 0 && std::isnan(deq[i]);
    CHECK(zero_ok, "int8 edge: all-zero block -> absmax 0, codes 0, dequant exactly 0");
    CHECK(rep_ok, "int8 edge: block of one repeated value (negative, positive) round-trips exactly");
    CHECK(bad == 3, "int8 edge: NaN in block 3, Inf in block 4 -> returns first bad block 3");
    CHECK(nan_ok, "int8 edge: non-finite blocks -> absmax NaN, zero codes, dequant NaN");
    // the finite blocks after the bad ones are unaffected: same as quantizing them alone
    std::vector<int8_t> c2(n - 5 * bs);
    std::vector<float> a2(2);
    int64_t bad2 = quantize_absmax_int8(x.data() + 5 * bs, n - 5 * bs, bs, c2.data(), a2.data());
    bool same = bad2 == -1 && a2[0] == absmax[5] && a2[1] == absmax[6];
    for (size_t i = 0; i < c2.size(); i++) same = same && c2[i] == codes[5 * bs + i];
    CHECK(same, "int8 edge: blocks after a bad block (incl. partial last block of 10) unaffected");
    CHECK(absmax[6] == (float)block_absmax_ref(x, 6 * bs, 10), "int8 edge: partial block absmax exact");
    // Inf only (no NaN) is reported too; single value; tiny (subnormal) absmax does not overflow
    float inf_only[3] = {1.0f, -INFINITY, 2.0f}, a;
    int8_t c3[3];
    CHECK(quantize_absmax_int8(inf_only, 3, 2, c3, &a) == 0, "int8 edge: -Inf reported in block 0");
    float tiny[2] = {1e-40f, -3e-40f}, at, dt[2];
    int8_t ct[2];
    quantize_absmax_int8(tiny, 2, 64, ct, &at);
    dequantize_absmax_int8(ct, &at, 2, 64, dt);
    CHECK_BOUND(fabs((double)dt[0] - 1e-40) <= 3e-40 / 254 * 1.01 && dt[1] == tiny[1],
                fabs((double)dt[0] - tiny[0]), 3e-40 / 254, "int8 edge: subnormal block error");
}

// ----------------------------------------------------------------------------------------------------
// codebooks

// brute force nearest level (float64 distances, ties to the lower index)
static int nearest_brute(const Codebook& cb, double y) {
    int best = 0;
    for (int i = 1; i < cb.size; i++) {
        if (fabs(y - cb.levels[i]) < fabs(y - cb.levels[best])) best = i;
    }
    return best;
}

static void test_codebook_search(const Codebook& cb, const char* name, uint32_t seed) {
    std::mt19937 rng(seed);
    std::vector<float> ys;
    for (int i = 0; i < 200000; i++) {
        double mag = pow(10.0, -8.0 * (rng() / 4294967296.0)); // log-uniform magnitudes 1e-8 .. 1
        ys.push_back((float)((rng() & 1) ? mag : -mag));
        ys.push_back((float)(2.0 * (rng() / 4294967296.0) - 1.0));
    }
    for (int i = 0; i + 1 < cb.size; i++) { // the exact midpoints and their fp32 neighbours: the ties
        double mid = ((double)cb.levels[i] + cb.levels[i + 1]) / 2.0;
        float m = (float)mid;
        for (float v : {m, nextafterf(m, -2.0f), nextafterf(m, 2.0f), cb.levels[i], cb.levels[i + 1]})
            ys.push_back(v);
    }
    size_t wrong = 0;
    for (float y : ys) wrong += codebook_search(cb.midpoints, cb.size, y) != nearest_brute(cb, y);
    char what[128];
    snprintf(what, sizeof(what), "%s: binary search = brute-force nearest level on %zu values (%zu differ)",
             name, ys.size(), wrong);
    CHECK(wrong == 0, "%s", what);
}

static void test_dynamic_maps() {
    const Codebook& s = dynamic_map_signed();
    const Codebook& u = dynamic_map_unsigned();
    bool sorted = s.size == 256 && u.size == 256;
    for (int i = 1; i < 256; i++)
        sorted = sorted && s.levels[i] > s.levels[i - 1] && u.levels[i] > u.levels[i - 1];
    CHECK(sorted, "dynamic maps: 256 levels each, strictly increasing");
    CHECK(s.levels[0] == -1.0f && s.levels[255] == 1.0f && s.levels[s.zero_code] == 0.0f &&
              s.zero_code == 127,
          "signed map: -1 and 1 at the ends, exact 0 at code 127");
    CHECK(u.levels[0] == 0.0f && u.zero_code == 0 && u.levels[255] == 1.0f,
          "unsigned map: all levels >= 0, 0 at code 0, 1 at code 255");
    int pos = 0, neg = 0;
    for (int i = 0; i < 256; i++) pos += s.levels[i] > 0, neg += s.levels[i] < 0;
    CHECK(pos == 128 && neg == 127, "signed map: 128 positive and 127 negative levels");
    // resolution: smallest non-zero magnitudes and the relative gap at the top decade
    CHECK_BOUND(fabs(u.levels[1] - 1e-7) < 1e-13 && fabs(s.levels[128] - 1e-7) < 1e-13, u.levels[1], 1e-7,
                "dynamic maps: smallest level 1e-7");
    // levels per decade halve from the top: count levels in (10^-(e+1), 10^-e]
    bool decades = true;
    for (int e = 0; e <= 7; e++) {
        int cu = 0, cs = 0;
        for (int i = 0; i < 256; i++) {
            if (u.levels[i] > pow(10.0, -e - 1) * 1.000001 && u.levels[i] <= pow(10.0, -e) * 1.000001) cu++;
            if (-s.levels[i] > pow(10.0, -e - 1) * 1.000001 && -s.levels[i] <= pow(10.0, -e) * 1.000001) cs++;
        }
        decades = decades && cu == (1 << (7 - e)) && cs == (e <= 6 ? 1 << (6 - e) : 0);
    }
    CHECK(decades, "dynamic maps: 2^(7-e) (unsigned) / 2^(6-e) (signed, negative) levels in decade e");
    test_codebook_search(s, "signed map", 11);
    test_codebook_search(u, "unsigned map", 12);

    // round trip through quantize_codebook on data spanning many orders of magnitude, n not a multiple
    // of the block: |x - deq| <= a * half-gap(x/a)
    for (int sgn = 0; sgn < 2; sgn++) {
        const Codebook& cb = sgn ? s : u;
        const size_t n = 100003, bs = 2048;
        std::vector<float> x = random_normal(n, 20 + sgn);
        for (size_t i = 0; i < n; i++) {
            x[i] *= (float)pow(10.0, -6.0 * ((i * 7919) % 1000) / 1000.0);
            if (!sgn) x[i] = x[i] * x[i]; // second-moment-like data, >= 0
        }
        size_t nb = quant_num_blocks(n, bs);
        std::vector<uint8_t> codes(n);
        std::vector<float> absmax(nb), deq(n);
        int64_t bad = quantize_codebook(x.data(), n, bs, cb, codes.data(), absmax.data());
        dequantize_codebook(codes.data(), absmax.data(), n, bs, cb, deq.data());
        double worst = 0.0, max_rel_top = 0.0;
        for (size_t i = 0; i < n; i++) {
            double a = absmax[i / bs];
            double bound = a * codebook_half_gap(cb, x[i] / a) + 1e-6 * fabs(x[i]) + 1e-45;
            worst = std::max(worst, fabs((double)x[i] - deq[i]) / bound);
            if (fabs(x[i]) > 0.1 * a)
                max_rel_top = std::max(max_rel_top, fabs((double)x[i] - deq[i]) / fabs(x[i]));
        }
        char what[128];
        snprintf(what, sizeof(what), "%s map n=%zu block=%zu: max |x-deq| / (a * half-gap)",
                 sgn ? "signed" : "unsigned", n, bs);
        CHECK_BOUND(bad == -1 && worst <= 1.0, worst, 1.0, "%s", what);
        snprintf(what, sizeof(what), "%s map: max relative error for |x| > a/10",
                 sgn ? "signed" : "unsigned");
        CHECK_BOUND(max_rel_top <= (sgn ? 0.9 / 64 / 2 / 0.1 : 0.9 / 128 / 2 / 0.1), max_rel_top,
                    sgn ? 0.9 / 64 / 2 / 0.1 : 0.9 / 128 / 2 / 0.1, "%s", what);
    }
    // zero block, repeated value, NaN: codes and absmax as documented
    float z[5] = {0, 0, 0, 0, 0}, rep[4] = {-2.5f, -2.5f, -2.5f, -2.5f}, nanb[3] = {1.0f, NAN, 0.5f}, a, d[5];
    uint8_t c[5];
    quantize_codebook(z, 5, 8, s, c, &a);
    dequantize_codebook(c, &a, 5, 8, s, d);
    CHECK(a == 0.0f && c[0] == 127 && c[4] == 127 && d[0] == 0.0f && d[4] == 0.0f,
          "signed map: all-zero block -> absmax 0, code 127, dequant 0");
    quantize_codebook(rep, 4, 8, s, c, &a);
    dequantize_codebook(c, &a, 4, 8, s, d);
    CHECK(d[0] == -2.5f && d[3] == -2.5f, "signed map: repeated value block round-trips exactly");
    int64_t bad = quantize_codebook(nanb, 3, 8, u, c, &a);
    CHECK(bad == 0 && std::isnan(a) && c[0] == 0 && c[2] == 0,
          "unsigned map: NaN -> block 0 reported, absmax NaN");
}

// ----------------------------------------------------------------------------------------------------
// NF4 and double quantization

static void test_nf4() {
    // inverse normal CDF against known quantiles (Phi^-1(0.975) = 1.959963984540054,
    // Phi^-1(0.8413447460685429) = 1)
    CHECK_BOUND(fabs(quant_normal_cdf_inverse(0.975) - 1.959963984540054) < 1e-12 &&
                    fabs(quant_normal_cdf_inverse(0.8413447460685429) - 1.0) < 1e-12,
                fabs(quant_normal_cdf_inverse(0.975) - 1.959963984540054), 1e-12,
                "quant_normal_cdf_inverse at 0.975 and Phi(1)");
    const Codebook& cb = nf4_map();
    // QLoRA's published NF4 table (Dettmers et al. 2023, appendix / bitsandbytes)
    const double published[16] = {-1.0,
                                  -0.6961928009986877,
                                  -0.5250730514526367,
                                  -0.39491748809814453,
                                  -0.28444138169288635,
                                  -0.18477343022823334,
                                  -0.09105003625154495,
                                  0.0,
                                  0.07958029955625534,
                                  0.16093020665645599,
                                  0.24611230194568634,
                                  0.33791524171829224,
                                  0.44070982933044434,
                                  0.5626170039176941,
                                  0.7229568362236023,
                                  1.0};
    double maxdiff = 0.0;
    int pos = 0, neg = 0;
    bool sorted = cb.size == 16;
    for (int i = 0; i < 16; i++) {
        maxdiff = std::max(maxdiff, fabs(cb.levels[i] - published[i]));
        pos += cb.levels[i] > 0, neg += cb.levels[i] < 0;
        if (i > 0) sorted = sorted && cb.levels[i] > cb.levels[i - 1];
    }
    printf("     NF4 levels:");
    for (int i = 0; i < 16; i++) printf(" %.8f", cb.levels[i]);
    printf("\n");
    CHECK_BOUND(maxdiff < 1e-6, maxdiff, 1e-6, "NF4: max |level - published QLoRA level|");
    CHECK(sorted && cb.levels[0] == -1.0f && cb.levels[15] == 1.0f && cb.levels[7] == 0.0f &&
              cb.zero_code == 7 && pos == 8 && neg == 7,
          "NF4: 16 sorted levels, -1 and 1 ends, exact 0 at code 7, 8 positive / 7 negative");
    test_codebook_search(cb, "NF4", 13);

    // round trip, odd n (last byte half used), block 64: |x - deq| <= a * half-gap
    const size_t n = 64 * 1000 + 33;
    std::vector<float> x = random_normal(n, 30);
    size_t nb = quant_num_blocks(n, NF4_BLOCK);
    std::vector<uint8_t> packed((n + 1) / 2, 0xAA);
    std::vector<float> absmax(nb), deq(n);
    int64_t bad = quantize_nf4(x.data(), n, NF4_BLOCK, packed.data(), absmax.data());
    dequantize_nf4(packed.data(), absmax.data(), n, NF4_BLOCK, deq.data());
    double worst = 0.0, rms = 0.0;
    for (size_t i = 0; i < n; i++) {
        double a = absmax[i / NF4_BLOCK];
        worst =
            std::max(worst, fabs((double)x[i] - deq[i]) / (a * codebook_half_gap(cb, x[i] / a) + 1e-6 * a));
        rms += pow((double)x[i] - deq[i], 2);
    }
    printf("     NF4 n=%zu: RMS error %.4f (data stddev 1)\n", n, sqrt(rms / n));
    CHECK_BOUND(bad == -1 && worst <= 1.0, worst, 1.0, "NF4 round trip: max |x-deq| / (a * half-gap)");
    // packing: low nibble first; the unused high nibble of the last byte is 0
    int c0 = codebook_search(cb.midpoints, 16, x[0] / absmax[0]),
        c1 = codebook_search(cb.midpoints, 16, x[1] / absmax[0]);
    CHECK(packed[0] == (uint8_t)(c0 | (c1 << 4)) && (packed.back() >> 4) == 0,
          "NF4 packing: value 2j low nibble, 2j+1 high nibble; last odd byte high nibble 0");
    float odd[3] = {1.0f, 2.0f, INFINITY}, a2[2];
    uint8_t p2[2];
    CHECK(quantize_nf4(odd, 3, 2, p2, a2) == 1 && std::isnan(a2[1]) && a2[0] == 2.0f,
          "NF4: Inf in block 1 reported, absmax NaN");

    // double quantization of the absmax values
    float mean;
    std::vector<int8_t> qa(nb);
    std::vector<float> ga(dq_num_groups(nb)), absmax_dq(nb);
    int64_t bad_dq = double_quantize_absmax(absmax.data(), nb, &mean, qa.data(), ga.data());
    double_dequantize_absmax(qa.data(), ga.data(), mean, nb, absmax_dq.data());
    double mean_ref = 0.0;
    for (size_t i = 0; i < nb; i++) mean_ref += absmax[i];
    mean_ref /= nb;
    CHECK_LE(fabs(mean - mean_ref), 1e-7 * mean_ref, "double quant: mean of absmax vs float64");
    double worst_dq = 0.0;
    for (size_t i = 0; i < nb; i++) {
        size_t g = i / DQ_BLOCK;
        double c = 0.0; // float64 reference of the group absmax of (a - mean)
        for (size_t j = g * DQ_BLOCK; j < std::min(nb, (g + 1) * DQ_BLOCK); j++)
            c = std::max(c, fabs(absmax[j] - (double)mean));
        worst_dq =
            std::max(worst_dq, fabs((double)absmax[i] - absmax_dq[i]) / (c / 254.0 + 1e-6 * absmax[i]));
    }
    CHECK_BOUND(bad_dq == -1 && worst_dq <= 1.0, worst_dq, 1.0,
                "double quant: max |a - a'| / (c/254), c = group absmax of a - mean");
    // NF4 with double-quantized absmax: |x - deq| <= a * half-gap + |level| * |a - a'|
    std::vector<float> deq2(n);
    dequantize_nf4(packed.data(), absmax_dq.data(), n, NF4_BLOCK, deq2.data());
    double worst2 = 0.0, rms2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        size_t b = i / NF4_BLOCK;
        double a = absmax[b];
        double bound =
            a * codebook_half_gap(cb, x[i] / a) + fabs((double)absmax[b] - absmax_dq[b]) + 2e-6 * a;
        worst2 = std::max(worst2, fabs((double)x[i] - deq2[i]) / bound);
        rms2 += pow((double)x[i] - deq2[i], 2);
    }
    printf("     NF4 + double quant: RMS error %.4f; %.4f bits per value\n", sqrt(rms2 / n),
           (4.0 * n + 8.0 * nb + 32.0 * ga.size() + 32.0) / n);
    CHECK_LE(worst2, 1.0, "NF4 + double quant: max |x-deq| / (a*half-gap + |a - a'|)");
}

// a NaN input must stop a caller that uses quantize_check_status, with a message naming the block. Run
// first: the case runs in a forked child, and a child forked after OpenMP started its threads hangs in
// its first parallel loop.
static void test_check_status() {
    expect_failure("quantize_check_status on a NaN in block 3",
                   [] {
                       std::vector<float> x(64 * 5, 1.0f);
                       x[3 * 64 + 9] = NAN;
                       std::vector<int8_t> codes(x.size());
                       std::vector<float> absmax(5);
                       quantize_check_status(
                           quantize_absmax_int8(x.data(), x.size(), 64, codes.data(), absmax.data()),
                           "test tensor");
                   },
                   {"test tensor: block 3 holds a NaN or Inf"});
}

int main() {
    test_list_checks();
    test_check_status();
    for (size_t bs : {64, 256, 2048, 4096}) {
        test_int8_roundtrip(100003, bs, (uint32_t)bs); // not a multiple of any block size: partial last block
        test_int8_roundtrip(4 * bs, bs, (uint32_t)bs + 1);
    }
    test_int8_roundtrip(1000, 4096, 5); // one partial block
    test_outliers();
    test_int8_edge_cases();
    test_dynamic_maps();
    test_nf4();
    return test_summary("test_quantize");
}
