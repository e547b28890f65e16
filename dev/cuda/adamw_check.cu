// adamw_check.cu: the optimizer-side kernels: adamw_update and accumulate_grads_fp32 (llmc/adamw.cuh)
// and global_norm_squared (llmc/global_norm.cuh), against double CPU references (AdamW: adamw_ref).
// Tolerances:
//   AdamW master: a few fp32 roundings of p plus the update's relative fp32 error:
//                 4 * 2^-24 |p| + 1e-5 lr (1 + wd |p|); m, v: 4 * 2^-24 relative (a couple of fp32 ops).
//   bf16 params:  must be one of the two bf16 neighbours of the GPU's new master value (stochastic
//                 rounding); over 2^20 copies of one value the mean must be within 6 sigma of it.
//                 In the FP32 build params must equal master exactly.
//   accumulate:   one fp32 rounding of an exact sum: 2^-24 |ref|.
//   global norm:  sum of n positive terms in fp32 per thread (n / (blocks*512) terms), a block tree,
//                 then double: (terms per thread + 20) * 2^-24 relative.
// Determinism: same seed -> bit-identical params; a different seed changes some roundings; two runs
// of the norm are bit-identical. Timing: GB/s against the measured device copy bandwidth.
// Build: make dev/cuda/adamw_check [PRECISION=FP32]; run: ./dev/cuda/adamw_check
#include <type_traits>

#include "dev/cuda/check_common.h"
#include "llmc/adamw.cuh"
#include "llmc/global_norm.cuh"

static void check_adamw(size_t n, int t, float grad_scale, bool floatX_grads, std::mt19937& rng) {
    printf("--- adamw n=%zu t=%d grad_scale=%g grads=%s\n", n, t, grad_scale,
           floatX_grads ? "floatX" : "fp32");
    const float lr = 3e-4f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, wd = 0.1f;
    std::vector<float> master(n), grads(n), m(n), v(n);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    for (size_t i = 0; i < n; i++) {
        master[i] = 0.05f * dist(rng);
        grads[i] = floatX_grads ? round_floatX(0.01f * dist(rng)) : 0.01f * dist(rng);
        m[i] = 0.001f * dist(rng);
        v[i] = 1e-4f * std::fabs(dist(rng));
    }
    float* d_master = device_alloc<float>(n);
    float* d_grads = device_alloc<float>(n);
    floatX* d_grads_x = upload_floatX(grads);
    float* d_m = device_alloc<float>(n);
    float* d_v = device_alloc<float>(n);
    floatX* d_params = device_alloc<floatX>(n);
    upload(d_grads, grads);

    auto run = [&](unsigned int seed) {
        upload(d_master, master);
        upload(d_m, m);
        upload(d_v, v);
        poison(d_params, n * sizeof(floatX));
        if (floatX_grads) {
            adamw_update(d_params, d_master, (const floatX*)d_grads_x, d_m, d_v, n, lr, beta1, beta2, eps, wd,
                         grad_scale, t, seed, 0);
        } else {
            adamw_update(d_params, d_master, (const float*)d_grads, d_m, d_v, n, lr, beta1, beta2, eps, wd,
                         grad_scale, t, seed, 0);
        }
    };
    run(1234u);
    std::vector<float> g_master = download(d_master, n), g_m = download(d_m, n), g_v = download(d_v, n);
    std::vector<floatX> g_params = download(d_params, n);

    std::vector<double> ref_p(n), tol_p(n), ref_m(n), tol_m(n), ref_v(n), tol_v(n);
    for (size_t i = 0; i < n; i++) {
        const double g = (double)grad_scale * grads[i];
        ref_m[i] = m[i];
        ref_v[i] = v[i];
        ref_p[i] = adamw_ref(master[i], g, &ref_m[i], &ref_v[i], lr, beta1, beta2, eps, wd, t);
        const double update = (master[i] - ref_p[i]) / lr; // m_hat / (sqrt(v_hat) + eps) + wd p
        tol_p[i] = 4.0 * FP32_EPS * std::fabs(ref_p[i]) + 1e-5 * lr * (1.0 + std::fabs(update));
        tol_m[i] = 4.0 * FP32_EPS * (std::fabs(beta1 * m[i]) + std::fabs((1.0 - beta1) * g)) + 1e-30;
        tol_v[i] = 4.0 * FP32_EPS * std::fabs(ref_v[i]) + 1e-30;
    }
    check_close("adamw master_fp32", g_master, ref_p, tol_p);
    check_close("adamw m", g_m, ref_m, tol_m);
    check_close("adamw v", g_v, ref_v, tol_v);
    size_t not_neighbour = 0;
    for (size_t i = 0; i < n; i++) {
#if defined(ENABLE_FP32)
        if (!(g_params[i] == g_master[i])) not_neighbour++;
#else
        uint32_t bits = float_to_bits(g_master[i]);
        uint16_t p = __nv_bfloat16_raw(g_params[i]).x;
        if (p != (uint16_t)(bits >> 16) && p != (uint16_t)((bits >> 16) + 1)) not_neighbour++;
#endif
    }
    report(not_neighbour == 0, "adamw params: a bf16 neighbour of the new master (FP32: equal)",
           (double)not_neighbour, 0.0);

    run(1234u);
    check_identical("adamw params bit-identical for the same seed", download(d_params, n), g_params);
#if !defined(ENABLE_FP32)
    run(4321u);
    std::vector<floatX> other = download(d_params, n);
    bool differs = memcmp(other.data(), g_params.data(), n * sizeof(floatX)) != 0;
    report(differs || n < 1000, "adamw params: another seed changes some roundings", differs ? 1.0 : 0.0,
           1.0);
#endif
    cudaCheck(cudaFree(d_master));
    cudaCheck(cudaFree(d_grads));
    cudaCheck(cudaFree(d_grads_x));
    cudaCheck(cudaFree(d_m));
    cudaCheck(cudaFree(d_v));
    cudaCheck(cudaFree(d_params));
}

