// layernorm_check.cu: layernorm_forward, fused_residual_layernorm_forward, residual_forward and
// layernorm_backward (llmc/layernorm.cuh) against the double reference (layernorm_forward_ref /
// layernorm_backward_ref). Tolerances:
//   residual_out (and residual_forward's out): the GPU adds two floatX values in fp32 (exact) and rounds
//   once, like the host's
//                 round_floatX(a + b): must be bit-equal (tol 0).
//   mean, rstd:   fp32 sums of C terms: C * 2^-24 * (sum |x| / C) for the mean, relative 4 C 2^-24 for rstd.
//   ln_out:       one floatX rounding (FLOATX_EPS |ref|) plus the fp32 statistics' error carried through
//                 |w xhat| (4 C 2^-24 |w xhat| + C 2^-24 * max|x| * rstd |w|).
//   dinp:         added into a random dinp: FLOATX_EPS |ref| plus 8 C 2^-24 times the row's largest term.
//   dw, db:       column sums over N rows, two levels (32 rows, then N/32 slices):
//                 (32 + N/32) 2^-24 sum|terms|, plus FLOATX_EPS |ref| for the final rounding.
// Backward runs twice from the same state and must be bit-identical. Timing: GB/s counting each tensor
// read or written once, against the measured device copy bandwidth.
// Build: make dev/cuda/layernorm_check [PRECISION=FP32]; run: ./dev/cuda/layernorm_check
#include "dev/cuda/check_common.h"
#include "llmc/layernorm.cuh"

