// matmul_check.cu: matmul_forward / matmul_backward (llmc/matmul.cuh, cuBLASLt) against a double CPU
// reference, including the GELU epilogues (the backward's DGELU; the forward's GELU_AUX through
// dev/cuda/matmul_gelu_forward.cuh, the fusion the trainer does not use), the accumulation into
// dweight/dbias and the bias gradient. Tolerances, per element, for a dot product of length k:
//   fp32 accumulation of exact products: worst case k * 2^-24 * sum |terms|;
//   one rounding of the output to floatX: FLOATX_EPS |ref|;
//   GELU epilogues: the pre-activation error times |gelu'|, plus one more FLOATX_EPS |ref| (the result
//   may be computed from the rounded pre-activation, or in the fallback from a rounded matmul result),
//   plus the error of the GELU's own tanh (gelu_tanh_error below):
//     this project's kernels (llmc/gelu.cuh, fp32 tanhf, a few ulp): 1e-6 relative;
//     cuBLASLt's GELU / DGELU epilogues: cuBLAS documents neither their formula nor their accuracy, so the
//     bound assumes the fastest tanh the hardware has, tanh.approx.f32, whose relative error the PTX ISA
//     bounds by about 2^-11 (we take e = 2^-10, for the fp32 operations around it). With t = tanh(u),
//     u = sqrt(2/pi) (x + 0.044715 x^3) and the computed tanh t (1 + d), |d| <= e:
//       gelu  = x (1 + t) / 2                      error <= |x| |t| e / 2
//       gelu' = (1 + t) / 2 + x (1 - t^2) u' / 2   error <= |t| e (1/2 + |x t u'|)
//     That is still tight enough to catch a wrong formula (a dropped term, a wrong constant: errors of
//     1e-2 and more at |x| ~ 1), though not the erf form of GELU, within 8.7e-4 of the tanh form's gelu'.
//   The epilogue bound applies where MatmulContext::fuse_gelu lets cuBLASLt compute the GELU.
// In the FP32 build FLOATX_EPS = 2^-24 and the bound is tight (TF32 would fail it: 2^-11 per product).
// Backward runs twice from the same state and must be bit-identical. Timing in TFLOP/s.
// Build: make dev/cuda/matmul_check [PRECISION=FP32]; run: ./dev/cuda/matmul_check
#include "dev/cuda/check_common.h"
#include "dev/cuda/matmul_gelu_forward.cuh"
#include "llmc/matmul.cuh"

// Bound on the error of the GELU (derivative = false) or of its derivative at x that comes from the tanh
// alone: 1e-6 relative for this project's kernels, tanh.approx.f32's for a cuBLASLt epilogue (the
// comment at the top).
static double gelu_tanh_error(const MatmulContext* ctx, double x, bool derivative) {
    if (!ctx->fuse_gelu) {
        return 1e-6 * std::max(1.0, std::fabs(x));
    }
    const double s = std::sqrt(2.0 / 3.14159265358979323846);
    const double t = std::fabs(std::tanh(s * (x + 0.044715 * x * x * x)));
    const double du = s * (1.0 + 3.0 * 0.044715 * x * x);
    const double e = 0x1p-10; // twice the PTX bound: margin for the fp32 operations around the tanh
    return derivative ? t * e * (0.5 + std::fabs(x) * t * du) : 0.5 * std::fabs(x) * t * e;
}

