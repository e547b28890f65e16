// test_mpi_collectives.cpp: checks llmc/mpi_cpu.h, run by tests/dist/test_mpi_collectives.sh: built without
// MPI (build/tests/test_mpi_collectives, the single-process fallback) and with it (..._mpi, under mpirun).
//
//   test_mpi_collectives              collectives
//   test_mpi_collectives fail-pg      the last rank calls pg_fail while the others wait in a collective
//   test_mpi_collectives fail-utils   ... calls utils.h's fail() after pg_install_abort_on_exit
//   test_mpi_collectives fail-plain   ... calls utils.h's fail() with no hook (the launcher's behaviour)
//
// Reference. Every rank's data is a deterministic function of (rank, case), so each rank recomputes all
// ranks' data locally and sums it itself, with no communication: that is the independent reference. The
// data are integers in [-1000, 1000] stored as floats, so every partial sum of up to 4 ranks is an
// integer below 2^24 and exactly representable: the comparison is exact (tolerance 0) whatever order MPI
// sums in. The mean divides by N = 1, 2 or 4, a power of two, which is also exact.
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <unistd.h>
#include <vector>

#include "llmc/mpi_cpu.h"
#include "llmc/zero.h"
#include "tests/common/test_common.h"

// one check of one rank, named with the case
#define CHECK_RANK(pg, ok, what, P, max_count)                                                               \
    CHECK(ok, "[rank %d of %d] %s (P=%zu, max_count=%zu)", (pg)->rank, (pg)->num_ranks, what, (size_t)(P),   \
          (size_t)(max_count))

// the data of rank r for one test case: integers in [-1000, 1000]; the padding beyond P is zero,
// as it is in the trainers' buffers
static std::vector<float> rank_data(int r, size_t P, size_t padded, unsigned test_case) {
    std::mt19937 rng(1000003u * test_case + 7919u * (unsigned)r + 17u);
    std::vector<float> v(padded, 0.0f);
    for (size_t i = 0; i < P; i++) v[i] = (float)((int)(rng() % 2001) - 1000);
    return v;
}

static bool equal(const float* a, const float* b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (a[i] != b[i]) return false;
    }
    return true;
}

static void check_case(ProcessGroup* pg, size_t P, size_t max_count, unsigned test_case) {
    pg->max_count = max_count;
    int N = pg->num_ranks;
    ShardLayout layout = shard_layout(P, pg->rank, N);
    size_t padded = layout.padded_params, S = layout.shard_size, off = layout.shard_offset;
    // local reference: the sum of every rank's data
    std::vector<float> expected(padded, 0.0f);
    for (int r = 0; r < N; r++) {
        std::vector<float> d = rank_data(r, P, padded, test_case);
        for (size_t i = 0; i < padded; i++) expected[i] += d[i];
    }
    std::vector<float> mine = rank_data(pg->rank, P, padded, test_case);

    // all-reduce sum
    std::vector<float> a = mine;
    pg_allreduce_sum(pg, a.data(), padded);
    CHECK_RANK(pg, equal(a.data(), expected.data(), padded), "allreduce_sum == local sum of all ranks' data",
               P, max_count);

    // all-reduce mean
    std::vector<float> m = mine;
    pg_allreduce_mean(pg, m.data(), padded);
    bool mean_ok = true;
    for (size_t i = 0; i < padded; i++) mean_ok = mean_ok && m[i] == expected[i] / (float)N;
    CHECK_RANK(pg, mean_ok, "allreduce_mean == local sum / N", P, max_count);

    // reduce-scatter + all-gather (separate buffers) == all-reduce
    std::vector<float> shard(S, -1.0f), full(padded, -1.0f);
    pg_reduce_scatter_sum(pg, mine.data(), shard.data(), S);
    CHECK_RANK(pg, equal(shard.data(), expected.data() + off, S),
               "reduce_scatter_sum gives this rank's slice of the sum", P, max_count);
    pg_allgather(pg, shard.data(), full.data(), S);
    CHECK_RANK(pg, equal(full.data(), a.data(), padded), "reduce_scatter + allgather == allreduce", P,
               max_count);

    // reduce-scatter mean: this rank's slice of the sum / N (exact: N is a power of two)
    std::vector<float> shard_mean(S, -1.0f);
    pg_reduce_scatter_mean(pg, mine.data(), shard_mean.data(), S);
    bool rs_mean_ok = true;
    for (size_t i = 0; i < S; i++) rs_mean_ok = rs_mean_ok && shard_mean[i] == expected[off + i] / (float)N;
    CHECK_RANK(pg, rs_mean_ok, "reduce_scatter_mean == this rank's slice of the sum / N", P, max_count);

    // the same in place, as the trainers use them: grads -> grads + off, params + off -> params
    std::vector<float> g = mine;
    pg_reduce_scatter_sum(pg, g.data(), g.data() + off, S);
    CHECK_RANK(pg, equal(g.data() + off, expected.data() + off, S), "in-place reduce_scatter_sum", P,
               max_count);
    std::vector<float> p(padded, -1.0f);
    memcpy(p.data() + off, g.data() + off, S * sizeof(float));
    pg_allgather(pg, p.data() + off, p.data(), S);
    CHECK_RANK(pg, equal(p.data(), expected.data(), padded), "in-place allgather", P, max_count);
}

