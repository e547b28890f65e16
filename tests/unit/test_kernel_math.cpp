// test_kernel_math.cpp: the scalar math of the GPU kernels (llmc/kernel_math.h) and the MFU table
// (llmc/mfu.h), checked on the CPU against independent double-precision references. The GPU kernels
// call exactly these inline functions, so this covers their arithmetic on a machine without a GPU;
// the kernels' memory access and reductions are covered by the programs in dev/cuda/.
// Prints every check; exits 1 if any failed.
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "llmc/kernel_math.h"
#include "llmc/mfu.h"
#include "tests/common/reference.h"
#include "tests/common/test_common.h"

// ----------------------------------------------------------------------------------------------------
// bf16 rounding

// Reference: the two bf16 values around x are the truncated bit pattern and the next one up in
// magnitude; pick the nearer in exact (double) arithmetic, ties to the even mantissa.
static uint16_t reference_rne(float x) {
    uint32_t bits = float_to_bits(x);
    uint16_t lo = (uint16_t)(bits >> 16);
    uint16_t hi = (uint16_t)(lo + 1);
    double dlo = std::fabs((double)x - (double)bf16_bits_to_float(lo));
    double dhi = std::fabs((double)x - (double)bf16_bits_to_float(hi));
    if (dlo < dhi) return lo;
    if (dhi < dlo) return hi;
    return (lo & 1) ? hi : lo;
}

static void test_bf16_rne() {
    std::mt19937 rng(1234);
    std::uniform_real_distribution<float> mant(-1.0f, 1.0f);
    std::uniform_int_distribution<int> expo(-30, 30);
    int mismatches = 0;
    const int n = 1000000;
    for (int i = 0; i < n; i++) {
        float x = std::ldexp(mant(rng), expo(rng));
        if (float_to_bf16_bits_rne(x) != reference_rne(x)) mismatches++;
    }
    CHECK_BOUND(mismatches == 0, mismatches, 0,
                "bf16 RNE equals nearest-neighbour reference on 1e6 random floats");
    // ties: 1 + 2^-8 is halfway between 1 (even) and 1 + 2^-7 (odd) -> 1; 1 + 3*2^-8 -> 1 + 2^-6 (even)
    CHECK(bf16_bits_to_float(float_to_bf16_bits_rne(1.0f + 0x1p-8f)) == 1.0f, "bf16 RNE tie 1+2^-8 -> 1");
    CHECK(bf16_bits_to_float(float_to_bf16_bits_rne(1.0f + 3 * 0x1p-8f)) == 1.0f + 0x1p-6f,
          "bf16 RNE tie 1+3*2^-8 -> 1+2^-6");
    CHECK(bf16_bits_to_float(float_to_bf16_bits_rne(-1.0f - 3 * 0x1p-8f)) == -1.0f - 0x1p-6f,
          "bf16 RNE tie negative -1-3*2^-8 -> -1-2^-6");
    CHECK(std::isnan(bf16_bits_to_float(float_to_bf16_bits_rne(NAN))), "bf16 RNE keeps NaN");
    // a NaN whose payload sits only in the low 16 bits must not turn into infinity
    CHECK(std::isnan(bf16_bits_to_float(float_to_bf16_bits_rne(bits_to_float(0x7F800001u)))),
          "bf16 RNE keeps low-payload NaN a NaN");
    CHECK(bf16_bits_to_float(float_to_bf16_bits_rne(INFINITY)) == INFINITY, "bf16 RNE keeps +inf");
    CHECK(bf16_bits_to_float(float_to_bf16_bits_rne(FLT_MAX)) == INFINITY,
          "bf16 RNE of FLT_MAX overflows to inf");
}