static void check_forward(MatmulContext* ctx, int BT, int C, int OC, bool has_bias, bool gelu,
                          std::mt19937& rng) {
    printf("--- matmul_forward BT=%d C=%d OC=%d bias=%d gelu=%d\n", BT, C, OC, has_bias, gelu);
    std::vector<float> inp = random_floatX_values((size_t)BT * C, rng, 1.0f);
    std::vector<float> weight = random_floatX_values((size_t)OC * C, rng, 1.0f / std::sqrt((float)C));
    std::vector<float> bias = random_floatX_values(OC, rng, 0.5f);
    floatX* d_inp = upload_floatX(inp);
    floatX* d_weight = upload_floatX(weight);
    floatX* d_bias = has_bias ? upload_floatX(bias) : nullptr;
    floatX* d_out = device_alloc<floatX>((size_t)BT * OC);
    floatX* d_pre = gelu ? device_alloc<floatX>((size_t)BT * OC) : nullptr;

    poison(d_out, (size_t)BT * OC * sizeof(floatX));
    if (gelu) poison(d_pre, (size_t)BT * OC * sizeof(floatX));
    if (gelu) {
        matmul_forward_gelu(ctx, d_out, d_pre, d_inp, d_weight, d_bias, BT, C, OC, 0);
    } else {
        matmul_forward(ctx, d_out, d_inp, d_weight, d_bias, BT, C, OC, 0);
    }

    const size_t n = (size_t)BT * OC;
    std::vector<double> pre(n), pre_tol(n), out(n), out_tol(n);
    for (int bt = 0; bt < BT; bt++) {
        for (int oc = 0; oc < OC; oc++) {
            double acc = has_bias ? bias[oc] : 0.0, abs_sum = has_bias ? std::fabs(bias[oc]) : 0.0;
            for (int c = 0; c < C; c++) {
                double p = (double)inp[(size_t)bt * C + c] * weight[(size_t)oc * C + c];
                acc += p;
                abs_sum += std::fabs(p);
            }
            size_t i = (size_t)bt * OC + oc;
            pre[i] = acc;
            pre_tol[i] = FLOATX_EPS * std::fabs(acc) + (C + 1) * FP32_EPS * abs_sum;
            if (gelu) {
                out[i] = gelu_ref(acc);
                out_tol[i] = FLOATX_EPS * std::fabs(out[i]) +
                             std::fabs(gelu_grad_ref(acc)) * pre_tol[i] * 1.1 +
                             gelu_tanh_error(ctx, acc, false);
            } else {
                out[i] = acc;
                out_tol[i] = pre_tol[i];
            }
        }
    }
    check_close(gelu ? "matmul_forward out = gelu(inp W^T + b)" : "matmul_forward out = inp W^T + b",
                download_floatX(d_out, n), out, out_tol);
    if (gelu) check_close("matmul_forward pre_gelu = inp W^T + b", download_floatX(d_pre, n), pre, pre_tol);

    cudaCheck(cudaFree(d_inp));
    cudaCheck(cudaFree(d_weight));
    if (d_bias) cudaCheck(cudaFree(d_bias));
    cudaCheck(cudaFree(d_out));
    if (d_pre) cudaCheck(cudaFree(d_pre));
}

