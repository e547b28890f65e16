// classifier_check.cu: fused_classifier (llmc/fused_classifier.cuh) against the double reference (softmax
// cross-entropy with logsumexp_ref).
// The logits are floatX values read exactly; the GPU works in fp32 (expf, logf, a sum of V terms):
//   loss:    |err| <= 1e-5 (|lse| + 1): fp32 sum of V positive terms (online, per thread then a tree)
//            has relative error well below V/1024 * 2^-24 + tree depth, plus expf/logf ulps;
//   dlogits: one floatX rounding FLOATX_EPS |ref| plus fp32 softmax error scale (1e-5 p + 1e-6);
//   padding: exactly 0 (the padded columns hold garbage on entry).
// Also: write_dlogits = false leaves the logits untouched and gives the same losses; two runs are
// bit-identical. Timing: GB/s counting one read and one write of the (BT,Vp) buffer.
// Build: make dev/cuda/classifier_check [PRECISION=FP32]; run: ./dev/cuda/classifier_check
#include "dev/cuda/check_common.h"
#include "llmc/fused_classifier.cuh"

static void check_shape(int BT, int V, int Vp, float spread, std::mt19937& rng, bool check_values,
                        bool time_it) {
    printf("--- fused_classifier BT=%d V=%d Vp=%d logits ~N(0,%g)\n", BT, V, Vp, spread);
    const size_t n = (size_t)BT * Vp;
    std::vector<float> logits = random_floatX_values(n, rng, spread);
    std::vector<int> targets(BT);
    std::uniform_int_distribution<int> any(0, V - 1);
    for (int i = 0; i < BT; i++) {
        targets[i] = i == 0 ? V - 1 : any(rng); // row 0: the last valid column
        for (int c = V; c < Vp; c++) logits[(size_t)i * Vp + c] = round_floatX(1e4f); // garbage padding
    }
    const float scale = 1.0f / (BT * 4.0f);
    floatX* d_logits = device_alloc<floatX>(n);
    float* d_losses = device_alloc<float>(BT);
    int* d_targets = device_alloc<int>(BT);
    std::vector<floatX> logits_x = to_floatX(logits);
    upload(d_targets, targets);

    // inference mode: losses only, buffer untouched
    upload(d_logits, logits_x);
    poison(d_losses, BT * sizeof(float));
    fused_classifier(d_logits, d_losses, d_targets, scale, BT, V, Vp, false, 0);
    std::vector<float> losses_no_grad = download(d_losses, BT);
    check_identical("write_dlogits=false leaves the logits untouched", download(d_logits, n), logits_x);

    std::vector<floatX> d_bits[2];
    std::vector<float> loss_runs[2];
    for (int run = 0; run < 2; run++) {
        upload(d_logits, logits_x);
        poison(d_losses, BT * sizeof(float));
        fused_classifier(d_logits, d_losses, d_targets, scale, BT, V, Vp, true, 0);
        d_bits[run] = download(d_logits, n);
        loss_runs[run] = download(d_losses, BT);
    }
    check_identical("losses equal with and without write_dlogits", loss_runs[0], losses_no_grad);
    check_identical("dlogits bit-identical across two runs", d_bits[0], d_bits[1]);
    check_identical("losses bit-identical across two runs", loss_runs[0], loss_runs[1]);

    if (check_values) {
        std::vector<double> loss_ref(BT), loss_tol(BT), d_ref(n), d_tol(n);
        for (int r = 0; r < BT; r++) {
            const float* x = logits.data() + (size_t)r * Vp;
            const double lse = logsumexp_ref(x, V);
            loss_ref[r] = lse - x[targets[r]];
            loss_tol[r] = 1e-5 * (std::fabs(lse) + 1.0);
            for (int i = 0; i < Vp; i++) {
                size_t k = (size_t)r * Vp + i;
                if (i >= V) {
                    d_ref[k] = 0.0;
                    d_tol[k] = 0.0;
                    continue;
                }
                double p = std::exp(x[i] - lse);
                d_ref[k] = (p - (i == targets[r] ? 1.0 : 0.0)) * scale;
                d_tol[k] = FLOATX_EPS * std::fabs(d_ref[k]) + scale * (1e-5 * p + 1e-6);
            }
        }
        check_close("fused_classifier losses", loss_runs[0], loss_ref, loss_tol);
        check_close("fused_classifier dlogits (padding exactly 0)", to_float(d_bits[0]), d_ref, d_tol);
    }

    if (time_it && timing_enabled()) {
        const double copy_gbs = measure_copy_bandwidth_gbs();
        float ms =
            median_ms([&] { fused_classifier(d_logits, d_losses, d_targets, scale, BT, V, Vp, true, 0); });
        report_bandwidth("fused_classifier (read + write the logits once)", 2.0 * n * sizeof(floatX), ms,
                         copy_gbs);
    }
    cudaCheck(cudaFree(d_logits));
    cudaCheck(cudaFree(d_losses));
    cudaCheck(cudaFree(d_targets));
}

int main() {
    print_device();
    std::mt19937 rng(99);
    check_shape(4, 5, 128, 1.0f, rng, true, false);       // V smaller than one chunk per thread
    check_shape(64, 1000, 1024, 20.0f, rng, true, false); // large logits: stability of the online softmax
    // GPT-2's vocabulary: each thread strides over several chunks, the last one partial. One block per
    // row, so on the emulator fewer rows cover the same code paths.
    check_shape(ON_EMULATOR ? 16 : 256, 50257, 50304, 2.0f, rng, true, false);
    check_shape(ON_EMULATOR ? 4 : 8 * 1024, 50257, 50304, 2.0f, rng, false, true);
    return finish("classifier_check");
}