static void test_bf16_stochastic() {
    // exact expectation: over all 2^16 values of the random bits, the mean of the rounded value is x
    const float xs[] = {
        1.0f + 0.3f * 0x1p-7f,  -3.14159265f, 0.1f, 1.99999988f /* rounds across the binade */, -1e-30f,
        1e-40f /* subnormal */, 65504.3f,     1.5f /* exact bf16 */};
    for (float x : xs) {
        uint32_t bits = float_to_bits(x);
        float lo = bf16_bits_to_float((uint16_t)(bits >> 16));
        float hi = bf16_bits_to_float((uint16_t)((bits >> 16) + 1));
        double sum = 0.0;
        bool neighbours = true;
        for (uint32_t r = 0; r < 65536; r++) {
            float y = bf16_bits_to_float(float_to_bf16_bits_stochastic(x, r));
            neighbours = neighbours && (y == lo || y == hi);
            sum += y;
        }
        double mean = sum / 65536.0;
        char what[128];
        snprintf(what, sizeof(what), "stochastic rounding of %.9g: exact mean over all 2^16 random values",
                 x);
        // the mean is exact up to the double summation error (2^16 terms)
        double err = std::fabs(mean - (double)x);
        double bound = 1e-12 * std::fabs((double)x) + 1e-300;
        CHECK_LE(err, bound, "%s", what);
        snprintf(what, sizeof(what), "stochastic rounding of %.9g: always one of its two bf16 neighbours", x);
        CHECK(neighbours, "%s", what);
    }
    // with the hash as the random source (what the AdamW kernel does): sample mean within 6 sigma
    const float x = 0.7f + 0.37f * 0x1p-8f;
    uint32_t bits = float_to_bits(x);
    double ulp =
        (double)bf16_bits_to_float((uint16_t)((bits >> 16) + 1)) - bf16_bits_to_float((uint16_t)(bits >> 16));
    const int n = 1 << 20;
    double sum = 0.0;
    for (int i = 0; i < n; i++)
        sum += bf16_bits_to_float(float_to_bf16_bits_stochastic(x, random_u32(7u, i)));
    double err = std::fabs(sum / n - (double)x);
    double bound = 6.0 * 0.5 * ulp / std::sqrt((double)n); // Bernoulli std <= ulp/2 per sample
    CHECK_LE(err, bound, "stochastic rounding with hashed bits: mean of 2^20 roundings within 6 sigma of x");
    // round-to-nearest would be off by 0.37 ulp here: the bound above is over 100x tighter than that bias
    double rne_bias = std::fabs((double)bf16_bits_to_float(float_to_bf16_bits_rne(x)) - (double)x);
    CHECK_BOUND(rne_bias > 100 * bound, rne_bias, 100 * bound,
                "(the bound is far below round-to-nearest's bias on this x)");
    // exact bf16 values are left alone
    bool exact = true;
    for (uint32_t r = 0; r < 65536; r += 7)
        exact = exact && float_to_bf16_bits_stochastic(-2.5f, r) == 0xC020u;
    CHECK(exact, "stochastic rounding leaves exact bf16 values unchanged");
    CHECK(std::isinf(bf16_bits_to_float(float_to_bf16_bits_stochastic(INFINITY, 0xFFFFu))),
          "stochastic rounding keeps inf");
    CHECK(std::isnan(bf16_bits_to_float(float_to_bf16_bits_stochastic(NAN, 0xFFFFu))),
          "stochastic rounding keeps NaN");
}

// ----------------------------------------------------------------------------------------------------
// counter hash

