// test_flash_tiling.cpp: checks the algorithm of llmc/attention.cuh on the CPU, where CI has no GPU.
//
// The flash attention kernels compute causal attention tile by tile with an online softmax (forward)
// and a three-pass, atomic-free backward (D = rowsum(dO * O); dK, dV per key tile; dQ per query tile).
// This program is a plain C++ emulation of exactly that decomposition, in float: the same tile size
// (ATT_TILE: 64 in the BF16 build, 32 in the FP32 build; both are run), the same loop order over tiles,
// the same zero-filled tail tile and masks, the same base-2 exponentials and per-tile rescaling, and the
// same backward formulas (P recomputed from the stored lse, D from O, the scale applied at the end).
// Only the tensor-core matmuls are replaced by float loops; what the GPU check (dev/cuda/attention_check)
// adds on top is the fragment plumbing and bf16 rounding.
//
// Reference: naive attention in double with the full (T, T) matrix, and its analytic backward with the
// softmax term D_i = sum_j P_ij dP_ij taken from P (not from O as the kernels do), so the two sides share
// no shortcut. Tolerance: max |emulation - reference| <= 1e-5 * max |reference| for each tensor (out, dq,
// dk, dv; lse absolute 1e-5 * max(1, max|lse|)). The emulation sums at most T = 256 fp32 products per
// element plus a softmax, so its error is a few fp32 roundings (6e-8 each) times sqrt(T) or so, ~1e-6;
// a wrong mask, a missing tile or a skipped rescale gives errors of order 1.
// Mutation checks: the same emulation with the online-softmax rescaling skipped, and with D left out of
// dS, must FAIL the comparison; this proves the comparison is able to catch a broken algorithm.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "llmc/rand.h"

namespace {

struct Shape {
    int B, NH, T, HS;
};

// what the emulation leaves out on purpose (mutation checks)
struct Mutation {
    bool skip_rescale = false; // online softmax without multiplying l and o by alpha = exp(m - m_new)
    bool skip_d = false;       // dS = P * dP instead of P * (dP - D)
};

const float LOG2E = 1.4426950408889634f;
const float LN2 = 0.6931471805599453f;

struct Grads {
    std::vector<double> out, lse, dqkv;
};

// ---------------------------------------------------------------------------------------------------
// reference: naive causal attention in double, full matrix per (b, h)

Grads reference(const std::vector<float>& qkv, const std::vector<float>& dout, Shape s) {
    const int B = s.B, NH = s.NH, T = s.T, HS = s.HS, C = NH * HS;
    const double scale = 1.0 / std::sqrt((double)HS);
    Grads g;
    g.out.assign((size_t)B * T * C, 0.0);
    g.lse.assign((size_t)B * NH * T, 0.0);
    g.dqkv.assign((size_t)B * T * 3 * C, 0.0);
    std::vector<double> P((size_t)T * T), dP((size_t)T * T);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            auto q = [&](int t, int d) { return (double)qkv[((size_t)b * T + t) * 3 * C + h * HS + d]; };
            auto k = [&](int t, int d) { return (double)qkv[((size_t)b * T + t) * 3 * C + C + h * HS + d]; };
            auto v = [&](int t, int d) {
                return (double)qkv[((size_t)b * T + t) * 3 * C + 2 * C + h * HS + d];
            };
            auto dO = [&](int t, int d) { return (double)dout[((size_t)b * T + t) * C + h * HS + d]; };
            for (int i = 0; i < T; i++) {
                double mx = -INFINITY;
                for (int j = 0; j <= i; j++) {
                    double dot = 0;
                    for (int d = 0; d < HS; d++) dot += q(i, d) * k(j, d);
                    P[(size_t)i * T + j] = dot * scale;
                    mx = std::fmax(mx, dot * scale);
                }
                double sum = 0;
                for (int j = 0; j <= i; j++) sum += std::exp(P[(size_t)i * T + j] - mx);
                for (int j = 0; j < T; j++)
                    P[(size_t)i * T + j] = j <= i ? std::exp(P[(size_t)i * T + j] - mx) / sum : 0;
                g.lse[((size_t)b * NH + h) * T + i] = mx + std::log(sum);
                for (int d = 0; d < HS; d++) {
                    double o = 0;
                    for (int j = 0; j <= i; j++) o += P[(size_t)i * T + j] * v(j, d);
                    g.out[((size_t)b * T + i) * C + h * HS + d] = o;
                }
            }
            // backward: dP = dO V^T, D_i = sum_j P_ij dP_ij, dS = P (dP - D)
            for (int i = 0; i < T; i++) {
                double Di = 0;
                for (int j = 0; j <= i; j++) {
                    double dot = 0;
                    for (int d = 0; d < HS; d++) dot += dO(i, d) * v(j, d);
                    dP[(size_t)i * T + j] = dot;
                    Di += P[(size_t)i * T + j] * dot;
                }
                for (int j = 0; j <= i; j++)
                    dP[(size_t)i * T + j] = P[(size_t)i * T + j] * (dP[(size_t)i * T + j] - Di);
            }
            for (int i = 0; i < T; i++) {
                double* dq = &g.dqkv[((size_t)b * T + i) * 3 * C + h * HS];
                double* dk = dq + C;
                double* dv = dq + 2 * C;
                for (int d = 0; d < HS; d++) {
                    double aq = 0, ak = 0, av = 0;
                    for (int j = 0; j <= i; j++) aq += dP[(size_t)i * T + j] * k(j, d);
                    for (int j = i; j < T; j++) {
                        ak += dP[(size_t)j * T + i] * q(j, d);
                        av += P[(size_t)j * T + i] * dO(j, d);
                    }
                    dq[d] = aq * scale;
                    dk[d] = ak * scale;
                    dv[d] = av;
                }
            }
        }
    }
    return g;
}

