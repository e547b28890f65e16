// test_matmul_cpu.cpp: the CPU trainer's matmul (llmc/matmul_cpu.h) against a double-precision reference,
// on shapes that cut every block and tile at an edge, in the three forms the trainer calls (A and B
// row-major, A transposed, B transposed or packed ahead), with a bias, without, and accumulating; and its
// determinism: the same bits run to run, with 1 or 2 threads, and for a row whatever rows are batched with
// it. Tolerance: the error of an element relative to sum_k |a_k b_k| (the scale of a K-term fp32 sum's
// rounding errors) is at most 2e-6, ~10x the largest measured (2.1e-7); one term dropped or counted twice
// moves an element by |a_k b_k|, about that sum / K (1/700 here at the largest K: ~700x over the bound),
// which the planted bugs of test_matmul_cpu.sh rely on.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <omp.h>
#include <random>
#include <vector>

#include "llmc/matmul_cpu.h"
#include "tests/common/test_common.h"

struct Shape {
    int M, N, K;
};

// C(M,N) = base + A.B in double, and the sum of |a_k b_k| per element (the error scale)
static void reference(std::vector<double>& ref, std::vector<double>& scale, const std::vector<float>& base,
                      MatrixView A, MatrixView B, int M, int N, int K) {
    ref.assign((size_t)M * N, 0.0);
    scale.assign((size_t)M * N, 0.0);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double s = base[(size_t)m * N + n], a = std::fabs(s);
            for (int k = 0; k < K; k++) {
                const double p = (double)A.at(m, k) * B.at(k, n);
                s += p;
                a += std::fabs(p);
            }
            ref[(size_t)m * N + n] = s;
            scale[(size_t)m * N + n] = a;
        }
}

// the largest |C - ref| / (scale + 1e-30) over all elements
static double max_rel_error(const std::vector<float>& C, const std::vector<double>& ref,
                            const std::vector<double>& scale) {
    double worst = 0.0;
    for (size_t i = 0; i < C.size(); i++) {
        const double e = std::fabs(C[i] - ref[i]) / (scale[i] + 1e-30);
        if (!(e <= worst)) worst = e; // a NaN becomes the worst
    }
    return worst;
}

static std::vector<float> random_vector(size_t n, std::mt19937& rng) {
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> v(n);
    for (float& x : v) x = u(rng);
    return v;
}

static const double TOL = 2e-6;

// one shape in every form: out = bias + inp.W^T (W given, or packed), dinp += dout.W, dW += dout^T.inp
static void test_shape(const Shape& s, std::mt19937& rng) {
    const int M = s.M, N = s.N, K = s.K;
    std::vector<double> ref, scale;
    // forward form: A = x (M,K) row-major, B = W^T with W (N,K) row-major, bias (N)
    std::vector<float> x = random_vector((size_t)M * K, rng), W = random_vector((size_t)N * K, rng),
                       bias = random_vector(N, rng);
    const MatrixView xa{x.data(), (size_t)K, 1}, wt{W.data(), 1, (size_t)K};
    std::vector<float> base((size_t)M * N);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) base[(size_t)m * N + n] = bias[n];
    reference(ref, scale, base, xa, wt, M, N, K);
    std::vector<float> C((size_t)M * N, NAN); // overwritten: what was there must not matter
    matmul_cpu(C.data(), N, xa, wt, nullptr, M, N, K, bias.data(), false);
    CHECK_LE(max_rel_error(C, ref, scale), TOL, "M=%d N=%d K=%d forward (B = W^T) with bias", M, N, K);

    std::vector<float> packed(matmul_packed_b_size(N, K), NAN);
    matmul_pack_b_all(packed.data(), wt, N, K);
    std::vector<float> Cp((size_t)M * N, NAN);
    matmul_cpu(Cp.data(), N, xa, wt, packed.data(), M, N, K, bias.data(), false);
    CHECK(memcmp(Cp.data(), C.data(), C.size() * sizeof(float)) == 0,
          "M=%d N=%d K=%d forward with W packed ahead: the same bits as packed on the fly", M, N, K);

    std::fill(base.begin(), base.end(), 0.0f);
    reference(ref, scale, base, xa, wt, M, N, K);
    matmul_cpu(C.data(), N, xa, wt, nullptr, M, N, K, nullptr, false);
    CHECK_LE(max_rel_error(C, ref, scale), TOL, "M=%d N=%d K=%d forward without bias", M, N, K);

    // input-gradient form, accumulating: D (M,N) += G (M,K) . W2 (K,N), both row-major
    std::vector<float> G = random_vector((size_t)M * K, rng), W2 = random_vector((size_t)K * N, rng);
    std::vector<float> D = random_vector((size_t)M * N, rng);
    const MatrixView ga{G.data(), (size_t)K, 1}, w2{W2.data(), (size_t)N, 1};
    reference(ref, scale, D, ga, w2, M, N, K);
    matmul_cpu(D.data(), N, ga, w2, nullptr, M, N, K, nullptr, true);
    CHECK_LE(max_rel_error(D, ref, scale), TOL, "M=%d N=%d K=%d accumulate, A and B row-major", M, N, K);

    // weight-gradient form, accumulating: dW (M,N) += dout^T . inp, dout (K,M), inp (K,N)
    std::vector<float> dout = random_vector((size_t)K * M, rng), inp = random_vector((size_t)K * N, rng);
    std::vector<float> dW = random_vector((size_t)M * N, rng);
    const MatrixView dt{dout.data(), 1, (size_t)M}, ia{inp.data(), (size_t)N, 1};
    reference(ref, scale, dW, dt, ia, M, N, K);
    matmul_cpu(dW.data(), N, dt, ia, nullptr, M, N, K, nullptr, true);
    CHECK_LE(max_rel_error(dW, ref, scale), TOL, "M=%d N=%d K=%d accumulate, A transposed", M, N, K);
}

