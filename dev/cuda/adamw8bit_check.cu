// adamw8bit_check.cu: GPU check of the fused 8-bit AdamW kernel (llmc/adamw8bit.cuh) against the CPU
// reference adamw8bit_update (llmc/adamw8bit.h).
//
//   make dev/cuda/adamw8bit_check && ./dev/cuda/adamw8bit_check
//
// 1. Correctness: sizes from 1 to ~1M parameters (~32K on the CPU emulator; partial last blocks), block
//    sizes 64 ... 4096, fp32 and floatX gradients. CPU and GPU start from the same parameters and the
//    all-zero state and take 5 steps on the same gradients (magnitudes spread over 4 decades, a new draw
//    each step). After every step the fp32 parameters, the m / v codes and the m / v absmax must be
//    bit-identical to the CPU's, the floatX copy must equal the CPU parameter rounded to floatX, and the
//    poisoned padding past every GPU array must be untouched. Exit 1 on any mismatch.
// 2. Timing at 64M parameters: the 8-bit kernel (fp32 and bf16 grads) against a plain fp32 AdamW kernel
//    (m, v in fp32, same fused structure: fp32 master + floatX copy) and against each one's memory-
//    bandwidth floor: bytes moved / peak bandwidth measured with a device-to-device cudaMemcpy. Skipped
//    on the CPU emulator.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "dev/cuda/check_common.h"
#include "llmc/adamw8bit.cuh"
#include "llmc/adamw8bit.h"
#include "llmc/cuda_common.h"

static int g_failures = 0;
static const size_t PAD = 256;
static const unsigned char POISON = 0xAB;
static const float LR = 1e-3f, BETA1 = 0.9f, BETA2 = 0.95f, EPS = 1e-8f, WD = 0.1f;

struct DeviceBuffer {
    void* ptr = nullptr;
    size_t bytes = 0;
    explicit DeviceBuffer(size_t b) : bytes(b) {
        cudaCheck(cudaMalloc(&ptr, bytes + PAD));
        cudaCheck(cudaMemset(ptr, POISON, bytes + PAD));
    }
    ~DeviceBuffer() { cudaFree(ptr); }
    DeviceBuffer(const DeviceBuffer&) = delete;
    DeviceBuffer& operator=(const DeviceBuffer&) = delete;
    template <class T> T* as() { return (T*)ptr; }
};

static bool compare(DeviceBuffer& d, const void* host, size_t bytes, const char* what, int step) {
    std::vector<unsigned char> got(bytes + PAD);
    cudaCheck(cudaMemcpy(got.data(), d.ptr, bytes + PAD, cudaMemcpyDeviceToHost));
    size_t diff = 0, first = 0;
    for (size_t i = 0; i < bytes; i++) {
        if (got[i] != ((const unsigned char*)host)[i]) {
            if (diff == 0) first = i;
            diff++;
        }
    }
    bool pad_ok = true;
    for (size_t i = bytes; i < bytes + PAD; i++) pad_ok = pad_ok && got[i] == POISON;
    if (diff != 0 || !pad_ok) {
        printf("FAIL %s, step %d: %zu of %zu bytes differ (first at byte %zu)%s\n", what, step, diff, bytes,
               first, pad_ok ? "" : ", padding overwritten");
        g_failures++;
        return false;
    }
    return true;
}

// gradients with magnitudes spread over 4 decades, rounded to floatX when the GPU gets floatX grads
template <typename GradT>
static void make_grads(size_t n, std::mt19937& rng, std::vector<float>& g32, std::vector<GradT>& g) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::uniform_real_distribution<float> expo(-4.0f, 0.0f);
    for (size_t i = 0; i < n; i++) {
        g[i] = (GradT)(normal(rng) * powf(10.0f, expo(rng)));
        g32[i] = (float)g[i];
    }
}

