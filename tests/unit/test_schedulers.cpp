// test_schedulers.cpp: checks the small host-side headers both trainers share:
//   llmc/schedulers.h  every schedule against formulas re-written here in double, plus anchor values
//                      that follow from the definitions alone (peak after warmup, (peak+final)/2 at
//                      the midpoint, final at the last step), monotonicity, edge cases, bad input;
//                      batch-size scaling rules
//   llmc/rand.h        uniform and normal moments over 1e6 draws against their statistical error,
//                      determinism, state save/restore, Fisher-Yates uniformity
//   llmc/sampler.h     argmax at temperature <= 0; inverse-CDF sampling against a long-double softmax
//                      (exactly, on a grid of coins, and statistically, on random coins)
//   llmc/logger.h      line formats, truncation on a fresh run, resume keeping only s: <= step
// Tolerances: lr values are fp32 results of a double computation, so they are within 2^-24 relative
// of the exact value; 1e-6 relative is tight enough to catch any off-by-one step (which moves the lr
// by >= 1e-3 relative in these runs). Statistical checks use 5 sigma (3 sigma where the brief asks),
// with a fixed seed, so they are deterministic.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include "llmc/logger.h"
#include "llmc/rand.h"
#include "llmc/sampler.h"
#include "llmc/schedulers.h"
#include "tests/common/test_common.h"

static bool close_rel(double got, double want, double rtol) {
    return std::fabs(got - want) <= rtol * std::max(std::fabs(want), 1e-30);
}

// ----------------------------------------------------------------------------------------------------
// learning-rate schedules

// The definitions, written again from the spec (not from schedulers.h).
static double ref_lr(const char* type, double peak, int warmup, int total, double final_frac,
                     double cooldown_frac, int step) {
    if (step < warmup) return peak * (step + 1) / warmup;
    double lo = final_frac * peak;
    double span = total - 1 - warmup;
    double p = span > 0 ? std::min(1.0, (step - warmup) / span) : 1.0;
    std::string t = type;
    if (t == "cosine") return lo + (peak - lo) * (std::cos(M_PI * p) + 1.0) / 2.0;
    if (t == "linear") return (1.0 - p) * peak + p * lo;
    if (t == "constant") return peak;
    // wsd: straight line from (last stable step, peak) to (total-1, final) over the last K steps
    int K = (int)std::lround(cooldown_frac * total);
    if (K == 0) return peak;
    int last_stable = total - K - 1;
    if (step <= last_stable) return peak;
    double q = std::min(1.0, double(step - last_stable) / K);
    return (1.0 - q) * peak + q * lo;
}