// stochastic rounding on the device is unbiased: 2^log2_n parameters with the same master value, lr = 0,
// so the master stays put and only the rounding varies with the index
static void check_stochastic_rounding_mean(int log2_n) {
#if !defined(ENABLE_FP32)
    printf("--- adamw stochastic rounding mean\n");
    const size_t n = (size_t)1 << log2_n;
    const float x = 0.7f + 0.37f * 0x1p-8f;
    float* d_master = device_alloc<float>(n);
    float* d_zero = device_alloc<float>(n);
    floatX* d_params = device_alloc<floatX>(n);
    upload(d_master, std::vector<float>(n, x));
    cudaCheck(cudaMemset(d_zero, 0, n * sizeof(float)));
    float* d_m = device_alloc<float>(n);
    float* d_v = device_alloc<float>(n);
    cudaCheck(cudaMemset(d_m, 0, n * sizeof(float)));
    cudaCheck(cudaMemset(d_v, 0, n * sizeof(float)));
    adamw_update(d_params, d_master, (const float*)d_zero, d_m, d_v, n, 0.0f, 0.9f, 0.95f, 1e-8f, 0.0f, 1.0f,
                 1, 7u, 0);
    std::vector<float> p = download_floatX(d_params, n);
    double sum = 0.0;
    for (float y : p) sum += y;
    uint32_t bits = float_to_bits(x);
    double ulp =
        (double)bf16_bits_to_float((uint16_t)((bits >> 16) + 1)) - bf16_bits_to_float((uint16_t)(bits >> 16));
    double bound = 6.0 * 0.5 * ulp / std::sqrt((double)n);
    char what[96];
    snprintf(what, sizeof(what), "mean of 2^%d stochastic roundings of one value (6 sigma)", log2_n);
    report(std::fabs(sum / n - x) <= bound, what, std::fabs(sum / n - x), bound);
    cudaCheck(cudaFree(d_master));
    cudaCheck(cudaFree(d_zero));
    cudaCheck(cudaFree(d_params));
    cudaCheck(cudaFree(d_m));
    cudaCheck(cudaFree(d_v));
#else
    (void)log2_n;
#endif
}

static void check_accumulate(size_t n, std::mt19937& rng) {
    printf("--- accumulate_grads_fp32 n=%zu\n", n);
    std::vector<float> acc(n);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    for (size_t i = 0; i < n; i++) acc[i] = dist(rng);
    std::vector<float> g = random_floatX_values(n, rng, 0.01f);
    float* d_acc = device_alloc<float>(n);
    floatX* d_g = upload_floatX(g);
    upload(d_acc, acc);
    accumulate_grads_fp32(d_acc, d_g, n, 0);
    std::vector<double> ref(n), tol(n);
    for (size_t i = 0; i < n; i++) {
        ref[i] = (double)acc[i] + g[i];
        tol[i] = FP32_EPS * std::fabs(ref[i]);
    }
    check_close("accumulate_grads_fp32 acc += g", download(d_acc, n), ref, tol);
    cudaCheck(cudaFree(d_acc));
    cudaCheck(cudaFree(d_g));
}