static void check_shape(int B, int T, int C, std::mt19937& rng, bool time_it) {
    printf("--- layernorm B=%d T=%d C=%d\n", B, T, C);
    const int N = B * T;
    const size_t NC = (size_t)N * C;
    std::vector<float> inp1 = random_floatX_values(NC, rng, 1.0f);
    std::vector<float> inp2 = random_floatX_values(NC, rng, 0.5f);
    for (size_t i = 0; i < NC; i++) inp1[i] = round_floatX(inp1[i] + 0.3f); // a non-zero mean
    std::vector<float> weight = random_floatX_values(C, rng, 0.2f);
    for (int c = 0; c < C; c++) weight[c] = round_floatX(weight[c] + 1.0f);
    std::vector<float> bias = random_floatX_values(C, rng, 0.1f);
    std::vector<float> dout = random_floatX_values(NC, rng, 1.0f);
    std::vector<float> dinp0 = random_floatX_values(NC, rng, 0.5f);
    std::vector<float> dweight0 = random_floatX_values(C, rng, 0.5f);
    std::vector<float> dbias0 = random_floatX_values(C, rng, 0.5f);

    floatX* d_inp1 = upload_floatX(inp1);
    floatX* d_inp2 = upload_floatX(inp2);
    floatX* d_weight = upload_floatX(weight);
    floatX* d_bias = upload_floatX(bias);
    floatX* d_dout = upload_floatX(dout);
    floatX* d_residual = device_alloc<floatX>(NC);
    floatX* d_out = device_alloc<floatX>(NC);
    floatX* d_dinp = device_alloc<floatX>(NC);
    floatX* d_dweight = device_alloc<floatX>(C);
    floatX* d_dbias = device_alloc<floatX>(C);
    float* d_mean = device_alloc<float>(N);
    float* d_rstd = device_alloc<float>(N);
    float* d_scratch = device_alloc<float>(layernorm_backward_scratch_bytes(B, T, C) / sizeof(float));

    // reference forward of a given input (N,C)
    auto reference_forward = [&](const std::vector<float>& x, std::vector<double>& out,
                                 std::vector<double>& mean, std::vector<double>& rstd,
                                 std::vector<double>& out_tol, std::vector<double>& mean_tol) {
        out.resize(NC);
        out_tol.resize(NC);
        mean.resize(N);
        rstd.resize(N);
        mean_tol.resize(N);
        for (int n = 0; n < N; n++) {
            const float* row = x.data() + (size_t)n * C;
            layernorm_forward_ref(row, weight.data(), bias.data(), C, &out[(size_t)n * C], &mean[n],
                                  &rstd[n]);
            const double m = mean[n], s = rstd[n];
            double abs_sum = 0.0, max_x = 0.0;
            for (int c = 0; c < C; c++) {
                abs_sum += std::fabs(row[c]);
                max_x = std::max(max_x, (double)std::fabs(row[c]));
            }
            mean_tol[n] = C * FP32_EPS * abs_sum / C + FP32_EPS * std::fabs(m);
            for (int c = 0; c < C; c++) {
                const double wx = (row[c] - m) * s * weight[c];
                out_tol[(size_t)n * C + c] = FLOATX_EPS * std::fabs(out[(size_t)n * C + c]) +
                                             4.0 * C * FP32_EPS * std::fabs(wx) +
                                             C * FP32_EPS * max_x * s * std::fabs(weight[c]);
            }
        }
    };
    auto check_stats = [&](const char* what, const std::vector<double>& mean, const std::vector<double>& rstd,
                           const std::vector<double>& mean_tol) {
        std::vector<float> gm = download(d_mean, N), gs = download(d_rstd, N);
        std::vector<double> rstd_tol(N);
        for (int n = 0; n < N; n++) rstd_tol[n] = 4.0 * C * FP32_EPS * rstd[n];
        char name[128];
        snprintf(name, sizeof(name), "%s mean", what);
        check_close(name, gm, mean, mean_tol);
        snprintf(name, sizeof(name), "%s rstd", what);
        check_close(name, gs, rstd, rstd_tol);
    };

    // plain forward on inp1
    std::vector<double> ref, mean, rstd, ref_tol, mean_tol;
    reference_forward(inp1, ref, mean, rstd, ref_tol, mean_tol);
    poison(d_out, NC * sizeof(floatX));
    poison(d_mean, N * sizeof(float));
    poison(d_rstd, N * sizeof(float));
    layernorm_forward(d_out, d_mean, d_rstd, d_inp1, d_weight, d_bias, N, C, 0);
    check_close("layernorm_forward out", download_floatX(d_out, NC), ref, ref_tol);
    check_stats("layernorm_forward", mean, rstd, mean_tol);

    // fused residual forward: residual = round(inp1 + inp2), then LayerNorm of it
    std::vector<float> residual(NC);
    for (size_t i = 0; i < NC; i++) residual[i] = round_floatX(inp1[i] + inp2[i]);
    reference_forward(residual, ref, mean, rstd, ref_tol, mean_tol);
    poison(d_out, NC * sizeof(floatX));
    poison(d_residual, NC * sizeof(floatX));
    poison(d_mean, N * sizeof(float));
    poison(d_rstd, N * sizeof(float));
    fused_residual_layernorm_forward(d_residual, d_out, d_mean, d_rstd, d_inp1, d_inp2, d_weight, d_bias, N,
                                     C, 0);
    check_close("fused_residual_layernorm_forward residual_out (bit-equal)", download_floatX(d_residual, NC),
                std::vector<double>(residual.begin(), residual.end()), 0.0);
    check_close("fused_residual_layernorm_forward ln_out", download_floatX(d_out, NC), ref, ref_tol);
    check_stats("fused_residual_layernorm_forward", mean, rstd, mean_tol);
    // the residual add alone (a pipeline stage's last layer): the same bits as the fused kernel's
    poison(d_residual, NC * sizeof(floatX));
    residual_forward(d_residual, d_inp1, d_inp2, NC, 0);
    check_close("residual_forward (bit-equal)", download_floatX(d_residual, NC),
                std::vector<double>(residual.begin(), residual.end()), 0.0);

    // backward of LayerNorm(residual), with the GPU's statistics uploaded from the reference so both
    // sides use the same mean/rstd up to fp32 rounding
    std::vector<float> mean_f(mean.begin(), mean.end()), rstd_f(rstd.begin(), rstd.end());
    upload(d_mean, mean_f);
    upload(d_rstd, rstd_f);
    std::vector<double> dinp_ref(dinp0.begin(), dinp0.end()), dinp_tol(NC);
    std::vector<double> dw_ref(dweight0.begin(), dweight0.end()), db_ref(dbias0.begin(), dbias0.end());
    std::vector<double> dw_abs(C, 0.0), db_abs(C, 0.0);
    for (int n = 0; n < N; n++) {
        const size_t o = (size_t)n * C;
        const double m = mean_f[n], s = rstd_f[n];
        layernorm_backward_ref(&dout[o], &residual[o], weight.data(), m, s, C, &dinp_ref[o], dw_ref.data(),
                               db_ref.data());
        // the tolerances: the largest term of the row's sums, and the sums of |terms| of the column sums
        double max_term = 0.0;
        for (int c = 0; c < C; c++) {
            const double g = (double)dout[o + c] * weight[c], xhat = (residual[o + c] - m) * s;
            max_term = std::max(max_term, std::fabs(g) + std::fabs(g * xhat));
            dw_abs[c] += std::fabs(dout[o + c] * xhat);
            db_abs[c] += std::fabs(dout[o + c]);
        }
        for (int c = 0; c < C; c++) {
            dinp_tol[o + c] = FLOATX_EPS * std::fabs(dinp_ref[o + c]) + 8.0 * C * FP32_EPS * s * max_term;
        }
    }
    const double sum_length = LN_BWD_ROWS_PER_PARTIAL + layernorm_backward_num_partials(N) + 1;
    std::vector<double> dw_tol(C), db_tol(C);
    for (int c = 0; c < C; c++) {
        dw_tol[c] = FLOATX_EPS * std::fabs(dw_ref[c]) + sum_length * FP32_EPS * dw_abs[c] * 2.0;
        db_tol[c] = FLOATX_EPS * std::fabs(db_ref[c]) + sum_length * FP32_EPS * db_abs[c];
    }
    std::vector<floatX> dinp_bits[2], dw_bits[2], db_bits[2];
    for (int run = 0; run < 2; run++) {
        upload(d_dinp, to_floatX(dinp0));
        upload(d_dweight, to_floatX(dweight0));
        upload(d_dbias, to_floatX(dbias0));
        poison(d_scratch, layernorm_backward_scratch_bytes(B, T, C));
        layernorm_backward(d_dinp, d_dweight, d_dbias, d_scratch, d_dout, d_residual, d_weight, d_mean,
                           d_rstd, B, T, C, 0);
        dinp_bits[run] = download(d_dinp, NC);
        dw_bits[run] = download(d_dweight, C);
        db_bits[run] = download(d_dbias, C);
    }
    check_close("layernorm_backward dinp (added)", to_float(dinp_bits[0]), dinp_ref, dinp_tol);
    check_close("layernorm_backward dweight (added)", to_float(dw_bits[0]), dw_ref, dw_tol);
    check_close("layernorm_backward dbias (added)", to_float(db_bits[0]), db_ref, db_tol);
    check_identical("layernorm_backward dinp bit-identical across two runs", dinp_bits[0], dinp_bits[1]);
    check_identical("layernorm_backward dweight bit-identical across two runs", dw_bits[0], dw_bits[1]);
    check_identical("layernorm_backward dbias bit-identical across two runs", db_bits[0], db_bits[1]);

    if (time_it && timing_enabled()) {
        const double copy_gbs = measure_copy_bandwidth_gbs();
        const double x = (double)NC * sizeof(floatX);
        float ms =
            median_ms([&] { layernorm_forward(d_out, d_mean, d_rstd, d_inp1, d_weight, d_bias, N, C, 0); });
        report_bandwidth("layernorm_forward (read inp, write out)", 2 * x, ms, copy_gbs);
        ms = median_ms([&] {
            fused_residual_layernorm_forward(d_residual, d_out, d_mean, d_rstd, d_inp1, d_inp2, d_weight,
                                             d_bias, N, C, 0);
        });
        report_bandwidth("fused_residual_layernorm_forward (read 2, write 2)", 4 * x, ms, copy_gbs);
        ms = median_ms([&] {
            layernorm_backward(d_dinp, d_dweight, d_dbias, d_scratch, d_dout, d_residual, d_weight, d_mean,
                               d_rstd, B, T, C, 0);
        });
        report_bandwidth("layernorm_backward (read dout, inp, dinp; write dinp)", 4 * x, ms, copy_gbs);
    }

    cudaCheck(cudaFree(d_inp1));
    cudaCheck(cudaFree(d_inp2));
    cudaCheck(cudaFree(d_weight));
    cudaCheck(cudaFree(d_bias));
    cudaCheck(cudaFree(d_dout));
    cudaCheck(cudaFree(d_residual));
    cudaCheck(cudaFree(d_out));
    cudaCheck(cudaFree(d_dinp));
    cudaCheck(cudaFree(d_dweight));
    cudaCheck(cudaFree(d_dbias));
    cudaCheck(cudaFree(d_mean));
    cudaCheck(cudaFree(d_rstd));
    cudaCheck(cudaFree(d_scratch));
}

int main() {
    print_device();
    std::mt19937 rng(42);
    check_shape(2, 8, 40, rng, false);   // C smaller than one warp's 256-channel stride
    check_shape(3, 37, 768, rng, false); // N not a multiple of the rows per block / per partial
    check_shape(4, 64, 1600, rng, false);
    // GPT-2 small's activations (256 partial slices); on the emulator 32 slices of the same C
    check_shape(8, ON_EMULATOR ? 128 : 1024, 768, rng, true);
    return finish("layernorm_check");
}