// The same bits: twice, with 1 thread and with 2 (however the items are split), and row by row (a row's
// result does not depend on the batch: the sampling forward runs 1 row where training ran 256).
static void test_determinism(std::mt19937& rng) {
    const int M = 301, N = 211, K = 700; // 2 M blocks, 5 panels, 3 K blocks, edges everywhere
    std::vector<float> x = random_vector((size_t)M * K, rng), W = random_vector((size_t)N * K, rng),
                       bias = random_vector(N, rng);
    const MatrixView xa{x.data(), (size_t)K, 1}, wt{W.data(), 1, (size_t)K};
    std::vector<float> c1((size_t)M * N), c2((size_t)M * N), c3((size_t)M * N), row(N);
    const int threads = omp_get_max_threads();
    omp_set_num_threads(2);
    matmul_cpu(c1.data(), N, xa, wt, nullptr, M, N, K, bias.data(), false);
    matmul_cpu(c2.data(), N, xa, wt, nullptr, M, N, K, bias.data(), false);
    omp_set_num_threads(1);
    matmul_cpu(c3.data(), N, xa, wt, nullptr, M, N, K, bias.data(), false);
    omp_set_num_threads(threads);
    CHECK(memcmp(c1.data(), c2.data(), c1.size() * sizeof(float)) == 0, "two runs give the same bits");
    CHECK(memcmp(c1.data(), c3.data(), c1.size() * sizeof(float)) == 0, "1 and 2 threads give the same bits");
    int differing = 0;
    for (int m : {0, 7, 8, 255, 256, 300}) {
        const MatrixView one{x.data() + (size_t)m * K, (size_t)K, 1};
        matmul_cpu(row.data(), N, one, wt, nullptr, 1, N, K, bias.data(), false);
        differing += memcmp(row.data(), c1.data() + (size_t)m * N, N * sizeof(float)) != 0;
    }
    CHECK(differing == 0, "a row alone gives the bits it has in a batch of %d (%d of 6 rows differ)", M,
          differing);
}

int main() {
    test_list_checks();
    printf("matmul: MR=%d NR=%d (vectors of %d floats) KC=%d MC=%d, %d threads\n", MATMUL_MR, MATMUL_NR,
           MATMUL_VW, MATMUL_KC, MATMUL_MC, omp_get_max_threads());
    std::mt19937 rng(42);
    // 1x1x1; under one tile; tile edges in M and N; K past one block; M past one block; the trainer's
    // shapes at small scale (K a multiple of 8, N of 16); a panel's exact width; wider than a work item,
    // so that A is packed once for the call (3 x 1000), also with 2 M blocks and 3 K blocks (300 x 800)
    const Shape shapes[] = {{1, 1, 1},    {5, 3, 7},      {9, 49, 17},   {17, 97, 257},  {263, 50, 33},
                            {64, 96, 64}, {130, 48, 513}, {3, 1000, 40}, {300, 800, 600}};
    for (const Shape& s : shapes) test_shape(s, rng);
    test_determinism(rng);
    // K = 0: the bias (or 0) is written, an accumulated C is left as it was
    std::vector<float> c = {5.0f, 6.0f}, bias = {1.0f, 2.0f};
    const MatrixView none{nullptr, 0, 0};
    matmul_cpu(c.data(), 2, none, none, nullptr, 1, 2, 0, nullptr, true);
    CHECK(c[0] == 5.0f && c[1] == 6.0f, "K=0 accumulating leaves C as it was");
    matmul_cpu(c.data(), 2, none, none, nullptr, 1, 2, 0, bias.data(), false);
    CHECK(c[0] == 1.0f && c[1] == 2.0f, "K=0 writes the bias");
    return test_summary("test_matmul_cpu");
}