static void test_hash() {
    bool same = true;
    for (uint64_t i = 0; i < 1000; i++) same = same && random_u32(42u, i) == random_u32(42u, i);
    CHECK(same, "random_u32 is a pure function of (seed, index)");
    int differ_seed = 0, differ_index = 0;
    for (uint64_t i = 0; i < 1000; i++) {
        differ_seed += random_u32(42u, i) != random_u32(43u, i);
        differ_index += random_u32(42u, i) != random_u32(42u, i + 1);
    }
    CHECK_BOUND(differ_seed == 1000, differ_seed, 1000, "different seeds give different bits");
    CHECK_BOUND(differ_index == 1000, differ_index, 1000, "neighbouring indices give different bits");
    CHECK(random_u32(1u, 5) != random_u32(1u, 5 + (1ull << 32)), "the high word of the index matters");
    // every bit is set half of the time: 6 sigma of a binomial(n, 1/2)
    const int n = 1 << 20;
    int counts[32] = {};
    for (int i = 0; i < n; i++) {
        uint32_t r = random_u32(2024u, i);
        for (int b = 0; b < 32; b++) counts[b] += (r >> b) & 1u;
    }
    double worst = 0.0;
    for (int b = 0; b < 32; b++) worst = std::fmax(worst, std::fabs(counts[b] - n / 2.0));
    double bound = 6.0 * 0.5 * std::sqrt((double)n);
    CHECK_LE(worst, bound, "each of the 32 bits is set half the time (2^20 samples, 6 sigma)");
    // the 16 bits stochastic rounding uses: chi-square over 256 buckets of the low 8 and of bits 8..15
    for (int shift = 0; shift <= 8; shift += 8) {
        std::vector<int> buckets(256, 0);
        for (int i = 0; i < n; i++) buckets[(random_u32(99u, i) >> shift) & 255u]++;
        double expected = n / 256.0, chi2 = 0.0;
        for (int c : buckets) chi2 += (c - expected) * (c - expected) / expected;
        // 255 degrees of freedom: mean 255, std ~22.6; 400 is > 6 sigma
        char what[96];
        snprintf(what, sizeof(what), "bits %d..%d uniform: chi-square over 256 buckets", shift, shift + 7);
        CHECK_BOUND(chi2 < 400.0, chi2, 400.0, "%s", what);
    }
}

// ----------------------------------------------------------------------------------------------------
// GELU

static void test_gelu() {
    CHECK(std::fabs((double)GELU_SQRT_2_OVER_PI - std::sqrt(2.0 / 3.14159265358979323846)) < 1e-7,
          "GELU constant equals sqrt(2/pi)");
    double worst_f = 0.0, worst_b = 0.0;
    for (int i = 0; i <= 16000; i++) {
        double x = -8.0 + i * 0.001;
        // forward: float evaluation against the double formula; errors are a few float ulps of max(|x|,1)
        worst_f = std::fmax(worst_f, std::fabs(gelu_forward_math((float)x) - gelu_ref((float)x)) /
                                         std::fmax(1.0, std::fabs(x)));
        // backward: against a central finite difference of the double forward (h^2 truncation ~1e-10)
        double h = 1e-5;
        double xf = (double)(float)x;
        double fd = (gelu_ref(xf + h) - gelu_ref(xf - h)) / (2 * h);
        worst_b = std::fmax(worst_b, std::fabs(gelu_backward_math((float)x) - fd));
    }
    CHECK_BOUND(worst_f < 1e-6, worst_f, 1e-6,
                "gelu_forward_math vs double formula on [-8,8] (relative to max(|x|,1))");
    CHECK_BOUND(worst_b < 2e-6, worst_b, 2e-6, "gelu_backward_math vs central finite difference on [-8,8]");
}

// ----------------------------------------------------------------------------------------------------
// classifier: reproduce the kernel's partition (1024 threads, 8-wide chunks, warp butterflies, then a
// butterfly over the warp results) with the kernel's functions, compare against a double reference

static SoftmaxState butterfly(std::vector<SoftmaxState> s) { // s.size() == 32: what warp_reduce does
    for (int offset = 16; offset > 0; offset /= 2) {
        std::vector<SoftmaxState> next(32);
        for (int lane = 0; lane < 32; lane++) next[lane] = softmax_state_combine(s[lane], s[lane ^ offset]);
        s = next;
    }
    return s[0];
}

static void classifier_row_like_kernel(const std::vector<float>& x, int V, int Vp, int target, float scale,
                                       float* loss, std::vector<float>& dlogits) {
    const int threads = 1024, chunk = 8;
    std::vector<SoftmaxState> state(threads, softmax_state_init());
    for (int t = 0; t < threads; t++) {
        for (int c = t * chunk; c < V; c += threads * chunk) {
            for (int k = 0; k < chunk; k++) {
                if (c + k < V) state[t] = softmax_state_update(state[t], x[c + k]);
            }
        }
    }
    std::vector<SoftmaxState> warp_results(32);
    for (int w = 0; w < 32; w++) {
        warp_results[w] =
            butterfly(std::vector<SoftmaxState>(state.begin() + 32 * w, state.begin() + 32 * w + 32));
    }
    SoftmaxState s = butterfly(warp_results);
    *loss = s.max + logf(s.sum) - x[target];
    dlogits.assign(Vp, NAN);
    for (int i = 0; i < Vp; i++) dlogits[i] = classifier_dlogit(x[i], i, target, V, s, scale);
}