static void test_schedules() {
    printf("schedules: warmup, midpoint, last step, every step vs the reference; monotone; edge cases\n");
    const char* types[] = {"cosine", "linear", "constant", "wsd"};
    const float peak = 6e-4f, ff = 0.1f, cf = 0.2f;
    const int warmup = 10, total = 111; // total-1-warmup = 100: step 60 is the exact midpoint p = 0.5
    const double peakd = peak, lo = (double)ff * peakd;
    for (const char* type : types) {
        LRScheduler s;
        lr_scheduler_init(&s, type, peak, warmup, total, ff, cf);
        bool all_match = true;
        int worst = -1;
        for (int step = 0; step < total + 5; step++) {
            double want = ref_lr(type, peakd, warmup, total, ff, cf, step);
            if (!close_rel(lr_at_step(&s, step), want, 1e-6)) {
                all_match = false;
                if (worst < 0) worst = step;
            }
        }
        CHECK(all_match, "%s: first mismatch at step %d: %g vs %g", type, worst,
              (double)lr_at_step(&s, worst), ref_lr(type, peakd, warmup, total, ff, cf, worst));
        // anchors that follow from the definitions without any formula
        CHECK(close_rel(lr_at_step(&s, 0), peakd / warmup, 1e-6), "%s: step 0 is %g, expected peak/warmup",
              type, (double)lr_at_step(&s, 0));
        CHECK(close_rel(lr_at_step(&s, warmup - 1), peakd, 1e-6), "%s: last warmup step is %g, expected peak",
              type, (double)lr_at_step(&s, warmup - 1));
        CHECK(close_rel(lr_at_step(&s, warmup), peakd, 1e-6),
              "%s: first step after warmup is %g, expected peak", type, (double)lr_at_step(&s, warmup));
        double mid = std::string(type) == "constant" || std::string(type) == "wsd" ? peakd : (peakd + lo) / 2;
        CHECK(close_rel(lr_at_step(&s, 60), mid, 1e-6), "%s: midpoint lr %g, expected %g", type,
              (double)lr_at_step(&s, 60), mid);
        double last = std::string(type) == "constant" ? peakd : lo;
        CHECK(close_rel(lr_at_step(&s, total - 1), last, 1e-6), "%s: last step lr %g, expected %g", type,
              (double)lr_at_step(&s, total - 1), last);
        CHECK(close_rel(lr_at_step(&s, total + 50), last, 1e-6), "%s: past the end lr %g, expected %g", type,
              (double)lr_at_step(&s, total + 50), last);
        // monotone: increasing in warmup, non-increasing after
        bool up = true, down = true;
        for (int step = 1; step < warmup; step++) up &= lr_at_step(&s, step) > lr_at_step(&s, step - 1);
        for (int step = warmup + 1; step < total; step++)
            down &= lr_at_step(&s, step) <= lr_at_step(&s, step - 1);
        CHECK(up && down, "%s: not increasing in warmup (%d) or not non-increasing after (%d)", type, up,
              down);
    }
    // wsd: flat at peak through step total-K-1, then strictly decreasing to final; K = round(0.2*111) = 22
    {
        LRScheduler s;
        lr_scheduler_init(&s, "wsd", peak, warmup, total, ff, cf);
        int K = 22, d = total - K;
        bool flat = true, decaying = true;
        for (int step = warmup; step < d; step++) flat &= lr_at_step(&s, step) == peak;
        for (int step = d; step < total; step++) decaying &= lr_at_step(&s, step) < lr_at_step(&s, step - 1);
        CHECK(flat && decaying, "wsd: flat until step %d (%d), strictly decaying after (%d)", d - 1, flat,
              decaying);
        // halfway down the cooldown line: step d-1 + K/2
        CHECK(close_rel(lr_at_step(&s, d - 1 + K / 2), (peakd + lo) / 2, 1e-6), "wsd: cooldown midpoint %g",
              (double)lr_at_step(&s, d - 1 + K / 2));
    }
    // edge cases
    {
        LRScheduler s;
        lr_scheduler_init(&s, "cosine", 1.0f, 0, 5, 0.0f, 0.0f);
        CHECK(lr_at_step(&s, 0) == 1.0f && lr_at_step(&s, 4) == 0.0f,
              "no warmup: step 0 %g (want 1), step 4 %g (0)", (double)lr_at_step(&s, 0),
              (double)lr_at_step(&s, 4));
        lr_scheduler_init(&s, "linear", 1.0f, 5, 5, 0.0f, 0.0f);
        CHECK(close_rel(lr_at_step(&s, 4), 1.0, 1e-6), "warmup == total: last step %g, want peak",
              (double)lr_at_step(&s, 4));
        lr_scheduler_init(&s, "linear", 1.0f, 4, 5, 0.25f, 0.0f);
        CHECK(close_rel(lr_at_step(&s, 4), 0.25, 1e-6), "warmup == total-1: last step %g, want final 0.25",
              (double)lr_at_step(&s, 4));
        lr_scheduler_init(&s, "wsd", 1.0f, 2, 10, 0.0f, 0.0f);
        CHECK(lr_at_step(&s, 9) == 1.0f, "wsd with cooldown 0 must stay at peak, got %g",
              (double)lr_at_step(&s, 9));
        lr_scheduler_init(&s, "wsd", 1.0f, 0, 10, 0.0f, 1.0f);
        CHECK(close_rel(lr_at_step(&s, 0), 0.9, 1e-6) && lr_at_step(&s, 9) == 0.0f,
              "wsd with cooldown 1: step 0 %g (want 0.9), step 9 %g (want 0)", (double)lr_at_step(&s, 0),
              (double)lr_at_step(&s, 9));
    }
    // bad input
    LRScheduler s;
    expect_failure("unknown schedule", [&] { lr_scheduler_init(&s, "cosin", 1e-3f, 0, 10, 0.f, 0.f); },
                   {"-k", "'cosin'", "cosine, linear, constant, wsd"});
    expect_failure("warmup > total", [&] { lr_scheduler_init(&s, "cosine", 1e-3f, 11, 10, 0.f, 0.f); },
                   {"warmup", "11"});
    expect_failure("final_frac outside [0,1]",
                   [&] { lr_scheduler_init(&s, "linear", 1e-3f, 0, 10, 1.5f, 0.f); }, {"final", "1.5"});
    expect_failure("cooldown_frac outside [0,1]",
                   [&] { lr_scheduler_init(&s, "wsd", 1e-3f, 0, 10, 0.f, -0.1f); }, {"cooldown", "-0.1"});
    expect_failure("wsd warmup overlapping cooldown",
                   [&] { lr_scheduler_init(&s, "wsd", 1e-3f, 6, 10, 0.f, 0.5f); }, {"wsd", "overlap"});
}