template <class T> static void check_norm(size_t n, std::mt19937& rng, const char* type_name) {
    printf("--- global_norm_squared n=%zu (%s)\n", n, type_name);
    std::vector<float> g(n);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    for (size_t i = 0; i < n; i++) g[i] = round_floatX(0.01f * dist(rng));
    T* d_g = device_alloc<T>(n);
    if constexpr (std::is_same<T, float>::value) {
        upload(d_g, g);
    } else {
        upload(d_g, to_floatX(g));
    }
    float* d_out = device_alloc<float>(1);
    float* d_scratch = device_alloc<float>(global_norm_scratch_bytes(n) / sizeof(float));
    float results[2];
    for (int run = 0; run < 2; run++) {
        poison(d_out, sizeof(float));
        global_norm_squared(d_out, (const T*)d_g, n, d_scratch, 0);
        results[run] = download(d_out, 1)[0];
    }
    double ref = 0.0;
    for (float x : g) ref += (double)x * x;
    const double per_thread =
        std::ceil((double)n / (global_norm_num_blocks(n) * (double)GLOBAL_NORM_BLOCK_SIZE));
    check_close("global_norm_squared", std::vector<float>{results[0]}, std::vector<double>{ref},
                (per_thread + 20) * FP32_EPS * ref);
    check_identical("global_norm_squared bit-identical across two runs", &results[0], &results[1],
                    sizeof(float));
    cudaCheck(cudaFree(d_g));
    cudaCheck(cudaFree(d_out));
    cudaCheck(cudaFree(d_scratch));
}

static void time_optimizer(size_t n, double copy_gbs) {
    float* master = device_alloc<float>(n);
    float* grads = device_alloc<float>(n);
    float* m = device_alloc<float>(n);
    float* v = device_alloc<float>(n);
    floatX* params = device_alloc<floatX>(n);
    float* out = device_alloc<float>(1);
    float* scratch = device_alloc<float>(global_norm_scratch_bytes(n) / sizeof(float));
    cudaCheck(cudaMemset(master, 0, n * sizeof(float)));
    cudaCheck(cudaMemset(grads, 0, n * sizeof(float)));
    cudaCheck(cudaMemset(m, 0, n * sizeof(float)));
    cudaCheck(cudaMemset(v, 0, n * sizeof(float)));
    cudaCheck(cudaMemset(params, 0, n * sizeof(floatX)));
    int t = 1;
    float ms = median_ms([&] {
        adamw_update(params, master, (const float*)grads, m, v, n, 3e-4f, 0.9f, 0.95f, 1e-8f, 0.1f, 1.0f, t++,
                     1u, 0);
    });
    // read grad, master, m, v; write master, m, v, params
    report_bandwidth("adamw_update (124M params)", (double)n * (7 * sizeof(float) + sizeof(floatX)), ms,
                     copy_gbs);
    ms = median_ms([&] { accumulate_grads_fp32(grads, params, n, 0); });
    report_bandwidth("accumulate_grads_fp32", (double)n * (2 * sizeof(float) + sizeof(floatX)), ms, copy_gbs);
    ms = median_ms([&] { global_norm_squared(out, (const float*)grads, n, scratch, 0); });
    report_bandwidth("global_norm_squared (fp32)", (double)n * sizeof(float), ms, copy_gbs);
    cudaCheck(cudaFree(master));
    cudaCheck(cudaFree(grads));
    cudaCheck(cudaFree(m));
    cudaCheck(cudaFree(v));
    cudaCheck(cudaFree(params));
    cudaCheck(cudaFree(out));
    cudaCheck(cudaFree(scratch));
}

int main() {
    print_device();
    std::mt19937 rng(31337);
    // the elementwise kernels (grid-stride only beyond 2^19 blocks of 512) cover the same paths at a
    // tenth of the size on the emulator: many blocks, the last one partial
    const size_t n_elementwise = ON_EMULATOR ? 100003 : 1000003;
    check_adamw(n_elementwise, 1, 1.0f, false, rng);
    check_adamw(100000, 500, 0.5f, false, rng);
    check_adamw(4099, 3, 1.0f, true, rng);
    check_stochastic_rounding_mean(ON_EMULATOR ? 16 : 20); // the 6-sigma bound scales with the count
    check_accumulate(n_elementwise, rng);
    // the norm: one block; 1024 blocks striding twice over n, the second pass partial (also on the
    // emulator); GPT-2 small's 124M parameters, 238 terms per thread (GPU only)
    check_norm<float>(1, rng, "fp32");
    check_norm<float>(1000003, rng, "fp32");
    if (!ON_EMULATOR) check_norm<float>(124475904, rng, "fp32");
    check_norm<floatX>(777777, rng, "floatX");
    if (timing_enabled()) time_optimizer(124475904, measure_copy_bandwidth_gbs());
    return finish("adamw_check");
}
