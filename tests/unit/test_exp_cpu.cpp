// test_exp_cpu.cpp: llmc/exp_cpu.h's exp_poly, the e^x of the CPU trainer's GELU and softmax, against exp in
// double on a dense sweep of its range, and at its edges.
// Bound: 1.2e-7 relative, one fp32 ulp (2^-23) at worst, 1.5x the measured 7.8e-8; GELU's tanh through it
// needs ~1e-7 absolute. Tried mutants, each over it: 1/720 -> 1/700 (1.8e-7), the r^7 term dropped (2.5e-7),
// the low part of ln 2 rounded to 1.4e-6 (3.7e-6).
#include <cmath>
#include <cstdio>

#include "llmc/exp_cpu.h"
#include "tests/common/test_common.h"

int main() {
    test_list_checks();
    double worst = 0.0, worst_x = 0.0;
    for (double xd = -87.0; xd <= 88.0; xd += 7.3e-5) {
        const float x = (float)xd;
        const double e = std::fabs(exp_poly(x) - std::exp((double)x)) / std::exp((double)x);
        if (!(e <= worst)) worst = e, worst_x = x;
    }
    CHECK_LE(worst, 1.2e-7, "exp_poly on [-87, 88] (2.4M points): max relative error (at x = %.6g)", worst_x);
    CHECK(exp_poly(0.0f) == 1.0f, "exp_poly(0) = 1 exactly (got %.9g)", exp_poly(0.0f));
    const float lo = exp_poly(-1000.0f), hi = exp_poly(1000.0f);
    CHECK(lo > 0.0f && lo < 2e-38f, "exp_poly(-1000) clamps to a tiny positive normal (got %g)", lo);
    CHECK(std::isfinite(hi) && hi > 1e38f, "exp_poly(1000) clamps to a large finite value (got %g)", hi);
    CHECK(exp_poly(-INFINITY) == lo, "exp_poly(-inf) is the clamped value");
    return test_summary("test_exp_cpu");
}
