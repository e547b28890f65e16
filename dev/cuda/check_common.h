// check_common.h: what the kernel check programs in dev/cuda/ share: host floatX conversion, device
// buffers, poisoning, comparison against a CPU reference with stated tolerances, bit-identity checks
// and timing against the device's measured copy bandwidth. The references themselves, each layer in
// double, are tests/common/reference.h's (shared with the CPU tests).
//
// Conventions of every check program:
//   - inputs are random and rounded to floatX on the host first, so the CPU reference (double) sees
//     exactly the values the GPU sees; the only differences are the GPU's own rounding;
//   - outputs are poisoned with 0xFF bytes before the launch (NaN in bf16 and fp32), and a NaN never
//     passes a comparison, so an element the kernel forgot to write fails;
//   - tolerances are built from the unit roundoff of the output type (FLOATX_EPS: 2^-8 for bf16 with
//     round-to-nearest, 2^-24 for fp32) times the magnitude, plus, for reductions, the worst-case fp32
//     summation error (length * 2^-24 * sum of |terms|);
//   - the program exits 1 when any check failed;
//   - on the CPU emulator (ON_EMULATOR below) they run small sizes only and skip the timing.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "llmc/cuda_common.h"
#include "llmc/kernel_math.h"
#include "tests/common/reference.h" // the layers in double: gelu_ref, layernorm_*_ref, attention_ref, ...

#if defined(ENABLE_FP32)
constexpr double FLOATX_EPS = 0x1p-24;
#else
constexpr double FLOATX_EPS = 0x1p-8;
#endif
constexpr double FP32_EPS = 0x1p-24;

// The CPU emulator of CUDA (dev/cuda/emu, `make emu`) runs each CUDA thread as a fiber, ~0.3-0.5 us per
// thread per barrier segment. Built against it, a check runs its correctness checks at small sizes only
// (still several blocks, grid-stride loops, partial last blocks and every code path of the large sizes)
// and skips the timing: an emulated event measures the host's wall time, never a GPU figure.
#if defined(CUDA_EMULATOR)
constexpr bool ON_EMULATOR = true;
#else
constexpr bool ON_EMULATOR = false;
#endif

static int check_failures = 0;

// ----------------------------------------------------------------------------------------------------
// host floatX

inline float floatX_to_float(floatX x) {
#if defined(ENABLE_FP32)
    return x;
#else
    __nv_bfloat16_raw raw = x;
    return bf16_bits_to_float(raw.x);
#endif
}
inline floatX float_to_floatX(float x) {
#if defined(ENABLE_FP32)
    return x;
#else
    __nv_bfloat16_raw raw;
    raw.x = float_to_bf16_bits_rne(x);
    return floatX(raw);
#endif
}
// the value x takes once stored as floatX
inline float round_floatX(float x) {
    return floatX_to_float(float_to_floatX(x));
}

inline std::vector<floatX> to_floatX(const std::vector<float>& v) {
    std::vector<floatX> out(v.size());
    for (size_t i = 0; i < v.size(); i++) out[i] = float_to_floatX(v[i]);
    return out;
}
inline std::vector<float> to_float(const std::vector<floatX>& v) {
    std::vector<float> out(v.size());
    for (size_t i = 0; i < v.size(); i++) out[i] = floatX_to_float(v[i]);
    return out;
}

// n normal(0, scale) values, already rounded to floatX precision
inline std::vector<float> random_floatX_values(size_t n, std::mt19937& rng, float scale) {
    std::normal_distribution<float> dist(0.0f, scale);
    std::vector<float> v(n);
    for (size_t i = 0; i < n; i++) v[i] = round_floatX(dist(rng));
    return v;
}

// ----------------------------------------------------------------------------------------------------
// device buffers

