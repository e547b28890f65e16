// encoder_check.cu: encoder_forward / encoder_backward (llmc/encoder.cuh) against a CPU reference.
//   forward:  out = wte[token] + wpe[t]: one floatX rounding of an exact fp32 sum -> tol FLOATX_EPS |ref|
//   backward: dwte, dwpe start from random values (the launcher ADDS); tokens are drawn mostly from a
//             small set so tokens repeat many times (the race the deterministic design removes). The
//             GPU sums a token's positions in fp32 (worst-case error count * 2^-24 * sum |terms|) and
//             rounds once to floatX (FLOATX_EPS |ref|). Run twice from the same state: bit-identical.
// Build: make dev/cuda/encoder_check [PRECISION=FP32]; run: ./dev/cuda/encoder_check
#include "dev/cuda/check_common.h"
#include "llmc/encoder.cuh"

static void check_shape(int B, int T, int C, int V, int Vp, int maxT, std::mt19937& rng, bool time_it) {
    printf("--- encoder B=%d T=%d C=%d V=%d Vp=%d\n", B, T, C, V, Vp);
    const int BT = B * T;
    std::vector<float> wte = random_floatX_values((size_t)Vp * C, rng, 0.1f);
    std::vector<float> wpe = random_floatX_values((size_t)maxT * C, rng, 0.1f);
    std::vector<float> dout = random_floatX_values((size_t)BT * C, rng, 1.0f);
    std::vector<float> dwte0 = random_floatX_values((size_t)Vp * C, rng, 0.5f);
    std::vector<float> dwpe0 = random_floatX_values((size_t)maxT * C, rng, 0.5f);
    std::vector<int> tokens(BT);
    std::uniform_int_distribution<int> common(0, std::min(V, 20) - 1), any(0, V - 1), coin(0, 3);
    for (int i = 0; i < BT; i++) tokens[i] = coin(rng) == 0 ? any(rng) : common(rng); // 3/4 from 20 tokens

    floatX* d_wte = upload_floatX(wte);
    floatX* d_wpe = upload_floatX(wpe);
    floatX* d_dout = upload_floatX(dout);
    floatX* d_out = device_alloc<floatX>((size_t)BT * C);
    floatX* d_dwte = device_alloc<floatX>((size_t)Vp * C);
    floatX* d_dwpe = device_alloc<floatX>((size_t)maxT * C);
    int* d_tokens = device_alloc<int>(BT);
    upload(d_tokens, tokens);
    EncoderBackwardScratch scratch;
    encoder_backward_scratch_init(&scratch, BT);

    // forward
    poison(d_out, (size_t)BT * C * sizeof(floatX));
    encoder_forward(d_out, d_tokens, d_wte, d_wpe, B, T, C, 0);
    std::vector<float> out = download_floatX(d_out, (size_t)BT * C);
    std::vector<double> ref((size_t)BT * C), tol((size_t)BT * C);
    for (int bt = 0; bt < BT; bt++) {
        for (int c = 0; c < C; c++) {
            size_t i = (size_t)bt * C + c;
            ref[i] = (double)wte[(size_t)tokens[bt] * C + c] + (double)wpe[(size_t)(bt % T) * C + c];
            tol[i] = FLOATX_EPS * std::fabs(ref[i]);
        }
    }
    check_close("encoder_forward out", out, ref, tol);

    // backward reference: positions of each token in increasing order, sums in double
    std::vector<double> dwte_ref(dwte0.begin(), dwte0.end()), dwte_abs((size_t)Vp * C, 0.0);
    std::vector<double> dwpe_ref(dwpe0.begin(), dwpe0.end()), dwpe_abs((size_t)maxT * C, 0.0);
    std::vector<int> count(Vp, 0);
    for (int bt = 0; bt < BT; bt++) {
        count[tokens[bt]]++;
        for (int c = 0; c < C; c++) {
            double d = dout[(size_t)bt * C + c];
            dwte_ref[(size_t)tokens[bt] * C + c] += d;
            dwte_abs[(size_t)tokens[bt] * C + c] += std::fabs(d);
            dwpe_ref[(size_t)(bt % T) * C + c] += d;
            dwpe_abs[(size_t)(bt % T) * C + c] += std::fabs(d);
        }
    }
    int max_count = *std::max_element(count.begin(), count.end());
    printf("     most frequent token occurs %d times\n", max_count);
    std::vector<double> dwte_tol((size_t)Vp * C), dwpe_tol((size_t)maxT * C);
    for (size_t i = 0; i < dwte_tol.size(); i++) {
        dwte_tol[i] = FLOATX_EPS * std::fabs(dwte_ref[i]) + max_count * FP32_EPS * dwte_abs[i];
    }
    for (size_t i = 0; i < dwpe_tol.size(); i++) {
        dwpe_tol[i] = FLOATX_EPS * std::fabs(dwpe_ref[i]) + B * FP32_EPS * dwpe_abs[i];
    }

    std::vector<floatX> dwte_bits[2], dwpe_bits[2];
    for (int run = 0; run < 2; run++) {
        upload(d_dwte, to_floatX(dwte0));
        upload(d_dwpe, to_floatX(dwpe0));
        encoder_backward(d_dwte, d_dwpe, d_dout, d_tokens, tokens.data(), &scratch, B, T, C, 0);
        dwte_bits[run] = download(d_dwte, (size_t)Vp * C);
        dwpe_bits[run] = download(d_dwpe, (size_t)maxT * C);
    }
    check_close("encoder_backward dwte (added; untouched rows unchanged)", to_float(dwte_bits[0]), dwte_ref,
                dwte_tol);
    check_close("encoder_backward dwpe (added; rows t >= T unchanged)", to_float(dwpe_bits[0]), dwpe_ref,
                dwpe_tol);
    check_identical("encoder_backward dwte bit-identical across two runs", dwte_bits[0], dwte_bits[1]);
    check_identical("encoder_backward dwpe bit-identical across two runs", dwpe_bits[0], dwpe_bits[1]);

    if (time_it && timing_enabled()) {
        float ms = median_ms([&] { encoder_forward(d_out, d_tokens, d_wte, d_wpe, B, T, C, 0); });
        report_time("encoder_forward", ms);
        ms = median_ms(
            [&] { encoder_backward(d_dwte, d_dwpe, d_dout, d_tokens, tokens.data(), &scratch, B, T, C, 0); });
        report_time("encoder_backward (incl. host bucketing and upload)", ms);
    }

    encoder_backward_scratch_free(&scratch);
    cudaCheck(cudaFree(d_wte));
    cudaCheck(cudaFree(d_wpe));
    cudaCheck(cudaFree(d_dout));
    cudaCheck(cudaFree(d_out));
    cudaCheck(cudaFree(d_dwte));
    cudaCheck(cudaFree(d_dwpe));
    cudaCheck(cudaFree(d_tokens));
}

int main() {
    print_device();
    std::mt19937 rng(1337);
    check_shape(2, 16, 64, 100, 128, 32, rng, false);
    check_shape(4, 64, 256, 1000, 1024, 128, rng, false);
    if (ON_EMULATOR) {
        // GPT-2's C = 768 (96 chunks a row: blocks straddle rows) and T = maxT = 1024, with a quarter of
        // the positions and a smaller vocabulary: the same code paths as the full size
        check_shape(2, 1024, 768, 2000, 2048, 1024, rng, true);
    } else {
        check_shape(8, 1024, 768, 50257, 50304, 1024, rng, true);
    }
    return finish("encoder_check");
}