static void test_batch_scaling() {
    printf("batch scaling: none, linear (x k), sqrt (x sqrt k); unknown rule fails\n");
    CHECK(close_rel(scale_lr_for_batch(1e-3f, 1000, 4000, "none"), 1e-3, 1e-6), "none");
    CHECK(close_rel(scale_lr_for_batch(1e-3f, 1000, 4000, "linear"), 4e-3, 1e-6), "linear x4: %g",
          (double)scale_lr_for_batch(1e-3f, 1000, 4000, "linear"));
    CHECK(close_rel(scale_lr_for_batch(1e-3f, 1000, 4000, "sqrt"), 2e-3, 1e-6), "sqrt x4: %g",
          (double)scale_lr_for_batch(1e-3f, 1000, 4000, "sqrt"));
    CHECK(close_rel(scale_lr_for_batch(1e-3f, 1000, 500, "sqrt"), 1e-3 / std::sqrt(2.0), 1e-6),
          "sqrt x0.5: %g", (double)scale_lr_for_batch(1e-3f, 1000, 500, "sqrt"));
    CHECK(close_rel(scale_lr_for_batch(1e-3f, 1000, 500, "linear"), 5e-4, 1e-6), "linear x0.5");
    expect_failure("unknown scaling rule", [] { scale_lr_for_batch(1e-3f, 1000, 4000, "cubic"); },
                   {"'cubic'", "none, linear, sqrt"});
}

// ----------------------------------------------------------------------------------------------------
// rng