// ---------------------------------------------------------------------------------------------------
// emulation of the kernels, in float

// One head's (T, HS) slice as the kernels see it in shared memory: n_tiles * TILE rows, zero past T.
std::vector<float> padded_slice(const float* base, size_t stride, int T, int HS, int rows) {
    std::vector<float> x((size_t)rows * HS, 0.f);
    for (int t = 0; t < T; t++)
        for (int d = 0; d < HS; d++) x[(size_t)t * HS + d] = base[(size_t)t * stride + d];
    return x;
}

float dot(const float* a, const float* b, int n) {
    float s = 0.f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

// attention_forward_kernel: one "block" per (b, h, query tile); key tiles 0..qt in ascending order
void emu_forward(std::vector<float>& out, std::vector<float>& lse, const std::vector<float>& qkv, Shape s,
                 int TILE, Mutation mut) {
    const int B = s.B, NH = s.NH, T = s.T, HS = s.HS, C = NH * HS;
    const int n_tiles = (T + TILE - 1) / TILE, rows = n_tiles * TILE;
    const float scale_log2 = LOG2E / std::sqrt((float)HS);
    out.assign((size_t)B * T * C, 0.f);
    lse.assign((size_t)B * NH * T, 0.f);
    std::vector<float> S(TILE), o((size_t)TILE * HS);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const float* base = &qkv[(size_t)b * T * 3 * C + h * HS];
            const std::vector<float> Q = padded_slice(base, 3 * C, T, HS, rows);
            const std::vector<float> K = padded_slice(base + C, 3 * C, T, HS, rows);
            const std::vector<float> V = padded_slice(base + 2 * C, 3 * C, T, HS, rows);
            for (int qt = 0; qt < n_tiles; qt++) {
                const int q0 = qt * TILE;
                std::vector<float> m(TILE, -INFINITY), l(TILE, 0.f);
                std::fill(o.begin(), o.end(), 0.f);
                for (int kt = 0; kt <= qt; kt++) {
                    const int k0 = kt * TILE;
                    for (int r = 0; r < TILE; r++) {
                        const int q = q0 + r;
                        float mx = -INFINITY;
                        for (int c = 0; c < TILE; c++) {
                            S[c] = (k0 + c <= q)
                                       ? dot(&Q[(size_t)q * HS], &K[(size_t)(k0 + c) * HS], HS) * scale_log2
                                       : -INFINITY;
                            mx = std::fmax(mx, S[c]);
                        }
                        const float m_new = std::fmax(m[r], mx);
                        const float alpha = mut.skip_rescale ? 1.f : std::exp2(m[r] - m_new);
                        float sum = 0.f;
                        for (int c = 0; c < TILE; c++) {
                            S[c] = std::exp2(S[c] - m_new); // P
                            sum += S[c];
                        }
                        l[r] = alpha * l[r] + sum;
                        m[r] = m_new;
                        for (int d = 0; d < HS; d++) {
                            float acc = o[(size_t)r * HS + d] * alpha;
                            for (int c = 0; c < TILE; c++) acc += S[c] * V[(size_t)(k0 + c) * HS + d];
                            o[(size_t)r * HS + d] = acc;
                        }
                    }
                }
                for (int r = 0; r < TILE && q0 + r < T; r++) {
                    const int q = q0 + r;
                    for (int d = 0; d < HS; d++)
                        out[((size_t)b * T + q) * C + h * HS + d] = o[(size_t)r * HS + d] / l[r];
                    lse[((size_t)b * NH + h) * T + q] = (m[r] + std::log2(l[r])) * LN2;
                }
            }
        }
    }
}

