// attention_sim.cpp: runs the CUDA kernels of llmc/attention.cuh, their own source code, on the CPU.
//
// tests/test_flash_tiling.cpp checks the algorithm; this checks the kernels' code without a GPU: the
// indexing, the masks, the shared-memory layout and overlays, the __syncthreads/__syncwarp placement,
// the 128-bit alignment and the tile loads and stores. Each simulated block runs one cooperative fiber
// (ucontext) per CUDA thread, round robin, each running until it waits in a barrier (llmc/cuda_common.h
// here is a host stand-in); a missing barrier shows up as a read of shared memory another thread has not
// written yet. Shared memory is poisoned with NaN bytes before every block and checked for writes past
// the kernel's declared size afterwards.
// The BF16 build runs the WMMA code path against a host nvcuda::wmma (mma.h here) that implements the
// documented fragment semantics, so what it cannot catch is a wrong belief about those semantics; the
// GPU check dev/cuda/attention_check.cu covers that. The build (Makefile) removes the <<<...>>> launch
// syntax from a copy of the header; the launchers are compiled but never called.
//
// Compared with naive double-precision attention; tolerance on max |sim - ref| / max |ref| per tensor:
// FP32 build 1e-5 (fp32 sums of at most ~100 terms); BF16 build 2e-2 (P, dS and the outputs are rounded
// to bf16, 2^-9 relative each; measured ~4e-3).
#include <functional>
#include <ucontext.h>
#include <vector>

#include "llmc/cuda_common.h"
#include "llmc/rand.h"

// the dynamic shared memory every kernel declares as extern; blocks run one at a time
alignas(128) unsigned char att_smem[256 * 1024];

#include "attention_sim.cuh"

// fibers: one per CUDA thread of the block being simulated
struct Fiber {
    ucontext_t context;
    std::vector<char> stack;
    bool done = false;
};
static ucontext_t scheduler_context;
static Fiber* current_fiber = nullptr;
static const std::function<void()>* current_kernel = nullptr;

void sim_yield() {
    swapcontext(&current_fiber->context, &scheduler_context);
}
static void fiber_main() {
    (*current_kernel)();
    current_fiber->done = true; // returning resumes the scheduler (uc_link)
}

// Starts the block's fibers and runs them round robin until all have returned; each runs until it
// waits in a barrier. Kept out of line: getcontext/swapcontext return twice, like setjmp.
__attribute__((noinline)) static void run_block(std::vector<Fiber>& fibers) {
    const int threads = (int)fibers.size();
    for (Fiber& f : fibers) {
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = f.stack.data();
        f.context.uc_stack.ss_size = f.stack.size();
        f.context.uc_link = &scheduler_context;
        makecontext(&f.context, fiber_main, 0);
        f.done = false;
    }
    for (bool running = true; running;) {
        running = false;
        const unsigned long progress = sim_progress;
        for (int t = 0; t < threads; t++) {
            if (fibers[t].done) continue;
            running = true;
            current_fiber = &fibers[t];
            threadIdx = dim3(t);
            swapcontext(&scheduler_context, &fibers[t].context);
        }
        bool all_done = true;
        for (const Fiber& f : fibers) all_done = all_done && f.done;
        if (running && !all_done && progress == sim_progress) {
            fail("simulation: deadlock (threads wait in barriers that not all threads reach)");
        }
    }
}