static void test_classifier() {
    struct Case {
        int V, Vp;
        float spread;
        const char* name;
    };
    const Case cases[] = {{50257, 50304, 3.0f, "GPT-2 vocab, logits ~N(0,3)"},
                          {1000, 1024, 30.0f, "V=1000, large logits ~N(0,30) (stability)"},
                          {5, 128, 1.0f, "V=5 (most threads own nothing)"}};
    std::mt19937 rng(77);
    for (const Case& cs : cases) {
        std::normal_distribution<float> dist(0.0f, cs.spread);
        std::vector<float> x(cs.Vp);
        for (int i = 0; i < cs.Vp; i++) x[i] = i < cs.V ? dist(rng) : 1e30f; // garbage in the padding
        x[cs.V / 3] += 4 * cs.spread;                                        // one clear winner
        const int target = cs.V - 1;
        const float scale = 1.0f / (8 * 1024);
        float loss;
        std::vector<float> d;
        classifier_row_like_kernel(x, cs.V, cs.Vp, target, scale, &loss, d);
        const double lse = logsumexp_ref(x.data(), cs.V);
        double ref_loss = lse - x[target];
        char what[160];
        // float exp/log relative errors ~1e-7 per term; the loss is a difference of O(|lse|) numbers
        double bound = 1e-6 * (std::fabs(lse) + 1.0);
        snprintf(what, sizeof(what), "classifier loss vs double logsumexp, %s", cs.name);
        CHECK_LE(std::fabs(loss - ref_loss), bound, "%s", what);
        double worst = 0.0;
        bool padding_zero = true;
        for (int i = 0; i < cs.Vp; i++) {
            if (i >= cs.V) {
                padding_zero = padding_zero && d[i] == 0.0f;
                continue;
            }
            double p = std::exp((double)x[i] - lse);
            double ref = (p - (i == target ? 1.0 : 0.0)) * scale;
            // relative 1e-5 of p (float exp and divide) plus 1e-7 absolute for the p - 1 cancellation
            worst = std::fmax(worst, std::fabs(d[i] - ref) / (scale * (1e-5 * p + 1e-7)));
        }
        snprintf(what, sizeof(what), "classifier dlogits vs double (softmax - onehot) * scale, %s", cs.name);
        CHECK_LE(worst, 1.0, "%s", what);
        snprintf(what, sizeof(what), "classifier dlogits are exactly 0 in the padding, %s", cs.name);
        CHECK(padding_zero, "%s", what);
    }
    // combine is an exact merge of two streams: empty + empty stays empty (no NaN)
    SoftmaxState e = softmax_state_combine(softmax_state_init(), softmax_state_init());
    CHECK(e.sum == 0.0f && !std::isnan(e.max), "combining two empty softmax states gives an empty state");
}

// ----------------------------------------------------------------------------------------------------
// LayerNorm backward formula vs finite differences of a double forward

// sum_i dy_i LayerNorm(x)_i: its gradient in x is the backward's dinp for the output gradient dy
static double layernorm_loss(const std::vector<double>& x, const std::vector<double>& w,
                             const std::vector<double>& b, const std::vector<double>& dy) {
    const int C = (int)x.size();
    std::vector<double> out(C);
    double mean, rstd;
    layernorm_forward_ref(x.data(), w.data(), b.data(), C, out.data(), &mean, &rstd);
    double loss = 0.0;
    for (int i = 0; i < C; i++) loss += dy[i] * out[i];
    return loss;
}