static int run_collectives(ProcessGroup* pg) {
    int N = pg->num_ranks;
    // sizes: below one slice of alignment, not a multiple of N*ALIGN, several thousand; chunk limits:
    // one call (INT_MAX), and small limits that leave a partial last chunk or a chunk of 1
    std::vector<size_t> sizes = {1, 1000, 5000, 70001};
    std::vector<size_t> limits = {(size_t)INT_MAX, 1000, 333, 128, 1};
    unsigned test_case = 0;
    for (size_t P : sizes) {
        for (size_t limit : limits) {
            if (limit == 1 && P > 1000) continue; // a chunk of 1 element: keep the call count small
            check_case(pg, P, limit, test_case++);
        }
    }
    pg->max_count = INT_MAX;
    // scalars: sum of (r + 0.5) over r = N^2/2 exactly; float sum of 2^-(r+1)
    double expect_d = 0.0;
    float expect_f = 0.0f;
    for (int r = 0; r < N; r++) {
        expect_d += r + 0.5;
        expect_f += std::ldexp(1.0f, -(r + 1));
    }
    CHECK_RANK(pg, pg_allreduce_sum_double(pg, pg->rank + 0.5) == expect_d, "allreduce_sum_double", 1,
               INT_MAX);
    // the mean: the sum (exact: distinct powers of two) divided by N, as pg_allreduce_mean_float computes it
    CHECK_RANK(pg, pg_allreduce_mean_float(pg, std::ldexp(1.0f, -(pg->rank + 1))) == expect_f / N,
               "allreduce_mean_float", 1, INT_MAX);
    // bytes: rank r sends 3 bytes r, r+1, r+2
    {
        const unsigned char mine[3] = {(unsigned char)pg->rank, (unsigned char)(pg->rank + 1),
                                       (unsigned char)(pg->rank + 2)};
        std::vector<unsigned char> all(3 * (size_t)N, 255);
        pg_allgather_bytes(pg, mine, all.data(), 3);
        bool ok = true;
        for (int r = 0; r < N; r++)
            for (int k = 0; k < 3; k++) ok &= all[3 * r + k] == r + k;
        CHECK_RANK(pg, ok, "allgather_bytes", 1, INT_MAX);
    }
    pg_barrier(pg);
    if (pg->rank == 0) {
        printf("%d ranks: %u cases of allreduce sum/mean, reduce-scatter sum/mean, allgather (also in place) "
               "with chunk limits INT_MAX..1; scalar sum and mean\n",
               N, test_case);
    }
    // every rank reports its failures; the total decides
    int failures = (int)pg_allreduce_sum_double(pg, test_failures());
    if (pg->rank == 0) printf("%d failures over all ranks\n", failures);
    return failures == 0 ? test_summary("test_mpi_collectives") : 1;
}

// The last rank fails after a short delay, while the others already wait in an all-reduce.
static void run_failure(ProcessGroup* pg, const std::string& mode) {
    if (mode == "fail-utils") pg_install_abort_on_exit(pg);
    std::vector<float> buf(1000, 1.0f);
    if (pg->rank == pg->num_ranks - 1) {
        usleep(300 * 1000);
        if (mode == "fail-pg") pg_fail(pg, "injected failure (cause: test of pg_fail)");
        fail("injected failure (cause: test of utils.h fail() in %s mode)", mode.c_str());
    }
    pg_allreduce_sum(pg, buf.data(), buf.size()); // never completes: the last rank does not join
    printf("[rank %d] the all-reduce returned although a rank failed\n", pg->rank);
    process_group_finalize(pg);
    exit(0); // a hang or this exit 0 is the bug the test looks for
}

int main(int argc, char** argv) {
    ProcessGroup pg;
    process_group_init(&pg, &argc, &argv);
    std::string mode = argc > 1 ? argv[1] : "collectives";
    if (mode == "fail-pg" || mode == "fail-utils" || mode == "fail-plain") run_failure(&pg, mode);
    if (mode != "collectives")
        pg_fail(&pg, "unknown mode '%s' (collectives, fail-pg, fail-utils, fail-plain)", mode.c_str());
    pg_install_abort_on_exit(&pg); // a successful run must still exit 0 with the hook installed
    int rc = run_collectives(&pg);
    process_group_finalize(&pg);
    if (pg.rank == 0) printf(rc == 0 ? "OK test_mpi_collectives\n" : "FAIL test_mpi_collectives\n");
    return rc;
}
