// bench_matmul_cpu: llmc/matmul_cpu.h's matmul at the shapes of one d12 training step at B=4, T=64
// (BT = 256 rows): for each of a layer's four matmuls and the classifier, the forward, the input gradient and
// the weight gradient, the median time of 5 runs and the GFLOP/s. The last line is the step's total, its
// layers' matmuls counted 12 times.
//   build/bench_matmul_cpu [BT]      (OMP_NUM_THREADS threads; built by dev/bench/bench_cpu.sh)
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <omp.h>
#include <vector>

#include "llmc/matmul_cpu.h"

static double median_seconds(const std::vector<double>& t) {
    std::vector<double> s = t;
    std::sort(s.begin(), s.end());
    return s[s.size() / 2];
}

int main(int argc, char** argv) {
    const int BT = argc > 1 ? atoi(argv[1]) : 256, C = 768, Vp = 50304, L = 12;
    struct Layer {
        const char* name;
        int IN, OC, count;
    } layers[] = {{"qkv", C, 3 * C, L},
                  {"attproj", C, C, L},
                  {"fc", C, 4 * C, L},
                  {"fcproj", 4 * C, C, L},
                  {"classifier", C, Vp, 1}};
    std::vector<float> big((size_t)Vp * C), x((size_t)BT * 4 * C), y((size_t)BT * Vp), w((size_t)Vp * C);
    for (size_t i = 0; i < big.size(); i++) big[i] = w[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
    for (size_t i = 0; i < x.size(); i++) x[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
    for (size_t i = 0; i < y.size(); i++) y[i] = (float)((i * 15485863) % 1000) * 1e-3f - 0.5f;
    printf("matmul MR=%d NR=%d (%d-lane vectors) KC=%d MC=%d, %d threads, BT=%d\n", MATMUL_MR, MATMUL_NR,
           MATMUL_VW, MATMUL_KC, MATMUL_MC, omp_get_max_threads(), BT);
    double step_s = 0, step_flops = 0;
    for (const Layer& l : layers) {
        const int IN = l.IN, OC = l.OC;
        const double flops = 2.0 * BT * IN * OC;
        // forward: out(BT,OC) = x(BT,IN).W^T; dinp(BT,IN) += dout(BT,OC).W; dW(OC,IN) += dout^T.x
        const char* what[3] = {"forward", "input grad", "weight grad"};
        for (int form = 0; form < 3; form++) {
            std::vector<double> t;
            for (int run = 0; run < 5; run++) {
                auto t0 = std::chrono::steady_clock::now();
                if (form == 0)
                    matmul_cpu(y.data(), OC, MatrixView{x.data(), (size_t)IN, 1},
                               MatrixView{w.data(), 1, (size_t)IN}, nullptr, BT, OC, IN, nullptr, false);
                else if (form == 1)
                    matmul_cpu(x.data(), IN, MatrixView{y.data(), (size_t)OC, 1},
                               MatrixView{w.data(), (size_t)IN, 1}, nullptr, BT, IN, OC, nullptr, true);
                else
                    matmul_cpu(big.data(), IN, MatrixView{y.data(), 1, (size_t)OC},
                               MatrixView{x.data(), (size_t)IN, 1}, nullptr, OC, IN, BT, nullptr, true);
                t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
            }
            const double s = median_seconds(t);
            printf("%-10s %-11s (%5d x %5d) . (%5d x %5d)  %8.2f ms  %6.1f GFLOP/s\n", l.name, what[form],
                   form == 2 ? OC : BT, form == 2 ? BT : (form == 0 ? IN : OC),
                   form == 2 ? BT : (form == 0 ? IN : OC), form == 1 ? IN : (form == 0 ? OC : IN), 1e3 * s,
                   flops / s / 1e9);
            step_s += l.count * s;
            step_flops += l.count * flops;
        }
    }
    printf("all matmuls of a step: %.1f ms, %.1f GFLOP/s\n", 1e3 * step_s, step_flops / step_s / 1e9);
    return 0;
}