static void test_rng() {
    printf("rng: uniform and normal moments over 1e6 draws (5 sigma), determinism, save/restore, shuffle\n");
    const int n = 1000000;
    Rng rng;
    rng_init(&rng, 42);
    // uniform: mean 1/2 (sd of the mean sqrt(1/12/n)), variance 1/12 (sd sqrt(1/180/n)), 24-bit grid
    double sum = 0, sum2 = 0;
    bool in_range = true, on_grid = true;
    std::vector<int> bins(100, 0);
    for (int i = 0; i < n; i++) {
        float u = rng_uniform(&rng);
        in_range &= u >= 0.0f && u < 1.0f;
        double scaled = (double)u * 16777216.0;
        on_grid &= scaled == std::floor(scaled);
        sum += u;
        sum2 += (double)u * u;
        bins[std::min(99, (int)(u * 100))]++;
    }
    double mean = sum / n, var = sum2 / n - mean * mean;
    CHECK(in_range && on_grid, "uniform draws outside [0,1) (%d) or not multiples of 2^-24 (%d)", in_range,
          on_grid);
    CHECK(std::fabs(mean - 0.5) < 5 * std::sqrt(1.0 / 12 / n), "uniform mean %.6f", mean);
    CHECK(std::fabs(var - 1.0 / 12) < 5 * std::sqrt(1.0 / 180 / n), "uniform variance %.6f vs %.6f", var,
          1.0 / 12);
    // chi-square over 100 bins: 99 degrees of freedom, mean 99, sd sqrt(2*99) = 14.1
    double chi2 = 0;
    for (int b : bins) chi2 += (b - n / 100.0) * (b - n / 100.0) / (n / 100.0);
    CHECK(chi2 < 99 + 5 * 14.1, "uniform chi-square %.1f over 100 bins", chi2);

    // normal via rng_normal(mean 2, std 3): check the standardized z: mean 0 (sd 1/sqrt n), variance 1
    // (sd sqrt(2/n)), fourth moment 3 (sd sqrt(96/n)), P(|z| > 2) = 0.0455 (sd sqrt(p(1-p)/n))
    auto check_normal = [&](const std::vector<float>& x, double mu, double sd, const char* name) {
        double s1 = 0, s2 = 0, s4 = 0;
        int tail = 0;
        for (float v : x) {
            double z = (v - mu) / sd;
            s1 += z;
            s2 += z * z;
            s4 += z * z * z * z;
            tail += std::fabs(z) > 2.0;
        }
        double m = (double)x.size();
        double ptail = std::erfc(2.0 / std::sqrt(2.0));
        CHECK(std::fabs(s1 / m) < 5 / std::sqrt(m), "%s: mean of z %.5f", name, s1 / m);
        CHECK(std::fabs(s2 / m - 1) < 5 * std::sqrt(2 / m), "%s: variance of z %.5f", name, s2 / m);
        CHECK(std::fabs(s4 / m - 3) < 5 * std::sqrt(96 / m), "%s: 4th moment of z %.4f (want 3)", name,
              s4 / m);
        CHECK(std::fabs(tail / m - ptail) < 5 * std::sqrt(ptail * (1 - ptail) / m),
              "%s: P(|z|>2) %.5f vs %.5f", name, tail / m, ptail);
    };
    std::vector<float> x(n);
    for (int i = 0; i < n; i++) x[i] = rng_normal(&rng, 2.0f, 3.0f);
    check_normal(x, 2.0, 3.0, "rng_normal");
    rng_fill_normal(&rng, x.data(), n, -1.0f, 0.02f);
    check_normal(x, -1.0, 0.02, "rng_fill_normal");
    // the two values of a Box-Muller pair must be uncorrelated: sd of the correlation ~ 1/sqrt(n/2)
    double corr = 0;
    for (int i = 0; i + 1 < n; i += 2) corr += ((x[i] + 1.0) / 0.02) * ((x[i + 1] + 1.0) / 0.02);
    corr /= n / 2;
    CHECK(std::fabs(corr) < 5 / std::sqrt(n / 2.0), "rng_fill_normal pair correlation %.5f", corr);
    std::vector<float> odd(7, 1e9f);
    rng_fill_normal(&rng, odd.data(), 7, 0.0f, 1.0f);
    CHECK(std::fabs(odd[6]) < 10.0f, "rng_fill_normal with odd n left the last value unwritten");

    // determinism and state save/restore
    Rng a, b;
    rng_init(&a, 7);
    rng_init(&b, 7);
    bool same = true;
    for (int i = 0; i < 1000; i++) same &= rng_u64(&a) == rng_u64(&b);
    CHECK(same, "two generators with seed 7 differ");
    rng_init(&b, 8);
    int equal = 0;
    for (int i = 0; i < 1000; i++) equal += rng_u64(&a) == rng_u64(&b);
    CHECK(equal == 0, "seeds 7 and 8 gave %d equal draws of 1000", equal);
    Rng saved = a; // a checkpoint: the whole state is the struct
    std::vector<uint64_t> first;
    for (int i = 0; i < 100; i++) first.push_back(rng_u64(&a));
    float f1 = rng_normal(&a, 0.0f, 1.0f);
    a = saved;
    same = true;
    for (int i = 0; i < 100; i++) same &= rng_u64(&a) == first[i];
    CHECK(same && rng_normal(&a, 0.0f, 1.0f) == f1, "restoring a saved state does not replay the stream");
    // rng_u32 is the high half of the same draw
    Rng c = saved, d = saved;
    CHECK(rng_u32(&c) == (uint32_t)(rng_u64(&d) >> 32), "rng_u32 is not the high half of rng_u64");
    // derived generators: distinct tuples give distinct streams
    Rng e1, e2, e3;
    rng_init_derived(&e1, 1, 0, 0);
    rng_init_derived(&e2, 1, 1, 0);
    rng_init_derived(&e3, 1, 0, 1);
    uint64_t v1 = rng_u64(&e1), v2 = rng_u64(&e2), v3 = rng_u64(&e3);
    CHECK(v1 != v2 && v1 != v3 && v2 != v3, "derived generators for nearby tuples coincide");

    // Fisher-Yates: a permutation, and all 3! = 6 orders equally likely: 60000 shuffles, each order
    // 10000 expected, sd sqrt(60000 * 1/6 * 5/6) = 91.3
    std::vector<int> counts(6, 0);
    for (int t = 0; t < 60000; t++) {
        size_t arr[3] = {0, 1, 2};
        rng_shuffle(&rng, arr, 3);
        int code = (int)(arr[0] * 3 + arr[1]); // (0,1)->1 (0,2)->2 (1,0)->3 (1,2)->5 (2,0)->6 (2,1)->7
        int idx = code == 1   ? 0
                  : code == 2 ? 1
                  : code == 3 ? 2
                  : code == 5 ? 3
                  : code == 6 ? 4
                  : code == 7 ? 5
                              : -1;
        bool perm = arr[0] != arr[1] && arr[1] != arr[2] && arr[0] != arr[2];
        if (idx < 0 || !perm) {
            CHECK(false, "shuffle of {0,1,2} gave {%zu,%zu,%zu}", arr[0], arr[1], arr[2]);
            break;
        }
        counts[idx]++;
    }
    bool uniform = true;
    for (int c6 : counts) uniform &= std::fabs(c6 - 10000.0) < 5 * 91.3;
    CHECK(uniform, "shuffle orders not uniform: %d %d %d %d %d %d", counts[0], counts[1], counts[2],
          counts[3], counts[4], counts[5]);
    std::vector<size_t> big(1000);
    for (size_t i = 0; i < big.size(); i++) big[i] = i;
    rng_shuffle(&rng, big.data(), big.size());
    std::vector<size_t> sorted = big;
    std::sort(sorted.begin(), sorted.end());
    bool is_perm = true, moved = false;
    for (size_t i = 0; i < sorted.size(); i++) {
        is_perm &= sorted[i] == i;
        moved |= big[i] != i;
    }
    CHECK(is_perm && moved, "shuffle of 1000 is not a non-trivial permutation");
}

