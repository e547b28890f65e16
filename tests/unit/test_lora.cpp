// test_lora.cpp: llmc/lora.h on its own (test_gpt2 tests LoRA inside the trainer against PyTorch).
//   - the flag -lt's parser: names, "all", and errors naming the flag;
//   - the adapter layout: A (L, r, in) then B (L, out, r) per target, in target order, back to back;
//   - fresh adapters: B exactly zero, A inside +-1/sqrt(in) and spread over it, the same for one seed;
//   - the merge W + s.B.A against a float64 product (relative 1e-6: fp32 sums of r products);
//   - NF4 storage: the bytes of a matrix are the formula's 4 + 8/64 + 32/(64*256) = 4.127 bits per value
//     (the block scales cost 0.127 bits instead of 0.5 without double quantization), the dequantized
//     matrix is within NF4's error bound of the original, and nf4_base_quantize covers every layer.
#include <cmath>
#include <cstdio>
#include <vector>

#include "llmc/lora.h"
#include "tests/common/test_common.h"

static void test_parse_targets() {
    CHECK(lora_parse_targets("-lt", "qkv") == 1u, "-lt qkv");
    CHECK(lora_parse_targets("-lt", "fcproj,qkv") == (1u | 8u), "-lt fcproj,qkv (any order)");
    CHECK(lora_parse_targets("-lt", "all") == LORA_ALL_TARGETS, "-lt all");
    CHECK(lora_targets_text(LORA_DEFAULT_TARGETS) == "qkv,attproj",
          "default targets: the attention projections");
    expect_failure("-lt mlp", [] { lora_parse_targets("-lt", "mlp"); }, {"flag -lt", "'mlp'"});
    expect_failure("-lt qkv,,fc", [] { lora_parse_targets("-lt", "qkv,,fc"); }, {"flag -lt"});
    expect_failure("-lt (empty)", [] { lora_parse_targets("-lt", ""); }, {"flag -lt"});
}

static void test_layout() {
    GPT2Config c{64, 100, 128, 3, 2, 32}; // maxT V Vp L NH C
    LoraConfig lc;
    lc.rank = 4;
    lc.targets = (1u << LORA_ATTPROJ) | (1u << LORA_FCPROJ);
    const LoraLayout lay = lora_layout(c, lc);
    const size_t L = 3, r = 4, C = 32;
    CHECK(lay.num_tensors == 4, "two targets: four tensors");
    CHECK(lay.sizes[0] == L * r * C && lay.sizes[1] == L * C * r, "attproj: A (L,r,C), B (L,C,r)");
    CHECK(lay.sizes[2] == L * r * 4 * C && lay.sizes[3] == L * C * r, "fcproj: A (L,r,4C), B (L,C,r)");
    CHECK(lay.a_offset[LORA_ATTPROJ] == 0 && lay.b_offset[LORA_ATTPROJ] == lay.sizes[0] &&
              lay.a_offset[LORA_FCPROJ] == lay.sizes[0] + lay.sizes[1],
          "offsets back to back in target order");
    CHECK(lay.total == lay.sizes[0] + lay.sizes[1] + lay.sizes[2] + lay.sizes[3], "total");
    CHECK(lora_tensor_name(lay, 3) == "B fcproj", "tensor names");
    lc.rank = 0;
    CHECK(lora_layout(c, lc).total == 0, "rank 0: no adapters");
}

static void test_init() {
    GPT2Config c{64, 100, 128, 2, 2, 32};
    LoraConfig lc;
    lc.rank = 8;
    lc.targets = LORA_ALL_TARGETS;
    const LoraLayout lay = lora_layout(c, lc);
    std::vector<float> a(lay.total), b(lay.total);
    lora_init_random(a.data(), lay, c, 42);
    lora_init_random(b.data(), lay, c, 42);
    CHECK(a == b, "fresh adapters: the same for one seed");
    size_t off = 0;
    for (int i = 0; i < lay.num_tensors; i++) {
        int in, out;
        lora_target_shape(c, lay.tensor_target[i], &in, &out);
        const float bound = 1.0f / sqrtf((float)in);
        double lo = 0, hi = 0;
        bool inside = true, zero = true;
        for (size_t j = off; j < off + lay.sizes[i]; j++) {
            zero = zero && a[j] == 0.0f;
            inside = inside && fabsf(a[j]) <= bound;
            lo = std::min(lo, (double)a[j]), hi = std::max(hi, (double)a[j]);
        }
        if (lay.tensor_is_b[i]) {
            CHECK(zero, "%s is zero", lora_tensor_name(lay, i).c_str());
        } else {
            CHECK(inside && lo < -0.9 * bound && hi > 0.9 * bound, "%s uniform in +-1/sqrt(%d)",
                  lora_tensor_name(lay, i).c_str(), in);
        }
        off += lay.sizes[i];
    }
}