// attention_backward: D pass, dK/dV pass per key tile, dQ pass per query tile
void emu_backward(std::vector<float>& dqkv, const std::vector<float>& dout, const std::vector<float>& qkv,
                  const std::vector<float>& out, const std::vector<float>& lse, Shape s, int TILE,
                  Mutation mut) {
    const int B = s.B, NH = s.NH, T = s.T, HS = s.HS, C = NH * HS;
    const int n_tiles = (T + TILE - 1) / TILE, rows = n_tiles * TILE;
    const float scale = 1.f / std::sqrt((float)HS);
    const float scale_log2 = LOG2E * scale;
    dqkv.assign((size_t)B * T * 3 * C, 0.f);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const float* base = &qkv[(size_t)b * T * 3 * C + h * HS];
            const std::vector<float> Q = padded_slice(base, 3 * C, T, HS, rows);
            const std::vector<float> K = padded_slice(base + C, 3 * C, T, HS, rows);
            const std::vector<float> V = padded_slice(base + 2 * C, 3 * C, T, HS, rows);
            const std::vector<float> dO = padded_slice(&dout[(size_t)b * T * C + h * HS], C, T, HS, rows);
            // pass 1, and the row statistics as the kernels stage them: lse * log2(e) and D, 0 past T
            std::vector<float> lse2(rows, 0.f), D(rows, 0.f);
            for (int t = 0; t < T; t++) {
                lse2[t] = lse[((size_t)b * NH + h) * T + t] * LOG2E;
                float sum = 0.f;
                for (int d = 0; d < HS; d++)
                    sum += dout[((size_t)b * T + t) * C + h * HS + d] *
                           out[((size_t)b * T + t) * C + h * HS + d];
                D[t] = mut.skip_d ? 0.f : sum;
            }
            // pass 2: dK, dV of key tile kt from query tiles kt, kt+1, ...
            std::vector<float> dk((size_t)TILE * HS), dv((size_t)TILE * HS), P(TILE), dS(TILE);
            for (int kt = 0; kt < n_tiles; kt++) {
                const int k0 = kt * TILE;
                std::fill(dk.begin(), dk.end(), 0.f);
                std::fill(dv.begin(), dv.end(), 0.f);
                for (int qt = kt; qt < n_tiles; qt++) {
                    const int q0 = qt * TILE;
                    for (int r = 0; r < TILE; r++) {
                        const int k = k0 + r;
                        for (int c = 0; c < TILE; c++) {
                            const int q = q0 + c;
                            const bool valid = q >= k && q < T;
                            const float sT = dot(&K[(size_t)k * HS], &Q[(size_t)q * HS], HS);
                            const float dpT = dot(&V[(size_t)k * HS], &dO[(size_t)q * HS], HS);
                            P[c] = valid ? std::exp2(sT * scale_log2 - lse2[q]) : 0.f;
                            dS[c] = valid ? P[c] * (dpT - D[q]) : 0.f;
                        }
                        for (int d = 0; d < HS; d++) {
                            float av = dv[(size_t)r * HS + d], ak = dk[(size_t)r * HS + d];
                            for (int c = 0; c < TILE; c++) {
                                av += P[c] * dO[(size_t)(q0 + c) * HS + d];
                                ak += dS[c] * Q[(size_t)(q0 + c) * HS + d];
                            }
                            dv[(size_t)r * HS + d] = av;
                            dk[(size_t)r * HS + d] = ak;
                        }
                    }
                }
                for (int r = 0; r < TILE && k0 + r < T; r++) {
                    float* g = &dqkv[((size_t)b * T + k0 + r) * 3 * C + C + h * HS];
                    for (int d = 0; d < HS; d++) {
                        g[d] = dk[(size_t)r * HS + d] * scale;
                        g[C + d] = dv[(size_t)r * HS + d];
                    }
                }
            }
            // pass 3: dQ of query tile qt from key tiles 0..qt
            std::vector<float> dq((size_t)TILE * HS);
            for (int qt = 0; qt < n_tiles; qt++) {
                const int q0 = qt * TILE;
                std::fill(dq.begin(), dq.end(), 0.f);
                for (int kt = 0; kt <= qt; kt++) {
                    const int k0 = kt * TILE;
                    for (int r = 0; r < TILE; r++) {
                        const int q = q0 + r;
                        for (int c = 0; c < TILE; c++) {
                            const bool valid = k0 + c <= q;
                            const float sv = dot(&Q[(size_t)q * HS], &K[(size_t)(k0 + c) * HS], HS);
                            const float dp = dot(&dO[(size_t)q * HS], &V[(size_t)(k0 + c) * HS], HS);
                            const float p = valid ? std::exp2(sv * scale_log2 - lse2[q]) : 0.f;
                            dS[c] = valid ? p * (dp - D[q]) : 0.f;
                        }
                        for (int d = 0; d < HS; d++) {
                            float a = dq[(size_t)r * HS + d];
                            for (int c = 0; c < TILE; c++) a += dS[c] * K[(size_t)(k0 + c) * HS + d];
                            dq[(size_t)r * HS + d] = a;
                        }
                    }
                }
                for (int r = 0; r < TILE && q0 + r < T; r++) {
                    float* g = &dqkv[((size_t)b * T + q0 + r) * 3 * C + h * HS];
                    for (int d = 0; d < HS; d++) g[d] = dq[(size_t)r * HS + d] * scale;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// comparison

// max |got - ref| / max(floor, max |ref|) over the elements selected by pick(i); NaN counts as failure.
// A reference that is exactly zero everywhere (dq and dk for T = 1: a single key gets softmax weight 1
// whatever its score) is compared in absolute terms.
template <class Pick>
double rel_err(const std::vector<float>& got, const std::vector<double>& ref, double floor, Pick pick) {
    double max_ref = floor, max_err = 0.0;
    for (size_t i = 0; i < ref.size(); i++) {
        if (!pick(i)) continue;
        max_ref = std::fmax(max_ref, std::fabs(ref[i]));
        const double e = std::fabs((double)got[i] - ref[i]);
        if (!(e <= max_err)) max_err = std::isnan(e) ? INFINITY : e;
    }
    return max_err / (max_ref > 0.0 ? max_ref : 1.0);
}

const double TOL = 1e-5;

// Runs emulation vs reference for one shape and tile; prints one line; returns whether all tensors pass.
bool check(Shape s, int TILE, Mutation mut, bool verbose) {
    const int C = s.NH * s.HS;
    Rng rng;
    rng_init(&rng, 1000003ull * s.T + 1009 * s.NH + 17 * s.HS + s.B);
    std::vector<float> qkv((size_t)s.B * s.T * 3 * C), dout((size_t)s.B * s.T * C);
    // q and k a little wider than N(0, 1) so the scaled scores have a spread of ~2 and the running max
    // of the online softmax changes from tile to tile
    for (size_t i = 0; i < qkv.size(); i++) {
        const bool is_v = (i % (3 * C)) >= (size_t)2 * C;
        qkv[i] = rng_normal(&rng, 0.0f, is_v ? 1.0f : 1.5f);
    }
    for (float& x : dout) x = rng_normal(&rng, 0.0f, 1.0f);

    const Grads ref = reference(qkv, dout, s);
    std::vector<float> out, lse, dqkv;
    emu_forward(out, lse, qkv, s, TILE, mut);
    emu_backward(dqkv, dout, qkv, out, lse, s, TILE, mut);

    auto all = [](size_t) { return true; };
    auto part = [C](int which) { return [C, which](size_t i) { return (int)((i % (3 * C)) / C) == which; }; };
    const double e_out = rel_err(out, ref.out, 0.0, all);
    const double e_lse = rel_err(lse, ref.lse, 1.0, all);
    const double e_dq = rel_err(dqkv, ref.dqkv, 0.0, part(0));
    const double e_dk = rel_err(dqkv, ref.dqkv, 0.0, part(1));
    const double e_dv = rel_err(dqkv, ref.dqkv, 0.0, part(2));
    const bool ok = e_out <= TOL && e_lse <= TOL && e_dq <= TOL && e_dk <= TOL && e_dv <= TOL;
    if (verbose) {
        printf("  B=%d NH=%d T=%4d HS=%3d tile=%d: rel err out %.1e lse %.1e dq %.1e dk %.1e dv %.1e  %s\n",
               s.B, s.NH, s.T, s.HS, TILE, e_out, e_lse, e_dq, e_dk, e_dv, ok ? "ok" : "FAIL");
    }
    return ok;
}

} // namespace

int main() {
    printf("flash attention tiling (CPU emulation, float) vs naive double attention, tolerance %.0e\n", TOL);
    const Shape shapes[] = {
        {2, 2, 256, 64}, // several full tiles
        {1, 3, 200, 64}, // T not a multiple of either tile: masked tail tile
        {1, 1, 192, 128}, {1, 2, 77, 128}, {1, 1, 64, 64}, // exactly one tile of 64
        {2, 1, 1, 64},                                     // a single token
    };
    int failures = 0;
    for (int tile : {64, 32}) {
        for (const Shape& s : shapes) failures += !check(s, tile, Mutation{}, true);
    }

    printf("mutation checks (each must FAIL the comparison):\n");
    Mutation no_rescale;
    no_rescale.skip_rescale = true;
    Mutation no_d;
    no_d.skip_d = true;
    const Shape ms = {1, 2, 256, 64};
    for (int tile : {64, 32}) {
        const bool rescale_caught = !check(ms, tile, no_rescale, true);
        printf("  online softmax without rescaling, tile %d: %s\n", tile,
               rescale_caught ? "caught" : "NOT CAUGHT");
        const bool d_caught = !check(ms, tile, no_d, true);
        printf("  dS without the D term, tile %d: %s\n", tile, d_caught ? "caught" : "NOT CAUGHT");
        failures += !rescale_caught + !d_caught;
    }
    printf("%s: %d failure(s)\n", failures == 0 ? "PASS" : "FAIL", failures);
    return failures == 0 ? 0 : 1;
}