// ----------------------------------------------------------------------------------------------------
// sampler

static std::vector<long double> ref_softmax(const std::vector<float>& logits, double tau) {
    long double m = *std::max_element(logits.begin(), logits.end()), s = 0;
    std::vector<long double> p(logits.size());
    for (size_t i = 0; i < logits.size(); i++) s += p[i] = std::exp((logits[i] - m) / (long double)tau);
    for (long double& v : p) v /= s;
    return p;
}

static void test_sampler() {
    printf("sampler: argmax at temperature <= 0; inverse CDF on a coin grid; frequencies within 3 sigma\n");
    std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f, 3.0f, 3.0f, -20.0f};
    CHECK(sample_softmax(logits.data(), 7, 0.0f, 0.99f) == 4, "temperature 0: got %d, want 4 (first max)",
          sample_softmax(logits.data(), 7, 0.0f, 0.99f));
    CHECK(sample_softmax(logits.data(), 7, -1.0f, 0.0f) == 4, "temperature < 0 must also be argmax");
    for (double tau : {0.5, 1.0, 2.0}) {
        std::vector<long double> p = ref_softmax(logits, tau);
        // exact: coins on a grid c_k = (k + 0.5)/M; the fraction landing on i must be p_i to within 1/M
        const int M = 100000;
        std::vector<int> grid(7, 0);
        for (int k = 0; k < M; k++)
            grid[sample_softmax(logits.data(), 7, (float)tau, (float)((k + 0.5) / M))]++;
        bool exact = true;
        for (int i = 0; i < 7; i++) exact &= std::fabs(grid[i] / (double)M - (double)p[i]) <= 1.5 / M + 1e-6;
        CHECK(exact, "tau %.1f: grid frequencies differ from softmax by more than 1/M", tau);
        // statistical: random coins, |count - N p| <= 3 sqrt(N p (1-p))
        Rng rng;
        rng_init(&rng, 1000 + (uint64_t)(tau * 10));
        const int N = 200000;
        std::vector<int> cnt(7, 0);
        for (int k = 0; k < N; k++) cnt[sample_softmax(logits.data(), 7, (float)tau, rng_uniform(&rng))]++;
        for (int i = 0; i < 7; i++) {
            double want = N * (double)p[i], sd = std::sqrt(N * (double)p[i] * (1 - (double)p[i]));
            CHECK(std::fabs(cnt[i] - want) <= 3 * sd + 1e-9,
                  "tau %.1f token %d: %d draws, expected %.1f +- %.1f", tau, i, cnt[i], want, sd);
        }
    }
    // huge logits must not overflow: p(0) = 1/(1+e^-1) = 0.731
    std::vector<float> big = {1000.0f, 999.0f};
    CHECK(sample_softmax(big.data(), 2, 1.0f, 0.73f) == 0 && sample_softmax(big.data(), 2, 1.0f, 0.74f) == 1,
          "logits 1000, 999: wrong split around 0.731");
    // a zero-probability token is never returned, even for a coin just below 1
    std::vector<float> masked = {0.0f, 0.0f, -INFINITY};
    CHECK(sample_softmax(masked.data(), 3, 1.0f, std::nextafter(1.0f, 0.0f)) == 1,
          "coin just below 1 returned a zero-probability token");
}

// ----------------------------------------------------------------------------------------------------
// logger