static void test_merge() {
    const int out = 24, in = 40, r = 5;
    const float s = 1.75f;
    std::vector<float> W(out * in), A(r * in), B(out * r);
    Rng rng;
    rng_init(&rng, 3);
    rng_fill_normal(&rng, W.data(), W.size(), 0.0f, 1.0f);
    rng_fill_normal(&rng, A.data(), A.size(), 0.0f, 1.0f);
    rng_fill_normal(&rng, B.data(), B.size(), 0.0f, 1.0f);
    std::vector<float> merged = W;
    lora_merge_matrix(merged.data(), A.data(), B.data(), s, out, in, r);
    double worst = 0.0;
    for (int o = 0; o < out; o++) {
        for (int i = 0; i < in; i++) {
            double ref = W[o * in + i];
            for (int j = 0; j < r; j++) ref += (double)s * B[o * r + j] * A[j * in + i];
            worst = std::max(worst, fabs(ref - merged[o * in + i]) / (fabs(ref) + 1.0));
        }
    }
    CHECK_LE(worst, 1e-6, "merge W + s.B.A against float64");
}

static void test_nf4() {
    const size_t C = 768, n = 3 * C * C; // GPT-2 small's qkvw of one layer
    std::vector<float> w(n);
    Rng rng;
    rng_init(&rng, 11);
    rng_fill_normal(&rng, w.data(), n, 0.0f, 0.02f);
    const Nf4Matrix m = nf4_quantize_matrix(w.data(), n, "test matrix");
    const double bits = 8.0 * nf4_matrix_bytes(m) / n, formula = 4.0 + 8.0 / 64 + 32.0 / (64 * 256);
    printf("     NF4 with double quantization: %.5f bits per value (formula %.5f; scales %.4f bits, %.4f "
           "without double quantization)\n",
           bits, formula, bits - 4.0, 32.0 / 64);
    CHECK_LE(fabs(bits - formula), 1e-4, "NF4 bits per value vs 4 + 8/64 + 32/(64*256)");
    CHECK(nf4_matrix_bytes(m) == nf4_matrix_bytes(n), "bytes of the matrix = nf4_matrix_bytes(n)");
    std::vector<float> deq(n), scratch(quant_num_blocks(n, NF4_BLOCK));
    nf4_dequantize_matrix(m, deq.data(), scratch.data());
    // NF4's worst case is 0.152 of the block absmax a, plus the double quantization's c/254, c the largest
    // |a - mean| of the block's group of 256 absmax values
    const size_t nb = n / NF4_BLOCK;
    std::vector<double> absmax(nb);
    double mean = 0.0;
    for (size_t b = 0; b < nb; b++) {
        for (size_t i = b * 64; i < b * 64 + 64; i++) absmax[b] = std::max(absmax[b], fabs((double)w[i]));
        mean += absmax[b] / nb;
    }
    double worst = 0.0;
    for (size_t b = 0; b < nb; b++) {
        double c = 0.0;
        for (size_t j = b / DQ_BLOCK * DQ_BLOCK; j < std::min(nb, (b / DQ_BLOCK + 1) * DQ_BLOCK); j++)
            c = std::max(c, fabs(absmax[j] - mean));
        for (size_t i = b * 64; i < b * 64 + 64; i++)
            worst = std::max(worst,
                             fabs((double)w[i] - deq[i]) / (0.152 * absmax[b] + c / 254 + 1e-6 * absmax[b]));
    }
    CHECK_LE(worst, 1.0, "NF4 matrix round trip: max |w - w'| / (0.152 a + c/254)");

    GPT2Config c{16, 64, 128, 3, 2, 32};
    std::vector<float> params(gpt2_num_parameters(c));
    gpt2_init_random(params.data(), c, 5);
    Nf4Base base;
    nf4_base_quantize(&base, c, params.data());
    bool shapes = true;
    for (int t = 0; t < NUM_LORA_TARGETS; t++) {
        int in, out;
        lora_target_shape(c, t, &in, &out);
        shapes = shapes && base.matrix[t].size() == 3;
        for (const Nf4Matrix& mm : base.matrix[t]) shapes = shapes && mm.n == (size_t)in * out;
    }
    CHECK(shapes, "NF4 base: every layer's four matrices, each (out, in)");
    const double predicted = lora_base_bytes_predicted(c, true), fp32 = lora_base_bytes_predicted(c, false);
    double rest = 0.0;
    size_t sizes[NUM_PARAMETER_TENSORS];
    gpt2_parameter_sizes(c, sizes);
    for (int i = 0; i < NUM_PARAMETER_TENSORS; i++) rest += 4.0 * sizes[i];
    for (int t = 0; t < NUM_LORA_TARGETS; t++) rest -= 4.0 * sizes[LORA_BASE_TENSOR[t]];
    CHECK_LE(fabs(predicted - (rest + nf4_base_bytes(base))) / predicted, 0.01,
             "predicted NF4 base bytes vs the quantized base's (%.0f of %.0f fp32)", predicted, fp32);
}

int main() {
    test_parse_targets(); // forks: before OpenMP starts threads
    test_list_checks();
    test_layout();
    test_init();
    test_merge();
    test_nf4();
    return test_summary("test_lora");
}