static void check_backward(MatmulContext* ctx, int BT, int C, int OC, bool has_bias, bool gelu,
                           std::mt19937& rng) {
    printf("--- matmul_backward BT=%d C=%d OC=%d bias=%d pre_gelu=%d\n", BT, C, OC, has_bias, gelu);
    std::vector<float> inp = random_floatX_values((size_t)BT * C, rng, 1.0f);
    std::vector<float> weight = random_floatX_values((size_t)OC * C, rng, 1.0f / std::sqrt((float)C));
    std::vector<float> dout = random_floatX_values((size_t)BT * OC, rng, 1.0f);
    std::vector<float> pre = random_floatX_values((size_t)BT * C, rng, 2.0f);
    std::vector<float> dweight0 = random_floatX_values((size_t)OC * C, rng, 1.0f);
    std::vector<float> dbias0 = random_floatX_values(OC, rng, 1.0f);
    floatX* d_inp = upload_floatX(inp);
    floatX* d_weight = upload_floatX(weight);
    floatX* d_dout = upload_floatX(dout);
    floatX* d_pre = gelu ? upload_floatX(pre) : nullptr;
    floatX* d_dinp = device_alloc<floatX>((size_t)BT * C);
    floatX* d_dweight = device_alloc<floatX>((size_t)OC * C);
    floatX* d_dbias = has_bias ? device_alloc<floatX>(OC) : nullptr;
    float* d_scratch = device_alloc<float>(matmul_dbias_scratch_bytes(BT, OC) / sizeof(float));

    // dinp = dout W [* gelu'(pre)]
    std::vector<double> dinp((size_t)BT * C), dinp_tol((size_t)BT * C);
    {
        std::vector<double> acc(C), abs_sum(C);
        for (int bt = 0; bt < BT; bt++) {
            std::fill(acc.begin(), acc.end(), 0.0);
            std::fill(abs_sum.begin(), abs_sum.end(), 0.0);
            for (int oc = 0; oc < OC; oc++) {
                double d = dout[(size_t)bt * OC + oc];
                const float* w = weight.data() + (size_t)oc * C;
                for (int c = 0; c < C; c++) {
                    acc[c] += d * w[c];
                    abs_sum[c] += std::fabs(d * w[c]);
                }
            }
            for (int c = 0; c < C; c++) {
                size_t i = (size_t)bt * C + c;
                double matmul_tol = FLOATX_EPS * std::fabs(acc[c]) + OC * FP32_EPS * abs_sum[c];
                if (gelu) {
                    double g = gelu_grad_ref(pre[i]);
                    dinp[i] = acc[c] * g;
                    dinp_tol[i] = FLOATX_EPS * std::fabs(dinp[i]) + std::fabs(g) * matmul_tol +
                                  std::fabs(acc[c]) * gelu_tanh_error(ctx, pre[i], true);
                } else {
                    dinp[i] = acc[c];
                    dinp_tol[i] = matmul_tol;
                }
            }
        }
    }
    // dweight = dweight0 + dout^T inp, dbias = dbias0 + column sums of dout
    std::vector<double> dw(dweight0.begin(), dweight0.end()), dw_abs((size_t)OC * C, 0.0);
    std::vector<double> db(dbias0.begin(), dbias0.end()), db_abs(OC, 0.0);
    for (int bt = 0; bt < BT; bt++) {
        const float* x = inp.data() + (size_t)bt * C;
        for (int oc = 0; oc < OC; oc++) {
            double d = dout[(size_t)bt * OC + oc];
            db[oc] += d;
            db_abs[oc] += std::fabs(d);
            double* row = dw.data() + (size_t)oc * C;
            double* row_abs = dw_abs.data() + (size_t)oc * C;
            for (int c = 0; c < C; c++) {
                row[c] += d * x[c];
                row_abs[c] += std::fabs(d * x[c]);
            }
        }
    }
    std::vector<double> dw_tol((size_t)OC * C), db_tol(OC);
    for (size_t i = 0; i < dw.size(); i++) {
        dw_tol[i] =
            FLOATX_EPS * std::fabs(dw[i]) + (BT + 1) * FP32_EPS * (dw_abs[i] + std::fabs(dweight0[i]));
    }
    const double bias_length = MATMUL_DBIAS_ROWS_PER_PARTIAL + matmul_dbias_num_partials(BT) + 1;
    for (int oc = 0; oc < OC; oc++) {
        db_tol[oc] =
            FLOATX_EPS * std::fabs(db[oc]) + bias_length * FP32_EPS * (db_abs[oc] + std::fabs(dbias0[oc]));
    }

    std::vector<floatX> dinp_bits[2], dw_bits[2], db_bits[2];
    for (int run = 0; run < 2; run++) {
        poison(d_dinp, (size_t)BT * C * sizeof(floatX));
        upload(d_dweight, to_floatX(dweight0));
        if (has_bias) upload(d_dbias, to_floatX(dbias0));
        matmul_backward(ctx, d_dinp, d_dweight, d_dbias, d_dout, d_inp, d_weight, BT, C, OC, d_pre, d_scratch,
                        0);
        dinp_bits[run] = download(d_dinp, (size_t)BT * C);
        dw_bits[run] = download(d_dweight, (size_t)OC * C);
        if (has_bias) db_bits[run] = download(d_dbias, OC);
    }
    check_close(gelu ? "matmul_backward dinp = (dout W) * gelu'(pre_gelu)" : "matmul_backward dinp = dout W",
                to_float(dinp_bits[0]), dinp, dinp_tol);
    check_close("matmul_backward dweight += dout^T inp", to_float(dw_bits[0]), dw, dw_tol);
    if (has_bias)
        check_close("matmul_backward dbias += column sums of dout", to_float(db_bits[0]), db, db_tol);
    check_identical("matmul_backward dinp bit-identical across two runs", dinp_bits[0], dinp_bits[1]);
    check_identical("matmul_backward dweight bit-identical across two runs", dw_bits[0], dw_bits[1]);
    if (has_bias)
        check_identical("matmul_backward dbias bit-identical across two runs", db_bits[0], db_bits[1]);

    cudaCheck(cudaFree(d_inp));
    cudaCheck(cudaFree(d_weight));
    cudaCheck(cudaFree(d_dout));
    if (d_pre) cudaCheck(cudaFree(d_pre));
    cudaCheck(cudaFree(d_dinp));
    cudaCheck(cudaFree(d_dweight));
    if (d_dbias) cudaCheck(cudaFree(d_dbias));
    cudaCheck(cudaFree(d_scratch));
}

