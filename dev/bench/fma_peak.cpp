// fma_peak: this machine's single-precision FMA peak, measured: every thread runs 12 independent chains of
// vector fused multiply-adds (enough chains to cover the FMA latency on both FMA pipes), and the rate is
// flops = threads x iterations x 12 chains x lanes x 2. Prints the median GFLOP/s of 5 runs, with
// OMP_NUM_THREADS threads (default: all cores). The vector type is the one the trainer's matmuls use
// (llmc/matmul_cpu.h: 16 lanes where the build targets AVX-512, 8 otherwise).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <omp.h>
#include <vector>

#include "llmc/matmul_cpu.h"

int main() {
    const long iters = 50'000'000;
    std::vector<double> rates;
    float sink = 0.0f;
    for (int run = 0; run < 5; run++) {
        auto t0 = std::chrono::steady_clock::now();
        int threads = 1;
#pragma omp parallel reduction(+ : sink)
        {
            threads = omp_get_num_threads();
            vecf acc[12];
            for (int i = 0; i < 12; i++) acc[i] = vecf{} + (1.0f + i * 1e-3f);
            const vecf a = vecf{} + 0.999999f, b = vecf{} + 1e-7f;
            for (long it = 0; it < iters; it++)
                for (int i = 0; i < 12; i++) acc[i] = acc[i] * a + b;
            for (int i = 0; i < 12; i++)
                for (int l = 0; l < MATMUL_VW; l++) sink += acc[i][l];
        }
        double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        rates.push_back((double)threads * iters * 12 * MATMUL_VW * 2 / s / 1e9);
    }
    std::sort(rates.begin(), rates.end());
    printf("fma peak: %.1f GFLOP/s with %d threads, %d-lane vectors (median of 5; checksum %g)\n", rates[2],
           omp_get_max_threads(), MATMUL_VW, (double)sink);
    return 0;
}
