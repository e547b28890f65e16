// attention_check.cu: checks the flash attention kernels of llmc/attention.cuh on a GPU, then times them.
//
//   make dev/cuda/attention_check && ./dev/cuda/attention_check             (BF16 build)
//   make dev/cuda/attention_check_fp32 && ./dev/cuda/attention_check_fp32   (FP32 build, tight tolerances)
//   ./dev/cuda/attention_check --quick     only the two small shapes, no timing (a smoke test)
//   make build/emu/attention_check && build/emu/attention_check     (CPU emulator, dev/cuda/emu: the small
//       shapes plus two whose T is a whole number of tiles, as in the T = 1024 shapes, which would take
//       hours there; no timing)
//
// For each shape (B, NH, T, HS): random qkv and dout, rounded to floatX; the CPU reference is naive
// causal attention in double (every row of the full score matrix, one row at a time) and its analytic
// backward (attention_ref, tests/common/reference.h), computed from the same rounded inputs. Every output
// buffer is poisoned with 0xFF bytes (NaN in bf16 and fp32) before each launch, so an element a kernel
// forgets to write fails the comparison. The forward and backward then run a second time and all outputs
// must be bit-identical to the first run.
//
// Errors are measured per tensor (out, lse, dq, dk, dv), relative to that tensor's own magnitude:
//   max: max |gpu - ref| / max |ref|           rms: ||gpu - ref||_2 / ||ref||_2
// For out also the worst row: max over (b, t, h) of ||gpu - ref|| / ||ref|| over the row's HS values,
// with the "max" tolerance, so an error confined to late query tiles (small outputs) cannot hide.
// BF16 tolerances: out, dq, dk, dv max 3e-2, rms 1.5e-2. One bf16 rounding is a relative error of up to
// 2^-9 = 0.2%; the kernels round P and dS to bf16 before their matmuls, the backward uses the bf16 out
// for D = rowsum(dO * O), and every output is rounded to bf16 once more: a handful of roundings, a few
// tenths of a percent each, give ~0.5% rms; a fragment mix-up or a missing tile gives errors of order 1.
// lse max absolute error 2e-3: it comes from fp32 sums of exact bf16 products.
// FP32 build: max 1e-4, rms 2e-5, lse 1e-4 (fp32 sums over at most T = 1024 terms).
//
// Then timing: median of 20 runs of attention_forward and of attention_backward, in ms and TFLOP/s with
// causal flop counts: forward 4 * B * NH * T * T * HS / 2 (two matmuls, half the matrix), backward 2.5x
// the forward (five matmuls to the forward's two). dev/cuda/attention_sdpa_bench.py prints the same
// figures for PyTorch's flash SDPA at the same shapes. Exits non-zero on any failure.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "dev/cuda/check_common.h"
#include "llmc/attention.cuh"
#include "llmc/rand.h"

struct Shape {
    const char* name;
    int B, NH, T, HS;
    bool timed;
};

inline float to_float(__nv_bfloat16 x) {
    return __bfloat162float(x);
}
inline float to_float(float x) {
    return x;
}
inline floatX to_floatX(float x) {
    return (floatX)x;
}

// ----------------------------------------------------------------------------------------------------
// comparison

struct Tol {
    double max, rms;
};
#if defined(ENABLE_FP32)
static const Tol TOL_TENSOR = {1e-4, 2e-5};
static const double TOL_LSE = 1e-4;
#else
static const Tol TOL_TENSOR = {3e-2, 1.5e-2};
static const double TOL_LSE = 2e-3;
#endif