// GPT-2 small shapes at B*T = 8*1024, inputs uninitialised (timing only)
static void time_shape(MatmulContext* ctx, const char* name, int BT, int C, int OC, bool has_bias,
                       bool fwd_gelu, bool bwd_dgelu) {
    floatX* inp = device_alloc<floatX>((size_t)BT * C);
    floatX* weight = device_alloc<floatX>((size_t)OC * C);
    floatX* bias = device_alloc<floatX>(OC);
    floatX* out = device_alloc<floatX>((size_t)BT * OC);
    floatX* pre = device_alloc<floatX>((size_t)BT * OC);
    floatX* pre_in = device_alloc<floatX>((size_t)BT * C);
    floatX* dinp = device_alloc<floatX>((size_t)BT * C);
    floatX* dweight = device_alloc<floatX>((size_t)OC * C);
    float* scratch = device_alloc<float>(matmul_dbias_scratch_bytes(BT, OC) / sizeof(float));
    cudaCheck(cudaMemset(inp, 0, (size_t)BT * C * sizeof(floatX)));
    cudaCheck(cudaMemset(weight, 0, (size_t)OC * C * sizeof(floatX)));
    cudaCheck(cudaMemset(bias, 0, OC * sizeof(floatX)));
    cudaCheck(cudaMemset(pre_in, 0, (size_t)BT * C * sizeof(floatX)));
    cudaCheck(cudaMemset(out, 0, (size_t)BT * OC * sizeof(floatX)));
    cudaCheck(cudaMemset(dweight, 0, (size_t)OC * C * sizeof(floatX)));
    floatX* b = has_bias ? bias : nullptr;
    const double flops = 2.0 * BT * C * OC;
    float ms = median_ms([&] {
        if (fwd_gelu) {
            matmul_forward_gelu(ctx, out, pre, inp, weight, b, BT, C, OC, 0);
        } else {
            matmul_forward(ctx, out, inp, weight, b, BT, C, OC, 0);
        }
    });
    printf("time %-40s forward  %8.3f ms  %6.1f TFLOP/s\n", name, ms, flops / (ms * 1e-3) / 1e12);
    ms = median_ms([&] {
        matmul_backward(ctx, dinp, dweight, b, out, inp, weight, BT, C, OC, bwd_dgelu ? pre_in : nullptr,
                        scratch, 0);
    });
    printf("time %-40s backward %8.3f ms  %6.1f TFLOP/s\n", name, ms, 2 * flops / (ms * 1e-3) / 1e12);
    cudaCheck(cudaFree(inp));
    cudaCheck(cudaFree(weight));
    cudaCheck(cudaFree(bias));
    cudaCheck(cudaFree(out));
    cudaCheck(cudaFree(pre));
    cudaCheck(cudaFree(pre_in));
    cudaCheck(cudaFree(dinp));
    cudaCheck(cudaFree(dweight));
    cudaCheck(cudaFree(scratch));
}