template <class T> T* device_alloc(size_t n) {
    T* p = nullptr;
    cudaCheck(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)));
    return p;
}
template <class T> void upload(T* device, const std::vector<T>& host) {
    cudaCheck(cudaMemcpy(device, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
}
template <class T> std::vector<T> download(const T* device, size_t n) {
    std::vector<T> host(n);
    cudaCheck(cudaDeviceSynchronize());
    cudaCheck(cudaMemcpy(host.data(), device, n * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
}
inline floatX* upload_floatX(const std::vector<float>& host) {
    floatX* d = device_alloc<floatX>(host.size());
    upload(d, to_floatX(host));
    return d;
}
inline std::vector<float> download_floatX(const floatX* device, size_t n) {
    return to_float(download(device, n));
}
// 0xFF bytes: NaN as bf16 and as fp32
inline void poison(void* device, size_t bytes) {
    cudaCheck(cudaMemset(device, 0xFF, bytes));
}

// ----------------------------------------------------------------------------------------------------
// comparisons. Every element must satisfy |got - ref| <= tol (written so that NaN fails).

inline bool report(bool ok, const char* what, double worst, double bound) {
    printf("%s %-78s max err %.3g (tol %.3g)\n", ok ? "ok  " : "FAIL", what, worst, bound);
    if (!ok) check_failures++;
    return ok;
}

// tol[i] per element; prints the worst ratio err/tol
inline bool check_close(const char* what, const std::vector<float>& got, const std::vector<double>& ref,
                        const std::vector<double>& tol) {
    double worst_ratio = 0.0, worst_err = 0.0, worst_tol = 0.0;
    size_t bad = 0, first_bad = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        double err = std::fabs((double)got[i] - ref[i]);
        if (!(err <= tol[i])) {
            if (bad == 0) first_bad = i;
            bad++;
        }
        double ratio = err / std::max(tol[i], 1e-300);
        if (!(ratio <= worst_ratio)) {
            worst_ratio = ratio;
            worst_err = err;
            worst_tol = tol[i];
        }
    }
    bool ok = got.size() == ref.size() && bad == 0;
    report(ok, what, worst_err, worst_tol);
    if (bad > 0) {
        printf("     %zu of %zu elements out of tolerance; first at %zu: got %.8g, expected %.8g\n", bad,
               ref.size(), first_bad, got[first_bad], ref[first_bad]);
    }
    return ok;
}
// one tolerance for the whole tensor
inline bool check_close(const char* what, const std::vector<float>& got, const std::vector<double>& ref,
                        double tol) {
    return check_close(what, got, ref, std::vector<double>(ref.size(), tol));
}

inline double max_abs(const std::vector<double>& v) {
    double m = 0.0;
    for (double x : v) m = std::max(m, std::fabs(x));
    return m;
}

inline bool check_identical(const char* what, const void* a, const void* b, size_t bytes) {
    bool ok = memcmp(a, b, bytes) == 0;
    printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    if (!ok) check_failures++;
    return ok;
}
template <class T> bool check_identical(const char* what, const std::vector<T>& a, const std::vector<T>& b) {
    return check_identical(what, a.data(), b.data(), a.size() * sizeof(T));
}

inline int finish(const char* program) {
    if (check_failures > 0) {
        printf("%s: %d check(s) FAILED\n", program, check_failures);
        return 1;
    }
    printf("%s: all checks passed (%s build)\n", program, PRECISION_NAME);
    return 0;
}

// ----------------------------------------------------------------------------------------------------
// timing

// whether the timing part runs; on the CPU emulator it does not, and this prints so
inline bool timing_enabled() {
    if (ON_EMULATOR) printf("timing: skipped on the CPU emulator (no GPU timings)\n");
    return !ON_EMULATOR;
}

// median of `reps` timed launches (after 3 warm-up launches), in milliseconds
template <class F> float median_ms(F launch, int reps = 21) {
    if (ON_EMULATOR)
        fail("median_ms: the CPU emulator has no GPU timings (guard the timing with timing_enabled())");
    cudaEvent_t start, stop;
    cudaCheck(cudaEventCreate(&start));
    cudaCheck(cudaEventCreate(&stop));
    for (int i = 0; i < 3; i++) launch();
    std::vector<float> times(reps);
    for (int i = 0; i < reps; i++) {
        cudaCheck(cudaEventRecord(start));
        launch();
        cudaCheck(cudaEventRecord(stop));
        cudaCheck(cudaEventSynchronize(stop));
        cudaCheck(cudaEventElapsedTime(&times[i], start, stop));
    }
    cudaCheck(cudaEventDestroy(start));
    cudaCheck(cudaEventDestroy(stop));
    std::sort(times.begin(), times.end());
    return times[reps / 2];
}

// device-to-device copy bandwidth in GB/s (bytes read + bytes written), the practical roof for a
// memory-bound kernel
inline double measure_copy_bandwidth_gbs() {
    if (ON_EMULATOR) {
        fail("measure_copy_bandwidth_gbs: the CPU emulator has no GPU bandwidth (guard the timing with "
             "timing_enabled())");
    }
    const size_t bytes = 512ull << 20;
    char* a = device_alloc<char>(bytes);
    char* b = device_alloc<char>(bytes);
    float ms = median_ms([&] { cudaCheck(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice)); }, 11);
    cudaCheck(cudaFree(a));
    cudaCheck(cudaFree(b));
    return 2.0 * bytes / (ms * 1e-3) / 1e9;
}

inline void report_bandwidth(const char* what, double bytes, float ms, double copy_gbs) {
    double gbs = bytes / (ms * 1e-3) / 1e9;
    printf("time %-60s %8.3f ms  %7.1f GB/s  (%.0f%% of copy bandwidth %.0f GB/s)\n", what, ms, gbs,
           100.0 * gbs / copy_gbs, copy_gbs);
}

inline void report_time(const char* what, float ms) {
    printf("time %-60s %8.3f ms\n", what, ms);
}

inline void print_device() {
    int device = 0;
    cudaCheck(cudaGetDevice(&device));
    cudaDeviceProp prop;
    cudaCheck(cudaGetDeviceProperties(&prop, device));
    printf("device: %s (sm_%d%d), %s build\n", prop.name, prop.major, prop.minor, PRECISION_NAME);
}