// Runs kernel() for every block of the grid, one fiber per CUDA thread.
static void launch(dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& kernel) {
    if (smem_bytes > sizeof(att_smem)) fail("simulation: %zu bytes of shared memory requested", smem_bytes);
    gridDim = grid;
    blockDim = block;
    current_kernel = &kernel;
    const int threads = block.x;
    std::vector<Fiber> fibers(threads);
    for (Fiber& f : fibers) f.stack.resize(512 * 1024);
    for (unsigned z = 0; z < grid.z; z++) {
        for (unsigned y = 0; y < grid.y; y++) {
            for (unsigned x = 0; x < grid.x; x++) {
                blockIdx = dim3(x, y, z);
                memset(att_smem, 0xFF, sizeof(att_smem)); // NaN in bf16 and fp32
                sim_block_barrier = SimBarrier{threads, 0, 0};
                for (int w = 0; w < threads / WARP_SIZE; w++)
                    sim_warp_barrier[w] = SimBarrier{WARP_SIZE, 0, 0};
                run_block(fibers);
                for (size_t i = smem_bytes; i < sizeof(att_smem); i++) {
                    if (att_smem[i] != 0xFF)
                        fail("simulation: shared memory written at byte %zu of %zu", i, smem_bytes);
                }
            }
        }
    }
}

// naive causal attention and its backward in double, one query row at a time
static void reference(std::vector<double>& out, std::vector<double>& lse, std::vector<double>& dqkv,
                      const std::vector<float>& qkv, const std::vector<float>& dout, int B, int T, int NH,
                      int HS) {
    const int C = NH * HS;
    const double scale = 1.0 / std::sqrt((double)HS);
    out.assign((size_t)B * T * C, 0.0);
    lse.assign((size_t)B * NH * T, 0.0);
    dqkv.assign((size_t)B * T * 3 * C, 0.0);
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            auto at = [&](int t, int which) {
                return &qkv[((size_t)b * T + t) * 3 * C + which * C + h * HS];
            };
            auto grad = [&](int t, int which) {
                return &dqkv[((size_t)b * T + t) * 3 * C + which * C + h * HS];
            };
            std::vector<double> p(T), ds(T);
            for (int i = 0; i < T; i++) {
                const float* qi = at(i, 0);
                const float* doi = &dout[((size_t)b * T + i) * C + h * HS];
                double mx = -INFINITY;
                for (int j = 0; j <= i; j++) {
                    double dot = 0.0;
                    for (int d = 0; d < HS; d++) dot += (double)qi[d] * at(j, 1)[d];
                    p[j] = dot * scale;
                    mx = std::fmax(mx, p[j]);
                }
                double sum = 0.0;
                for (int j = 0; j <= i; j++) sum += std::exp(p[j] - mx);
                for (int j = 0; j <= i; j++) p[j] = std::exp(p[j] - mx) / sum;
                lse[((size_t)b * NH + h) * T + i] = mx + std::log(sum);
                double Di = 0.0;
                for (int j = 0; j <= i; j++) {
                    double dot = 0.0;
                    for (int d = 0; d < HS; d++) {
                        out[((size_t)b * T + i) * C + h * HS + d] += p[j] * at(j, 2)[d];
                        dot += (double)doi[d] * at(j, 2)[d];
                    }
                    ds[j] = dot;
                    Di += p[j] * dot;
                }
                for (int j = 0; j <= i; j++) {
                    ds[j] = p[j] * (ds[j] - Di) * scale;
                    for (int d = 0; d < HS; d++) {
                        grad(i, 0)[d] += ds[j] * at(j, 1)[d];
                        grad(j, 1)[d] += ds[j] * qi[d];
                        grad(j, 2)[d] += p[j] * doi[d];
                    }
                }
            }
        }
    }
}

template <class Pick>
static double rel_err(const std::vector<float>& got, const std::vector<double>& ref, Pick pick) {
    double max_err = 0.0, max_ref = 0.0;
    for (size_t i = 0; i < ref.size(); i++) {
        if (!pick(i)) continue;
        const double e = std::fabs((double)got[i] - ref[i]);
        if (!(e <= max_err)) max_err = std::isnan(e) ? INFINITY : e;
        max_ref = std::fmax(max_ref, std::fabs(ref[i]));
    }
    return max_err / (max_ref > 0.0 ? max_ref : 1.0);
}

#if defined(ENABLE_FP32)
static const double TOL = 1e-5;
#else
static const double TOL = 2e-2;
#endif