// Compares the elements i with pick(i); prints one line; NaN anywhere fails.
template <class Got, class Pick>
static bool compare(const char* what, const std::vector<Got>& got, const std::vector<double>& ref, Pick pick,
                    bool absolute, Tol tol) {
    double max_err = 0.0, max_ref = 0.0, sum_err2 = 0.0, sum_ref2 = 0.0;
    size_t nan_count = 0;
    for (size_t i = 0; i < ref.size(); i++) {
        if (!pick(i)) continue;
        const double g = (double)to_float(got[i]);
        if (std::isnan(g)) {
            nan_count++;
            continue;
        }
        const double e = std::fabs(g - ref[i]);
        max_err = std::max(max_err, e);
        max_ref = std::max(max_ref, std::fabs(ref[i]));
        sum_err2 += e * e;
        sum_ref2 += ref[i] * ref[i];
    }
    const double max_rel = absolute ? max_err : max_err / std::max(max_ref, 1e-30);
    const double rms_rel = absolute ? 0.0 : std::sqrt(sum_err2 / std::max(sum_ref2, 1e-300));
    const bool ok = nan_count == 0 && max_rel <= tol.max && rms_rel <= tol.rms;
    printf("    %-4s %s err %.2e (tol %.1e)", what, absolute ? "max abs" : "max rel", max_rel, tol.max);
    if (!absolute) printf("  rms rel %.2e (tol %.1e)", rms_rel, tol.rms);
    if (nan_count) printf("  %zu NaN (unwritten or non-finite)", nan_count);
    printf("  %s\n", ok ? "ok" : "FAIL");
    return ok;
}

// Worst row: max over rows of ||gpu_row - ref_row|| / ||ref_row||, rows of `width` elements. The whole-
// tensor measures are dominated by the largest rows (early queries average few values); this one sees an
// error confined to a late tile. Used for out, whose rows are never near zero.
static bool compare_rows(const char* what, const std::vector<floatX>& got, const std::vector<double>& ref,
                         int width, double tol) {
    double worst = 0.0;
    for (size_t row = 0; row < ref.size() / width; row++) {
        double err2 = 0.0, ref2 = 0.0;
        for (int d = 0; d < width; d++) {
            const double r = ref[row * width + d], e = (double)to_float(got[row * width + d]) - r;
            err2 += e * e;
            ref2 += r * r;
        }
        const double rel = std::sqrt(err2 / std::max(ref2, 1e-300));
        if (!(rel <= worst)) worst = std::isnan(rel) ? INFINITY : rel;
    }
    const bool ok = worst <= tol;
    printf("    %-4s worst row rel err %.2e (tol %.1e)  %s\n", what, worst, tol, ok ? "ok" : "FAIL");
    return ok;
}

// ----------------------------------------------------------------------------------------------------
// one shape: correctness, determinism, timing

struct DeviceBuffers {
    floatX *qkv, *out, *dout, *dqkv;
    float* lse;
    void* scratch;
};

static void run_once(const DeviceBuffers& d, const Shape& s) {
    const int C = s.NH * s.HS;
    // poison every output: an element a kernel forgets to write reads back as NaN
    cudaCheck(cudaMemset(d.out, 0xFF, (size_t)s.B * s.T * C * sizeof(floatX)));
    cudaCheck(cudaMemset(d.lse, 0xFF, (size_t)s.B * s.NH * s.T * sizeof(float)));
    cudaCheck(cudaMemset(d.dqkv, 0xFF, (size_t)s.B * s.T * 3 * C * sizeof(floatX)));
    cudaCheck(cudaMemset(d.scratch, 0xFF, attention_backward_scratch_bytes(s.B, s.T, s.NH, s.HS)));
    attention_forward(d.out, d.lse, d.qkv, s.B, s.T, s.NH, s.HS, 0);
    attention_backward(d.dqkv, d.dout, d.qkv, d.out, d.lse, d.scratch, s.B, s.T, s.NH, s.HS, 0);
    cudaCheck(cudaDeviceSynchronize());
}