static void test_layernorm_backward() {
    std::mt19937 rng(5);
    std::normal_distribution<double> dist(0.0, 1.0);
    const int C = 96;
    std::vector<double> x(C), w(C), b(C), dy(C);
    for (int i = 0; i < C; i++) {
        x[i] = 0.5 + 2.0 * dist(rng);
        w[i] = 1.0 + 0.3 * dist(rng);
        b[i] = 0.1 * dist(rng);
        dy[i] = dist(rng);
    }
    // the kernel's computation, in float: statistics, then the two row means, then the element formula
    float mean = 0.0f, var = 0.0f;
    for (int i = 0; i < C; i++) mean += (float)x[i];
    mean /= C;
    for (int i = 0; i < C; i++) var += ((float)x[i] - mean) * ((float)x[i] - mean);
    float rstd = 1.0f / std::sqrt(var / C + 1e-5f);
    float sum_g = 0.0f, sum_g_xhat = 0.0f;
    for (int i = 0; i < C; i++) {
        float g = (float)dy[i] * (float)w[i];
        sum_g += g;
        sum_g_xhat += g * ((float)x[i] - mean) * rstd;
    }
    double worst = 0.0, scale = 0.0, worst_w = 0.0;
    for (int i = 0; i < C; i++) {
        float g = (float)dy[i] * (float)w[i];
        float xhat = ((float)x[i] - mean) * rstd;
        float dx = layernorm_dinp_math(g, xhat, rstd, sum_g / C, sum_g_xhat / C);
        const double h = 1e-5;
        std::vector<double> xp = x, xm = x;
        xp[i] += h;
        xm[i] -= h;
        double fd = (layernorm_loss(xp, w, b, dy) - layernorm_loss(xm, w, b, dy)) / (2 * h);
        worst = std::fmax(worst, std::fabs(dx - fd));
        scale = std::fmax(scale, std::fabs(fd));
        // dweight_i = dy_i * xhat_i (one row)
        std::vector<double> wp = w, wm = w;
        wp[i] += h;
        wm[i] -= h;
        double fdw = (layernorm_loss(x, wp, b, dy) - layernorm_loss(x, wm, b, dy)) / (2 * h);
        worst_w = std::fmax(worst_w, std::fabs((double)dy[i] * xhat - fdw));
    }
    // float evaluation: a few ulps of the largest terms (|g| ~ 3, rstd ~ 0.5): 1e-5 of the scale is loose
    // enough for that and 1000x tighter than any wrong term (each term is O(scale))
    CHECK_LE(worst, 1e-5 * scale, "layernorm dinp formula vs central finite differences (C=96)");
    CHECK_LE(worst_w, 1e-5, "layernorm dweight = dout * xhat vs finite differences");
}

// ----------------------------------------------------------------------------------------------------
// AdamW

static void test_adamw() {
    std::mt19937 rng(11);
    std::normal_distribution<double> dist(0.0, 1.0);
    const float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, wd = 0.1f;
    const int n = 1000, steps = 20;
    double worst = 0.0, worst_mv = 0.0;
    for (int i = 0; i < n; i++) {
        float p = (float)dist(rng), m = 0.0f, v = 0.0f;
        double pd = p, md = 0.0, vd = 0.0;
        for (int t = 1; t <= steps; t++) {
            float g = (float)(0.01 * dist(rng));
            float bc1 = (float)(1.0 - std::pow((double)beta1, t));
            float bc2 = (float)(1.0 - std::pow((double)beta2, t));
            p = adamw_step_math(p, g, &m, &v, lr, beta1, beta2, bc1, bc2, eps, wd);
            pd = adamw_ref(pd, g, &md, &vd, lr, beta1, beta2, eps, wd, t);
        }
        worst = std::fmax(worst, std::fabs(p - pd));
        // m can cancel to ~0, so measure both moments in units of the gradient scale (0.01, 0.01^2)
        worst_mv = std::fmax(worst_mv, std::fabs(m - md) / 0.01);
        worst_mv = std::fmax(worst_mv, std::fabs(v - vd) / (0.01 * 0.01));
    }
    // 20 float updates of a parameter ~1 accumulate ~20 half-ulps (6e-8 each); each step moves ~lr = 1e-3
    CHECK_LE(worst, 2e-6, "AdamW step vs double reference, 20 steps (abs error of params ~1)");
    CHECK_LE(worst_mv, 1e-5, "AdamW m, v vs double reference (in units of the gradient scale)");
    // first step, no decay: m_hat / sqrt(v_hat) = g / |g|, so the parameter moves by lr against sign(g)
    float m = 0.0f, v = 0.0f;
    float p = adamw_step_math(2.0f, -0.25f, &m, &v, lr, beta1, beta2, 1.0f - beta1, 1.0f - beta2, eps, 0.0f);
    CHECK_LE(std::fabs(p - (2.0f + lr)), 1e-6, "AdamW first step moves by lr against the gradient sign");
    // zero gradient and state: only the decoupled decay acts, p - lr * wd * p
    m = v = 0.0f;
    p = adamw_step_math(2.0f, 0.0f, &m, &v, lr, beta1, beta2, 0.5f, 0.5f, eps, wd);
    CHECK_LE(std::fabs(p - (2.0f - lr * wd * 2.0f)), 1e-7, "AdamW weight decay is decoupled: p (1 - lr wd)");
}