template <int HS> static bool run(int B, int NH, int T) {
    const int C = NH * HS;
    Rng rng;
    rng_init(&rng, 31ull * T + NH + 7 * HS + B);
    std::vector<float> qkv((size_t)B * T * 3 * C), dout((size_t)B * T * C);
    for (float& x : qkv)
        x = (float)(floatX)rng_normal(&rng, 0.0f, 1.5f); // rounded to floatX, as the GPU sees it
    for (float& x : dout) x = (float)(floatX)rng_normal(&rng, 0.0f, 1.0f);
    const std::vector<floatX> qkv_x(qkv.begin(), qkv.end()), dout_x(dout.begin(), dout.end());
    // every output starts as NaN: an element no kernel writes fails the comparison
    std::vector<floatX> out_x(dout.size(), floatX(NAN)), dqkv_x(qkv.size(), floatX(NAN));
    std::vector<float> lse((size_t)B * NH * T, NAN), D((size_t)B * NH * T, NAN);

    const dim3 grid((T + ATT_TILE - 1) / ATT_TILE, NH, B);
    launch(grid, dim3(ATT_THREADS), att_forward_smem_bytes(HS),
           [&] { attention_forward_kernel<HS>(out_x.data(), lse.data(), qkv_x.data(), T, NH); });
    const size_t d_threads = (size_t)B * T * NH * (HS / x128::size);
    launch(dim3((unsigned)((d_threads + 255) / 256)), dim3(256), 0,
           [&] { attention_backward_d_kernel<HS>(D.data(), dout_x.data(), out_x.data(), B, T, NH); });
    launch(grid, dim3(ATT_THREADS), att_backward_smem_bytes(HS), [&] {
        attention_backward_dkdv_kernel<HS>(dqkv_x.data(), dout_x.data(), qkv_x.data(), lse.data(), D.data(),
                                           T, NH);
    });
    launch(grid, dim3(ATT_THREADS), att_backward_smem_bytes(HS), [&] {
        attention_backward_dq_kernel<HS>(dqkv_x.data(), dout_x.data(), qkv_x.data(), lse.data(), D.data(), T,
                                         NH);
    });

    std::vector<double> out_ref, lse_ref, dqkv_ref;
    reference(out_ref, lse_ref, dqkv_ref, qkv, dout, B, T, NH, HS);
    const std::vector<float> out(out_x.begin(), out_x.end()), dqkv(dqkv_x.begin(), dqkv_x.end());
    auto all = [](size_t) { return true; };
    auto part = [C](int which) { return [C, which](size_t i) { return (int)((i % (3 * C)) / C) == which; }; };
    const double e[5] = {rel_err(out, out_ref, all), rel_err(lse, lse_ref, all),
                         rel_err(dqkv, dqkv_ref, part(0)), rel_err(dqkv, dqkv_ref, part(1)),
                         rel_err(dqkv, dqkv_ref, part(2))};
    bool ok = true;
    for (double x : e) ok = ok && x <= TOL;
    printf("  B=%d NH=%d T=%3d HS=%3d: rel err out %.1e lse %.1e dq %.1e dk %.1e dv %.1e  %s\n", B, NH, T, HS,
           e[0], e[1], e[2], e[3], e[4], ok ? "ok" : "FAIL");
    return ok;
}

int main() {
    printf(
        "flash attention kernels simulated on the CPU, %s build (tile %d, %d threads per block), tolerance "
        "%.0e\n",
        PRECISION_NAME, ATT_TILE, ATT_THREADS, TOL);
    int failures = 0;
    failures += !run<64>(2, 2, 77); // partial last tile, 2 heads, 2 sequences
    failures += !run<128>(1, 1, 80);
    failures += !run<64>(1, 1, 1); // one token
    printf("%s: %d failure(s)\n", failures == 0 ? "PASS" : "FAIL", failures);
    return failures == 0 ? 0 : 1;
}
