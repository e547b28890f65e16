// gelu_check.cu: gelu_forward and gelu_backward_inplace (llmc/gelu.cuh) against the double formula.
// Tolerances, per element: the GPU evaluates in fp32 (tanhf: a few ulps; 1e-6 relative to max(|x|,1)
// covers it, see tests/unit/test_kernel_math.cpp) and rounds once to floatX (FLOATX_EPS |ref|).
// Build: make dev/cuda/gelu_check [PRECISION=FP32]; run: ./dev/cuda/gelu_check
#include "dev/cuda/check_common.h"
#include "llmc/gelu.cuh"

static void check_size(size_t N, std::mt19937& rng, bool time_it) {
    printf("--- gelu N=%zu\n", N);
    std::vector<float> x = random_floatX_values(N, rng, 2.0f);
    std::vector<float> dout = random_floatX_values(N, rng, 1.0f);
    floatX* d_x = upload_floatX(x);
    floatX* d_out = device_alloc<floatX>(N);
    floatX* d_d = device_alloc<floatX>(N);

    poison(d_out, N * sizeof(floatX));
    gelu_forward(d_out, d_x, N, 0);
    std::vector<double> ref(N), tol(N);
    for (size_t i = 0; i < N; i++) {
        ref[i] = gelu_ref(x[i]);
        tol[i] = FLOATX_EPS * std::fabs(ref[i]) + 1e-6 * std::max(1.0, (double)std::fabs(x[i]));
    }
    check_close("gelu_forward", download_floatX(d_out, N), ref, tol);

    upload(d_d, to_floatX(dout));
    gelu_backward_inplace(d_d, d_x, N, 0);
    for (size_t i = 0; i < N; i++) {
        ref[i] = dout[i] * gelu_grad_ref(x[i]);
        tol[i] = FLOATX_EPS * std::fabs(ref[i]) +
                 1e-6 * std::fabs(dout[i]) * std::max(1.0, (double)std::fabs(x[i]));
    }
    check_close("gelu_backward_inplace", download_floatX(d_d, N), ref, tol);

    if (time_it && timing_enabled()) {
        const double copy_gbs = measure_copy_bandwidth_gbs();
        const double bytes = (double)N * sizeof(floatX);
        float ms = median_ms([&] { gelu_forward(d_out, d_x, N, 0); });
        report_bandwidth("gelu_forward (read 1, write 1)", 2 * bytes, ms, copy_gbs);
        ms = median_ms([&] { gelu_backward_inplace(d_d, d_x, N, 0); });
        report_bandwidth("gelu_backward_inplace (read 2, write 1)", 3 * bytes, ms, copy_gbs);
    }
    cudaCheck(cudaFree(d_x));
    cudaCheck(cudaFree(d_out));
    cudaCheck(cudaFree(d_d));
}

int main() {
    print_device();
    std::mt19937 rng(3);
    check_size(8 * 17, rng, false); // one partial block
    // GPT-2 small's fc activations (B*T = 8192, 4C = 3072); on the emulator 5 full blocks of 256 threads
    // and a partial one (the same code paths: one element chunk per thread, no grid-stride loop)
    check_size(ON_EMULATOR ? 8 * (5 * 256 + 77) : (size_t)8 * 1024 * 3072, rng, true);
    return finish("gelu_check");
}