template <typename GradT> static void check_case(size_t n, int bs, uint32_t seed, const char* grad_name) {
    std::mt19937 rng(seed);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    const size_t nb = adamw8bit_num_blocks(n, bs);
    std::vector<float> p(n), g32(n), m_absmax(nb, 0.0f), v_absmax(nb, 0.0f);
    std::vector<GradT> g(n);
    std::vector<uint8_t> m_codes(n, 0), v_codes(n, 0);
    for (size_t i = 0; i < n; i++) p[i] = 0.02f * normal(rng);
    DeviceBuffer d_p(n * 4), d_px(n * sizeof(floatX)), d_g(n * sizeof(GradT)), d_mc(n), d_vc(n), d_ma(nb * 4),
        d_va(nb * 4);
    cudaCheck(cudaMemcpy(d_p.ptr, p.data(), n * 4, cudaMemcpyHostToDevice));
    // the all-zero initial state (only the first n / nb bytes: the padding stays poisoned)
    cudaCheck(cudaMemset(d_mc.ptr, 0, n));
    cudaCheck(cudaMemset(d_vc.ptr, 0, n));
    cudaCheck(cudaMemset(d_ma.ptr, 0, nb * 4));
    cudaCheck(cudaMemset(d_va.ptr, 0, nb * 4));
    char what[128];
    snprintf(what, sizeof(what), "adamw8bit n=%zu block=%d grads %s", n, bs, grad_name);
    bool ok = true;
    std::vector<floatX> px(n);
    for (int t = 1; t <= 5 && ok; t++) {
        make_grads(n, rng, g32, g);
        cudaCheck(cudaMemcpy(d_g.ptr, g.data(), n * sizeof(GradT), cudaMemcpyHostToDevice));
        const float grad_scale = t % 2 == 0 ? 0.37f : 1.0f; // (a clipped step every other step)
        adamw8bit_update(p.data(), g32.data(), m_codes.data(), m_absmax.data(), v_codes.data(),
                         v_absmax.data(), n, bs, LR, BETA1, BETA2, EPS, WD, t, grad_scale);
        adamw8bit_update_cuda(d_p.as<float>(), d_px.as<floatX>(), d_g.as<GradT>(), d_mc.as<uint8_t>(),
                              d_ma.as<float>(), d_vc.as<uint8_t>(), d_va.as<float>(), n, bs, LR, BETA1, BETA2,
                              EPS, WD, t, grad_scale, 0);
        cudaCheck(cudaDeviceSynchronize());
        for (size_t i = 0; i < n; i++) px[i] = (floatX)p[i];
        ok = compare(d_p, p.data(), n * 4, what, t) &&
             compare(d_px, px.data(), n * sizeof(floatX), what, t) &&
             compare(d_mc, m_codes.data(), n, what, t) && compare(d_vc, v_codes.data(), n, what, t) &&
             compare(d_ma, m_absmax.data(), nb * 4, what, t) &&
             compare(d_va, v_absmax.data(), nb * 4, what, t);
    }
    printf("%-4s %s: 5 steps bit-identical (params, floatX copy, codes, absmax, padding)\n",
           ok ? "ok" : "FAIL", what);
}

// ----------------------------------------------------------------------------------------------------
// the fp32 AdamW baseline for the timing: same fused structure, m and v in fp32

__global__ void adamw_fp32_kernel(float* param, floatX* param_x, const float* grad, float* m, float* v,
                                  size_t n, const AdamW8bitHyperparams h) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        float mi, vi;
        adamw8bit_moments(grad[i], m[i], v[i], h, &mi, &vi);
        const float p = adamw8bit_param(param[i], mi, vi, h);
        m[i] = mi, v[i] = vi, param[i] = p;
        param_x[i] = (floatX)p;
    }
}

// (name, time, bytes moved, copy bandwidth) -> check_common.h's report_bandwidth
static void report_bw(const char* name, float ms, double bytes, double peak_gbs) {
    report_bandwidth(name, bytes, ms, peak_gbs);
}