// ----------------------------------------------------------------------------------------------------
// MFU table

static void test_mfu() {
    CHECK(mfu_peak_flops("NVIDIA H100 80GB HBM3", true) == 989.4e12,
          "H100 SXM (\"NVIDIA H100 80GB HBM3\") bf16 = 989.4 TF");
    CHECK(mfu_peak_flops("NVIDIA H100 PCIe", true) == 756.0e12, "H100 PCIe bf16 = 756 TF");
    CHECK(mfu_peak_flops("NVIDIA H100 NVL", true) == 835.0e12, "H100 NVL bf16 = 835 TF (not the SXM entry)");
    CHECK(mfu_peak_flops("NVIDIA H200", true) == 989.4e12, "H200 bf16 = 989.4 TF");
    CHECK(mfu_peak_flops("NVIDIA GH200 480GB", true) == 989.4e12, "GH200 found");
    CHECK(mfu_peak_flops("NVIDIA A100-SXM4-80GB", true) == 312.0e12, "A100 bf16 = 312 TF");
    CHECK(mfu_peak_flops("NVIDIA A100-SXM4-80GB", false) == 19.5e12, "A100 fp32 = 19.5 TF");
    CHECK(mfu_peak_flops("NVIDIA A10", true) == 125.0e12, "A10 is not matched as A100");
    CHECK(mfu_peak_flops("NVIDIA A10G", true) < 0, "A10G is unknown, not A10");
    CHECK(mfu_peak_flops("NVIDIA L4", true) == 121.0e12, "L4 found");
    CHECK(mfu_peak_flops("NVIDIA L40S", true) == 362.05e12, "L40S not matched as L40 or L4");
    CHECK(mfu_peak_flops("NVIDIA GeForce RTX 4090", true) == 165.2e12, "RTX 4090 found");
    CHECK(mfu_peak_flops("Quadro Imaginary 9000", true) < 0, "unknown GPU -> negative peak");
    CHECK(mfu_peak_flops(nullptr, true) < 0, "null name -> negative peak");
    char buf[32];
    mfu_format(buf, sizeof(buf), 1e14, mfu_peak_flops("Quadro Imaginary 9000", true));
    CHECK(strcmp(buf, "n/a") == 0, "unknown peak formats as \"n/a\" (never negative)");
    mfu_format(buf, sizeof(buf), 0.5 * 989.4e12, mfu_peak_flops("NVIDIA H100 80GB HBM3", true));
    CHECK(strcmp(buf, "50.0%") == 0, "half of the H100 peak formats as \"50.0%%\"");
    // GPT-2 124M at T=1024: 6*124475904 + 6*12*768*1024 FLOPs per token
    double f = mfu_flops_per_token(124475904, 12, 768, 1024);
    CHECK(f == 6.0 * 124475904 + 6.0 * 12 * 768 * 1024, "flops per token = 6 N + 6 L C T");
}

int main() {
    test_list_checks();
    test_bf16_rne();
    test_bf16_stochastic();
    test_hash();
    test_gelu();
    test_classifier();
    test_layernorm_backward();
    test_adamw();
    test_mfu();
    return test_summary("test_kernel_math");
}