int main() {
    print_device();
    std::mt19937 rng(2718);
    MatmulContext ctx;
    matmul_context_init(&ctx);

    // GPT-2 small's widths: C = 768, fc 4C = 3072, qkv 3C = 2304, padded vocabulary 50304. On the
    // emulator cuBLASLt is computed on the host (a few 1e8 multiply-adds a second), so C, 4C and the
    // classifier's rows shrink; the row counts with a bias (200 rows: 3 bias-gradient slices and a
    // partial one), the qkv bias width (2304 columns: 3 blocks of bias partials, the last one partial)
    // and the vocabulary stay.
    const int C = ON_EMULATOR ? 64 : 768, FC = ON_EMULATOR ? 256 : 3072, QKV = 2304, Vp = 50304;
    const int BT_LM = ON_EMULATOR ? 16 : 32;
    // the separate-kernel GELU path first (what runs when cuBLASLt has no fused algorithm), then fused
    ctx.fuse_gelu = false;
    printf("=== GELU as separate kernels (MatmulContext::fuse_gelu = false)\n");
    check_forward(&ctx, 200, C, FC, true, true, rng);
    check_backward(&ctx, 128, FC, C, true, true, rng);
    ctx.fuse_gelu = true;
    printf("=== GELU fused into cuBLASLt epilogues where cuBLASLt has an algorithm\n");
    check_forward(&ctx, 64, 64, 192, true, false, rng);
    check_forward(&ctx, 64, 64, 192, false, true, rng);
    check_forward(&ctx, 200, C, FC, true, true, rng); // fc: bias + GELU epilogue
    check_forward(&ctx, 128, FC, C, true, false, rng);
    check_forward(&ctx, BT_LM, C, Vp, false, false, rng); // classifier: no bias
    check_backward(&ctx, 64, 64, 192, true, false, rng);
    check_backward(&ctx, 200, C, QKV, true, false, rng); // qkv; BT not a multiple of the bias slices
    check_backward(&ctx, 128, FC, C, true, true, rng);   // fc_proj: dinp fused with the GELU backward
    check_backward(&ctx, BT_LM, C, Vp, false, false, rng);

    if (timing_enabled()) {
        const int BT = 8 * 1024;
        time_shape(&ctx, "qkv     (8192, 768 -> 2304)", BT, 768, 2304, true, false, false);
        time_shape(&ctx, "fc+gelu (8192, 768 -> 3072)", BT, 768, 3072, true, true, false);
        time_shape(&ctx, "fc_proj (8192, 3072 -> 768) dgelu", BT, 3072, 768, true, false, true);
        time_shape(&ctx, "lm_head (8192, 768 -> 50304)", BT, 768, 50304, false, false, false);
    }
    printf("matmul cache: %d plans\n", ctx.num_plans);
    for (int i = 0; i < ctx.num_plans; i++) {
        const MatmulPlan& p = ctx.plans[i];
        if (matmul_epilogue_has_aux(p.key.epilogue)) {
            printf("     GELU epilogue %d, m=%d n=%d k=%d: %s\n", (int)p.key.epilogue, p.key.m, p.key.n,
                   p.key.k,
                   p.has_algo ? "fused in cuBLASLt" : "no cuBLASLt algorithm, separate GELU kernel used");
        }
    }
    matmul_context_free(&ctx);
    return finish("matmul_check");
}