static void timing() {
    const size_t n = (size_t)1 << 26;
    const int bs = ADAMW8BIT_DEFAULT_BLOCK;
    const size_t nb = adamw8bit_num_blocks(n, bs);
    DeviceBuffer d_p(n * 4), d_px(n * sizeof(floatX)), d_g(n * 4), d_gx(n * sizeof(floatX)), d_m(n * 4),
        d_v(n * 4), d_mc(n), d_vc(n), d_ma(nb * 4), d_va(nb * 4);
    std::mt19937 rng(1);
    std::vector<float> host(n), g32(n);
    std::vector<floatX> gx(n);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    for (size_t i = 0; i < n; i++) host[i] = 0.02f * normal(rng);
    cudaCheck(cudaMemcpy(d_p.ptr, host.data(), n * 4, cudaMemcpyHostToDevice));
    make_grads(n, rng, g32, gx);
    cudaCheck(cudaMemcpy(d_g.ptr, g32.data(), n * 4, cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(d_gx.ptr, gx.data(), n * sizeof(floatX), cudaMemcpyHostToDevice));
    for (DeviceBuffer* b : {&d_m, &d_v, &d_mc, &d_vc, &d_ma, &d_va})
        cudaCheck(cudaMemset(b->ptr, 0, b->bytes));

    const double peak = measure_copy_bandwidth_gbs(); // read + write of a device-to-device copy
    printf("timing, n = %zu parameters, block %d; peak bandwidth from a D2D cudaMemcpy: %.1f GB/s\n", n, bs,
           peak);
    const double xb = sizeof(floatX), absmax_bytes = 2.0 * 2 * 4 * nb; // read + write both absmax arrays
    int t = 1;
    const AdamW8bitHyperparams h = adamw8bit_hyperparams(LR, BETA1, BETA2, EPS, WD, 1);
    report_bw(
        "fp32 AdamW (m, v fp32), fp32 grads", median_ms([&] {
            CUDA_LAUNCH(adamw_fp32_kernel, (int)std::min<size_t>(ceil_div(n, (size_t)256), 65536), 256, 0, 0)
            (d_p.as<float>(), d_px.as<floatX>(), d_g.as<float>(), d_m.as<float>(), d_v.as<float>(), n, h);
            cudaCheck(cudaGetLastError());
        }),
        (4 + 4 + 8) * (double)n + (4 + xb + 8) * (double)n, peak);
    report_bw("8-bit AdamW, fp32 grads", median_ms([&] {
                  adamw8bit_update_cuda(d_p.as<float>(), d_px.as<floatX>(), d_g.as<float>(),
                                        d_mc.as<uint8_t>(), d_ma.as<float>(), d_vc.as<uint8_t>(),
                                        d_va.as<float>(), n, bs, LR, BETA1, BETA2, EPS, WD, t++, 1.0f, 0);
              }),
              (4 + 4 + 2) * (double)n + (4 + xb + 2) * (double)n + absmax_bytes, peak);
    report_bw("8-bit AdamW, floatX grads", median_ms([&] {
                  adamw8bit_update_cuda(d_p.as<float>(), d_px.as<floatX>(), d_gx.as<floatX>(),
                                        d_mc.as<uint8_t>(), d_ma.as<float>(), d_vc.as<uint8_t>(),
                                        d_va.as<float>(), n, bs, LR, BETA1, BETA2, EPS, WD, t++, 1.0f, 0);
              }),
              (4 + xb + 2) * (double)n + (4 + xb + 2) * (double)n + absmax_bytes, peak);
}

int main() {
    int dev;
    cudaCheck(cudaGetDevice(&dev));
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, dev));
    printf("device: %s, floatX = %s\n", prop.name, PRECISION_NAME);
    uint32_t seed = 1;
    // the largest size: many blocks (16K of 64 values) and a partial last one; the emulator runs the same
    // paths with 32x fewer blocks
    const size_t n_large = (ON_EMULATOR ? (size_t)1 << 15 : (size_t)1 << 20) + 123;
    for (int bs : {64, 256, 2048, 4096}) {
        for (size_t n : {(size_t)1, (size_t)1000, 3 * (size_t)bs + 5, n_large}) {
            check_case<float>(n, bs, seed++, "fp32");
            check_case<floatX>(n, bs, seed++, PRECISION_NAME);
        }
    }
    check_case<float>(1000, 1000, seed++, "fp32"); // a block size that is not a multiple of 32
    if (g_failures) {
        printf("adamw8bit_check: %d mismatch(es)\n", g_failures);
        return 1;
    }
    printf("adamw8bit_check: GPU 8-bit AdamW bit-identical to the CPU reference in every case\n");
    if (timing_enabled()) timing();
    return 0;
}