static bool check_shape(const Shape& s, bool timing) {
    const int B = s.B, T = s.T, NH = s.NH, HS = s.HS, C = NH * HS;
    printf("%s: B=%d NH=%d T=%d HS=%d\n", s.name, B, NH, T, HS);
    const size_t n_qkv = (size_t)B * T * 3 * C, n_out = (size_t)B * T * C, n_lse = (size_t)B * NH * T;

    Rng rng;
    rng_init(&rng, 7919ull * T + 31 * NH + HS + 1000003ull * B);
    std::vector<floatX> qkv(n_qkv), dout(n_out);
    std::vector<float> qkv_f(n_qkv), dout_f(n_out); // the rounded values, for the reference
    // q and k 1.5x wider than N(0, 1): the scaled scores spread ~2.25, so softmax rows are peaked, as
    // in a trained model, and the running max of the online softmax moves from tile to tile
    for (size_t i = 0; i < n_qkv; i++) {
        const bool is_v = (i % (3 * C)) >= (size_t)2 * C;
        qkv[i] = to_floatX(rng_normal(&rng, 0.0f, is_v ? 1.0f : 1.5f));
        qkv_f[i] = to_float(qkv[i]);
    }
    for (size_t i = 0; i < n_out; i++) {
        dout[i] = to_floatX(rng_normal(&rng, 0.0f, 1.0f));
        dout_f[i] = to_float(dout[i]);
    }

    DeviceBuffers d;
    cudaCheck(cudaMalloc(&d.qkv, n_qkv * sizeof(floatX)));
    cudaCheck(cudaMalloc(&d.out, n_out * sizeof(floatX)));
    cudaCheck(cudaMalloc(&d.dout, n_out * sizeof(floatX)));
    cudaCheck(cudaMalloc(&d.dqkv, n_qkv * sizeof(floatX)));
    cudaCheck(cudaMalloc(&d.lse, n_lse * sizeof(float)));
    cudaCheck(cudaMalloc(&d.scratch, attention_backward_scratch_bytes(B, T, NH, HS)));
    cudaCheck(cudaMemcpy(d.qkv, qkv.data(), n_qkv * sizeof(floatX), cudaMemcpyHostToDevice));
    cudaCheck(cudaMemcpy(d.dout, dout.data(), n_out * sizeof(floatX), cudaMemcpyHostToDevice));

    // run 1
    run_once(d, s);
    std::vector<floatX> out(n_out), dqkv(n_qkv);
    std::vector<float> lse(n_lse);
    cudaCheck(cudaMemcpy(out.data(), d.out, n_out * sizeof(floatX), cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(dqkv.data(), d.dqkv, n_qkv * sizeof(floatX), cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(lse.data(), d.lse, n_lse * sizeof(float), cudaMemcpyDeviceToHost));

    std::vector<double> out_ref, lse_ref, dqkv_ref;
    attention_ref(out_ref, lse_ref, dqkv_ref, qkv_f, dout_f, B, T, NH, HS);
    auto all = [](size_t) { return true; };
    auto part = [C](int which) { return [C, which](size_t i) { return (int)((i % (3 * C)) / C) == which; }; };
    bool ok = true;
    ok &= compare("out", out, out_ref, all, false, TOL_TENSOR);
    ok &= compare_rows("out", out, out_ref, HS, TOL_TENSOR.max);
    ok &= compare("lse", lse, lse_ref, all, true, Tol{TOL_LSE, 0.0});
    ok &= compare("dq", dqkv, dqkv_ref, part(0), false, TOL_TENSOR);
    ok &= compare("dk", dqkv, dqkv_ref, part(1), false, TOL_TENSOR);
    ok &= compare("dv", dqkv, dqkv_ref, part(2), false, TOL_TENSOR);

    // run 2: bit-identical?
    run_once(d, s);
    std::vector<floatX> out2(n_out), dqkv2(n_qkv);
    std::vector<float> lse2(n_lse);
    cudaCheck(cudaMemcpy(out2.data(), d.out, n_out * sizeof(floatX), cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(dqkv2.data(), d.dqkv, n_qkv * sizeof(floatX), cudaMemcpyDeviceToHost));
    cudaCheck(cudaMemcpy(lse2.data(), d.lse, n_lse * sizeof(float), cudaMemcpyDeviceToHost));
    const bool same = memcmp(out.data(), out2.data(), n_out * sizeof(floatX)) == 0 &&
                      memcmp(dqkv.data(), dqkv2.data(), n_qkv * sizeof(floatX)) == 0 &&
                      memcmp(lse.data(), lse2.data(), n_lse * sizeof(float)) == 0;
    printf("    second run bit-identical: %s\n", same ? "yes" : "NO (FAIL)");
    ok &= same;

    if (s.timed && timing) {
        const int reps = 20; // after check_common.h's 3 warm-up runs
        const double f = median_ms([&] { attention_forward(d.out, d.lse, d.qkv, B, T, NH, HS, 0); }, reps);
        const double bk = median_ms(
            [&] { attention_backward(d.dqkv, d.dout, d.qkv, d.out, d.lse, d.scratch, B, T, NH, HS, 0); },
            reps);
        const double fwd_flops = 4.0 * B * NH * (double)T * T * HS / 2.0, bwd_flops = 2.5 * fwd_flops;
        printf("    timing (median of %d): forward %.3f ms %.1f TFLOP/s   backward %.3f ms %.1f TFLOP/s   "
               "fwd+bwd %.3f ms\n",
               reps, f, fwd_flops / (f * 1e-3) / 1e12, bk, bwd_flops / (bk * 1e-3) / 1e12, f + bk);
    }

    cudaCheck(cudaFree(d.qkv));
    cudaCheck(cudaFree(d.out));
    cudaCheck(cudaFree(d.dout));
    cudaCheck(cudaFree(d.dqkv));
    cudaCheck(cudaFree(d.lse));
    cudaCheck(cudaFree(d.scratch));
    printf("    %s\n", ok ? "PASS" : "FAIL");
    return ok;
}

int main(int argc, char** argv) {
    bool quick = false;
    if (argc == 2 && strcmp(argv[1], "--quick") == 0) {
        quick = true;
    } else if (argc != 1) {
        fail("usage: %s [--quick]   (--quick: only the small shapes, no timing)", argv[0]);
    }
    int device = 0;
    cudaDeviceProp prop;
    cudaCheck(cudaGetDevice(&device));
    cudaCheck(cudaGetDeviceProperties(&prop, device));
    printf("flash attention check, %s build, tile %d, on %s (sm_%d%d)\n", PRECISION_NAME, ATT_TILE, prop.name,
           prop.major, prop.minor);
    printf("shared memory per block: forward HS=64 %zu B, HS=128 %zu B; backward HS=64 %zu B, HS=128 %zu B\n",
           att_forward_smem_bytes(64), att_forward_smem_bytes(128), att_backward_smem_bytes(64),
           att_backward_smem_bytes(128));
    const Shape shapes[] = {
        {"d12 (GPT-2 124M)", 4, 12, 1024, 64, true}, {"d24 style", 4, 16, 1024, 64, true},
        {"HS=128", 2, 8, 1024, 128, true},           {"T not a multiple of 64", 2, 3, 200, 64, false},
        {"HS=128, short T", 1, 2, 77, 128, false},
    };
    // on the CPU emulator (ON_EMULATOR, check_common.h): the small shapes and these, no timing
    const Shape emulator_shapes[] = {
        {"T a multiple of the tile", 1, 2, 192, 64, false},
        {"HS=128, T a multiple of the tile", 1, 1, 128, 128, false},
    };
    const bool small_only = quick || ON_EMULATOR;
    const bool timing = !quick && timing_enabled(); // prints that the emulator skips it
    int failures = 0;
    for (const Shape& s : shapes) {
        if (!small_only || s.T < 1024) failures += !check_shape(s, timing);
    }
    if (ON_EMULATOR) {
        for (const Shape& s : emulator_shapes) failures += !check_shape(s, false);
    }
    printf("%s: %d shape(s) failed\n", failures == 0 ? "PASS" : "FAIL", failures);
    return failures == 0 ? 0 : 1;
}