static std::string read_all(const std::string& path) {
    std::string s;
    FILE* fp = fopen(path.c_str(), "r");
    if (!fp) return "<missing>";
    char buf[4096];
    size_t got;
    while ((got = fread(buf, 1, sizeof(buf), fp)) > 0) s.append(buf, got);
    fclose(fp);
    return s;
}

static void test_logger() {
    printf("logger: exact line formats, fresh run truncates, resume keeps lines with s: <= step\n");
    char tmpl[] = "/tmp/test_logger_XXXXXX";
    if (mkdtemp(tmpl) == nullptr) fail("mkdtemp failed");
    std::string dir = std::string(tmpl) + "/out"; // does not exist yet: logger_init creates it
    std::string log = dir + "/main.log";

    Logger lg;
    logger_init(&lg, dir.c_str(), 0, -1);
    for (int s = 0; s < 10; s++) {
        logger_log_train(&lg, s, 2.5f + s, 6e-4f, 1.25f);
        if (s % 5 == 0) logger_log_val(&lg, s, 3.25f);
    }
    // flushed after every line: visible before logger_free
    std::string text = read_all(log);
    CHECK(text.rfind("s:0 trl:2.500000 lr:6.000000e-04 norm:1.250000\ns:0 tel:3.250000\n"
                     "s:1 trl:3.500000 lr:6.000000e-04 norm:1.250000\n",
                     0) == 0,
          "log starts with: %.120s", text.c_str());
    logger_free(&lg);

    // resume at step 6: keeps s:0..6 (7 train lines + val at 0 and 5), then appends
    logger_init(&lg, dir.c_str(), 0, 6);
    logger_log_train(&lg, 7, 1.0f, 1e-4f, 0.5f);
    logger_free(&lg);
    text = read_all(log);
    std::string want;
    for (int s = 0; s <= 6; s++) {
        char line[128];
        snprintf(line, sizeof(line), "s:%d trl:%d.500000 lr:6.000000e-04 norm:1.250000\n", s, 2 + s);
        want += line;
        if (s % 5 == 0) {
            snprintf(line, sizeof(line), "s:%d tel:3.250000\n", s);
            want += line;
        }
    }
    want += "s:7 trl:1.000000 lr:1.000000e-04 norm:0.500000\n";
    CHECK(text == want, "after resume at 6:\n%s\nwanted:\n%s", text.c_str(), want.c_str());

    // a fresh run truncates
    logger_init(&lg, dir.c_str(), 0, -1);
    logger_log_val(&lg, 0, 1.5f);
    logger_free(&lg);
    CHECK(read_all(log) == "s:0 tel:1.500000\n", "fresh run did not truncate: %s", read_all(log).c_str());

    // no output dir, or a rank other than 0: no file, and the log calls do nothing
    remove(log.c_str());
    logger_init(&lg, nullptr, 0, -1);
    logger_log_train(&lg, 0, 1, 1, 1);
    logger_free(&lg);
    logger_init(&lg, "", 0, -1);
    logger_log_val(&lg, 0, 1);
    logger_free(&lg);
    logger_init(&lg, dir.c_str(), 1, -1);
    logger_log_train(&lg, 0, 1, 1, 1);
    logger_free(&lg);
    CHECK(!file_exists(log.c_str()), "a log was written with no output dir or on rank 1");

    // resume when there is no log yet: starts one
    logger_init(&lg, dir.c_str(), 0, 100);
    logger_log_val(&lg, 101, 2.0f);
    logger_free(&lg);
    CHECK(read_all(log) == "s:101 tel:2.000000\n", "resume without a log: %s", read_all(log).c_str());

    // make_dir_check
    make_dir_check(dir.c_str()); // exists: fine
    std::string file = std::string(tmpl) + "/afile";
    FILE* fp = fopen_check(file.c_str(), "w");
    fclose(fp);
    expect_failure("output dir exists as a file", [&] { make_dir_check(file.c_str()); },
                   {file, "not a directory"});
    std::string deep = std::string(tmpl) + "/no/such/parent";
    expect_failure("output dir cannot be created", [&] { make_dir_check(deep.c_str()); },
                   {deep, "could not create directory"});

    remove(log.c_str());
    remove(file.c_str());
    rmdir(dir.c_str());
    rmdir(tmpl);
}

int main() {
    test_schedules();
    test_batch_scaling();
    test_rng();
    test_sampler();
    test_logger();
    return test_summary("test_schedulers");
}
