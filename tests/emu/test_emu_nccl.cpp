// test_emu_nccl.cpp: the CPU emulator's NCCL (dev/cuda/emu/include/nccl.h), with forked processes as the
// GPUs, as the trainer runs one process per GPU.
//
// Collectives (N = 2, 3 and 4 ranks): all-reduce sum / avg in fp32 and bf16, in place and out of place, with
// a count over two slots and not a multiple of one (so the chunking runs); prod / max / min in fp32; fp64;
// counts 1 and 0; reduce-scatter and all-gather in and out of place, bf16 and fp32, also over several
// chunks. Inputs are random floats of many magnitudes, so the order of the additions shows in the result.
// The reference is what the emulator promises: op over ranks 0, 1, .., N-1 in that order in fp32 (fp64 for
// fp64), the mean as the sum / N, one rounding to the element type; so every result must match it
// bit for bit (a different order, a bf16 partial sum or a premultiplied mean would not). Every rank also
// records a hash of each result and the parent checks that all ranks got identical bytes.
//
// Failures, each within a few seconds and never a hang: a rank that exits (left a zombie, as an unreaped
// child is) makes its peers' collective return ncclRemoteError naming it; a rank that never comes times
// out (ncclSystemError); ncclCommAbort stops a waiting peer; mismatched collectives, host buffers, a buffer
// too short, and buffers that overlap without being in place stop the program with a message; ranks
// that disagree on nranks, a missing rank 0 and a missing peer fail ncclCommInitRank; bad arguments return
// ncclInvalidArgument. At the end no segment of this test may be left in /dev/shm.
//
// Point-to-point (2 and 3 ranks): a ring of messages in one group (one of them many times the ring between
// two ranks), two ranks sending each other 1 MB in one group, bf16 outside a group; every byte received
// is the byte sent. A receive of another size than its send is fatal naming both (its send then fails);
// a receiver that exits makes a send return ncclRemoteError; two ranks that both send to each other
// outside a group (a deadlock in NCCL) time out; a send to itself outside a group is refused.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <functional>
#include <string>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <nccl.h>

#include "tests/common/test_common.h"

static_assert(NCCL_VERSION_CODE >= NCCL_VERSION(2, 10, 0), "nccl_gpu.cuh needs >= 2.10");
static_assert(NCCL_VERSION(2, 8, 4) == 2804 && NCCL_VERSION(2, 18, 5) == 21805, "NCCL's version formula");
static_assert(ncclFloat == ncclFloat32 && ncclBfloat16 == 9 && ncclAvg == 4 && ncclRemoteError == 6,
              "values");

// ----------------------------------------------------------------------------------------------------
// ranks as processes

// what the ranks tell the parent: a hash of every result, per case and rank
constexpr int MAX_CASES = 64, MAX_TEST_RANKS = 8;
struct Shared {
    uint64_t hash[MAX_CASES][MAX_TEST_RANKS];
    int cases;
};

struct RankResult {
    int exit_code; // -1: killed by a signal
    std::string err;
    double seconds; // from the start of the group to this rank's exit (as the parent saw it)
};

static double now_s() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// Fork N ranks; rank r runs body(r) with stdout shared and stderr captured, and exits 1 if a CHECK failed
// in it. The parent waits for the ranks in rank order, not as they end: a rank that exits early stays a
// zombie meanwhile, which the emulator's liveness check must see through.
static std::vector<RankResult> run_ranks(int N, const std::function<void(int)>& body) {
    fflush(stdout);
    fflush(stderr);
    std::vector<pid_t> pids;
    std::vector<std::string> paths;
    double start = now_s();
    for (int r = 0; r < N; r++) {
        char path[] = "/tmp/test_emu_nccl_XXXXXX";
        int fd = mkstemp(path);
        if (fd < 0) fail("mkstemp failed");
        pid_t pid = fork();
        if (pid < 0) fail("fork failed");
        if (pid == 0) {
            dup2(fd, STDERR_FILENO);
            close(fd);
            test_counts = TestCounts{};
            body(r);
            fflush(stdout);
            fflush(stderr);
            _exit(test_failures() > 0 ? 1 : 0);
        }
        close(fd);
        pids.push_back(pid);
        paths.push_back(path);
    }
    std::vector<RankResult> results(N);
    for (int r = 0; r < N; r++) {
        int status = 0;
        waitpid(pids[r], &status, 0);
        results[r].exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
        results[r].seconds = now_s() - start;
        FILE* fp = fopen(paths[r].c_str(), "r");
        char buf[4096];
        size_t got;
        while (fp != nullptr && (got = fread(buf, 1, sizeof(buf), fp)) > 0) results[r].err.append(buf, got);
        if (fp != nullptr) fclose(fp);
        unlink(paths[r].c_str());
    }
    return results;
}

static ncclUniqueId new_id() {
    ncclUniqueId id;
    if (ncclGetUniqueId(&id) != ncclSuccess) fail("ncclGetUniqueId failed");
    return id;
}

static ncclComm_t init_or_exit(int N, const ncclUniqueId& id, int rank) {
    ncclComm_t comm = nullptr;
    ncclResult_t r = ncclCommInitRank(&comm, N, id, rank);
    if (r != ncclSuccess) {
        printf("  FAIL rank %d of %d: ncclCommInitRank returned %s\n", rank, N, ncclGetErrorString(r));
        fflush(stdout);
        _exit(1);
    }
    return comm;
}

// every rank ended with the exit code; each rank's stderr contains every needle
static void expect_ranks(const char* what, const std::vector<RankResult>& results,
                         const std::vector<int>& codes,
                         const std::vector<std::vector<std::string>>& needles) {
    for (size_t r = 0; r < results.size(); r++) {
        bool code_ok = codes[r] < 0 ? results[r].exit_code > 0 : results[r].exit_code == codes[r];
        CHECK(code_ok, "%s: rank %zu exited with %d, expected %s%d; stderr: %s", what, r,
              results[r].exit_code, codes[r] < 0 ? "non-zero, " : "", codes[r], results[r].err.c_str());
        for (const std::string& n : needles[r]) {
            CHECK(results[r].err.find(n) != std::string::npos, "%s: rank %zu's stderr lacks '%s'; got: %s",
                  what, r, n.c_str(), results[r].err.c_str());
        }
    }
    printf("  %s:\n", what);
    for (size_t r = 0; r < results.size(); r++) {
        std::string first = results[r].err.substr(0, results[r].err.find('\n'));
        printf("    rank %zu: exit %d after %.2f s%s%s\n", r, results[r].exit_code, results[r].seconds,
               first.empty() ? "" : ": ", first.c_str());
    }
}

// ----------------------------------------------------------------------------------------------------
// data and the reference

template <class T> struct TypeOf;
template <> struct TypeOf<float> {
    static constexpr ncclDataType_t value = ncclFloat32;
    static constexpr const char* name = "fp32";
};
template <> struct TypeOf<__nv_bfloat16> {
    static constexpr ncclDataType_t value = ncclBfloat16;
    static constexpr const char* name = "bf16";
};
template <> struct TypeOf<double> {
    static constexpr ncclDataType_t value = ncclFloat64;
    static constexpr const char* name = "fp64";
};
// the emulator's accumulator: fp32 for fp32 and bf16, fp64 for fp64
template <class T> struct AccOf { typedef float type; };
template <> struct AccOf<double> { typedef double type; };

// element i of rank r's input `salt`: random sign, 24 random mantissa bits, magnitude 2^-6 .. 2^3
static double input(int rank, size_t i, int salt) {
    uint64_t x = (uint64_t)i * 0x9E3779B97F4A7C15ull ^ ((uint64_t)rank << 48) ^ ((uint64_t)salt << 56);
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ull;
    x ^= x >> 29;
    x *= 0x94D049BB133111EBull;
    x ^= x >> 32;
    double mantissa = 1.0 + (double)(x & 0xFFFFFF) / 16777216.0;
    int exponent = (int)((x >> 24) % 10) - 6;
    return ((x >> 40) & 1 ? -1.0 : 1.0) * std::ldexp(mantissa, exponent);
}

template <class T> static T make(int rank, size_t i, int salt) {
    return T((typename AccOf<T>::type)input(rank, i, salt));
}

// op over ranks 0..N-1 in that order of the inputs[r](i), as the emulator does it
template <class T> static T reference(ncclRedOp_t op, int N, const std::function<T(int)>& element) {
    typedef typename AccOf<T>::type Acc;
    Acc acc = (Acc)element(0);
    for (int r = 1; r < N; r++) {
        Acc x = (Acc)element(r);
        acc = op == ncclProd  ? acc * x
              : op == ncclMax ? std::fmax(acc, x)
              : op == ncclMin ? std::fmin(acc, x)
                              : acc + x;
    }
    if (op == ncclAvg) acc = acc / (Acc)N;
    return T(acc);
}

static uint64_t fnv1a(const void* p, size_t bytes) {
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < bytes; i++) h = (h ^ ((const unsigned char*)p)[i]) * 1099511628211ull;
    return h;
}

// the first index where two arrays differ bitwise, or n
template <class T> static size_t first_difference(const T* a, const T* b, size_t n) {
    for (size_t i = 0; i < n; i++) {
        if (memcmp(&a[i], &b[i], sizeof(T)) != 0) return i;
    }
    return n;
}

// Device memory is host memory in the emulator: the cases fill and read it directly (cudaMemcpy would do
// the same, longer).
template <class T> static T* device_alloc(size_t n) {
    T* p = nullptr;
    if (cudaMalloc(&p, (n > 0 ? n : 1) * sizeof(T)) != cudaSuccess) fail("cudaMalloc failed");
    return p;
}

// one rank's communicator and where it reports
struct Ctx {
    ncclComm_t comm;
    int rank, N;
    Shared* shared;
    int case_index;
};

// a hash of the result, for the parent to compare across ranks (reduce-scatter's differ by design: 0)
static void record(Ctx* c, const void* result, size_t bytes, bool same_on_every_rank) {
    if (c->case_index < MAX_CASES) {
        c->shared->hash[c->case_index][c->rank] = same_on_every_rank ? fnv1a(result, bytes) : 0;
    }
    c->case_index++;
    if (c->rank == 0) c->shared->cases = c->case_index;
}

template <class T> static void check_result(Ctx* c, const char* what, const T* got, const T* want, size_t n) {
    size_t i = first_difference(got, want, n);
    CHECK(i == n, "rank %d of %d: %s (%s, count %zu): element %zu is %.9g, expected %.9g", c->rank, c->N,
          what, TypeOf<T>::name, n, i, i < n ? (double)got[i] : 0.0, i < n ? (double)want[i] : 0.0);
}

template <class T>
static void all_reduce_case(Ctx* c, size_t count, ncclRedOp_t op, bool in_place, int salt) {
    std::vector<T> want(count);
    for (size_t i = 0; i < count; i++) {
        want[i] = reference<T>(op, c->N, [&](int r) { return make<T>(r, i, salt); });
    }
    T* send = device_alloc<T>(count);
    T* recv = in_place ? send : device_alloc<T>(count);
    for (size_t i = 0; i < count; i++) send[i] = make<T>(c->rank, i, salt);
    ncclResult_t r = ncclAllReduce(send, recv, count, TypeOf<T>::value, op, c->comm, nullptr);
    char what[96];
    snprintf(what, sizeof(what), "all-reduce %s %s", emu_nccl_op_name(op),
             in_place ? "in place" : "out of place");
    CHECK(r == ncclSuccess, "rank %d: %s returned %s", c->rank, what, ncclGetErrorString(r));
    check_result(c, what, recv, want.data(), count);
    if (!in_place) { // the input is left alone
        size_t changed = count;
        for (size_t i = 0; i < count && changed == count; i++) {
            T x = make<T>(c->rank, i, salt);
            if (memcmp(&send[i], &x, sizeof(T)) != 0) changed = i;
        }
        CHECK(changed == count, "rank %d: %s changed sendbuff at %zu", c->rank, what, changed);
    }
    record(c, recv, count * sizeof(T), true);
    if (!in_place) cudaFree(recv);
    cudaFree(send);
}

// rank r's send (N * recvcount) = inputs; recv (recvcount) = op over ranks of send[rank*recvcount ..)
template <class T>
static void reduce_scatter_case(Ctx* c, size_t recvcount, ncclRedOp_t op, bool in_place, int salt) {
    const size_t total = (size_t)c->N * recvcount, mine = (size_t)c->rank * recvcount;
    std::vector<T> want(recvcount);
    for (size_t j = 0; j < recvcount; j++) {
        want[j] = reference<T>(op, c->N, [&](int r) { return make<T>(r, mine + j, salt); });
    }
    T* send = device_alloc<T>(total);
    T* recv = in_place ? send + mine : device_alloc<T>(recvcount);
    for (size_t i = 0; i < total; i++) send[i] = make<T>(c->rank, i, salt);
    ncclResult_t r = ncclReduceScatter(send, recv, recvcount, TypeOf<T>::value, op, c->comm, nullptr);
    char what[96];
    snprintf(what, sizeof(what), "reduce-scatter %s %s", emu_nccl_op_name(op),
             in_place ? "in place" : "out of place");
    CHECK(r == ncclSuccess, "rank %d: %s returned %s", c->rank, what, ncclGetErrorString(r));
    check_result(c, what, recv, want.data(), recvcount);
    record(c, recv, recvcount * sizeof(T), false);
    if (!in_place) cudaFree(recv);
    cudaFree(send);
}

// recv (N * sendcount): slice r = rank r's send (sendcount); everything else is poisoned before
template <class T> static void all_gather_case(Ctx* c, size_t sendcount, bool in_place, int salt) {
    const size_t total = (size_t)c->N * sendcount, mine = (size_t)c->rank * sendcount;
    std::vector<T> want(total);
    for (int r = 0; r < c->N; r++) {
        for (size_t j = 0; j < sendcount; j++) want[r * sendcount + j] = make<T>(r, j, salt);
    }
    T* recv = device_alloc<T>(total);
    memset((void*)recv, 0xFF, total * sizeof(T));
    T* send = in_place ? recv + mine : device_alloc<T>(sendcount);
    for (size_t j = 0; j < sendcount; j++) send[j] = make<T>(c->rank, j, salt);
    ncclResult_t r = ncclAllGather(send, recv, sendcount, TypeOf<T>::value, c->comm, nullptr);
    const char* what = in_place ? "all-gather in place" : "all-gather out of place";
    CHECK(r == ncclSuccess, "rank %d: %s returned %s", c->rank, what, ncclGetErrorString(r));
    check_result(c, what, recv, want.data(), total);
    record(c, recv, total * sizeof(T), true);
    if (!in_place) cudaFree(send);
    cudaFree(recv);
}

// the same sequence on every rank
static void collectives_rank(int rank, int N, const ncclUniqueId& id, Shared* shared) {
    Ctx c{init_or_exit(N, id, rank), rank, N, shared, 0};
    int count = 0, user_rank = -1;
    CHECK(ncclCommCount(c.comm, &count) == ncclSuccess && count == N, "ncclCommCount gave %d", count);
    CHECK(ncclCommUserRank(c.comm, &user_rank) == ncclSuccess && user_rank == rank,
          "ncclCommUserRank gave %d", user_rank);
    const size_t slot32 = EMU_NCCL_SLOT_BYTES / 4, slot16 = EMU_NCCL_SLOT_BYTES / 2;
    const size_t big32 = 2 * slot32 + slot32 / 2 + 7, big16 = 2 * slot16 + 5; // 3 chunks, the last one short
    int salt = 0;
    for (bool in_place : {false, true}) {
        for (ncclRedOp_t op : {ncclSum, ncclAvg}) {
            all_reduce_case<float>(&c, big32, op, in_place, ++salt);
            all_reduce_case<__nv_bfloat16>(&c, big16, op, in_place, ++salt);
        }
    }
    for (ncclRedOp_t op : {ncclProd, ncclMax, ncclMin}) all_reduce_case<float>(&c, 1000, op, false, ++salt);
    all_reduce_case<double>(&c, EMU_NCCL_SLOT_BYTES / 8 + 3, ncclSum, true, ++salt);
    // one value: multi_gpu_barrier / multi_gpu_allreduce_mean_float
    all_reduce_case<float>(&c, 1, ncclSum, true, ++salt);
    all_reduce_case<float>(&c, 0, ncclSum, false, ++salt);
    // reduce-scatter moves slot / N elements per chunk; all-gather a slot's worth
    const size_t rs32 = 2 * (slot32 / N) + 13, rs16 = 2 * (slot16 / N) + 13;
    for (bool in_place : {false, true}) {
        reduce_scatter_case<float>(&c, rs32, ncclSum, in_place, ++salt);
        reduce_scatter_case<__nv_bfloat16>(&c, rs16, ncclAvg, in_place, ++salt);
        all_gather_case<float>(&c, slot32 + 13, in_place, ++salt);
        all_gather_case<__nv_bfloat16>(&c, 1001, in_place, ++salt);
    }
    reduce_scatter_case<float>(&c, 1, ncclMax, false, ++salt);
    CHECK(ncclCommDestroy(c.comm) == ncclSuccess, "ncclCommDestroy failed");
}

static void test_collectives(int N) {
    Shared* shared =
        (Shared*)mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) fail("mmap failed");
    memset(shared, 0, sizeof(Shared));
    ncclUniqueId id = new_id();
    std::vector<RankResult> results = run_ranks(N, [&](int rank) { collectives_rank(rank, N, id, shared); });
    for (int r = 0; r < N; r++) {
        CHECK(results[r].exit_code == 0, "N=%d: rank %d exited with %d; stderr: %s", N, r,
              results[r].exit_code, results[r].err.c_str());
    }
    int compared = 0, identical = 0;
    for (int k = 0; k < shared->cases && k < MAX_CASES; k++) {
        if (shared->hash[k][0] == 0) continue; // a reduce-scatter: each rank has its own shard
        bool same = true;
        for (int r = 1; r < N; r++) same = same && shared->hash[k][r] == shared->hash[k][0];
        CHECK(same, "N=%d: case %d: the ranks' results differ", N, k);
        compared++;
        identical += same;
    }
    CHECK(shared->cases > 20 && compared > 15, "N=%d: only %d cases ran", N, shared->cases);
    printf("  %d ranks: %d collectives equal to the rank-order reference on every rank; %d of the %d that "
           "are not reduce-scatters bit-identical across ranks; %.1f s\n",
           N, shared->cases, identical, compared, results[N - 1].seconds);
    munmap(shared, sizeof(Shared));
}

// ----------------------------------------------------------------------------------------------------
// failures

// a collective on 1000 floats of device memory; returns the result and how long it took
static ncclResult_t timed_all_reduce(ncclComm_t comm, double* seconds) {
    float* buf = device_alloc<float>(1000);
    memset(buf, 0, 1000 * sizeof(float));
    double start = now_s();
    ncclResult_t r = ncclAllReduce(buf, buf, 1000, ncclFloat32, ncclSum, comm, nullptr);
    *seconds = now_s() - start;
    return r;
}

static void test_dead_peer() {
    // the timeout is long, so only the liveness check can end the wait this soon
    setenv("CUDA_EMU_NCCL_TIMEOUT", "60", 1);
    ncclUniqueId id = new_id();
    auto results = run_ranks(3, [&](int rank) {
        ncclComm_t comm = init_or_exit(3, id, rank);
        if (rank == 2) _exit(0); // gone without a word; the parent leaves it a zombie
        double seconds = 0;
        ncclResult_t r = timed_all_reduce(comm, &seconds);
        CHECK(r == ncclRemoteError, "rank %d: the collective returned %s, expected ncclRemoteError", rank,
              ncclGetErrorString(r));
        CHECK(seconds < 5.0, "rank %d: noticing the dead peer took %.1f s", rank, seconds);
        ncclResult_t async = ncclSuccess;
        CHECK(ncclCommGetAsyncError(comm, &async) == ncclSuccess && async == ncclRemoteError,
              "rank %d: ncclCommGetAsyncError gave %s", rank, ncclGetErrorString(async));
        CHECK(timed_all_reduce(comm, &seconds) == ncclRemoteError, "rank %d: the next call did not fail",
              rank);
        ncclCommAbort(comm);
    });
    expect_ranks("a rank exits: the others' all-reduce returns ncclRemoteError", results, {0, 0, 0},
                 {{"rank 2 (pid"}, {"exited while we waited"}, {}});
}

static void test_timeout() {
    setenv("CUDA_EMU_NCCL_TIMEOUT", "1", 1);
    ncclUniqueId id = new_id();
    auto results = run_ranks(2, [&](int rank) {
        ncclComm_t comm = init_or_exit(2, id, rank);
        if (rank == 1) usleep(2500 * 1000); // alive, but late
        double seconds = 0;
        ncclResult_t r = timed_all_reduce(comm, &seconds);
        if (rank == 0) {
            CHECK(r == ncclSystemError, "rank 0: returned %s, expected ncclSystemError",
                  ncclGetErrorString(r));
            CHECK(seconds > 0.9 && seconds < 2.4, "rank 0: timed out after %.2f s, expected about 1",
                  seconds);
        } else { // rank 0 has given up by now
            CHECK(r == ncclRemoteError, "rank 1: returned %s, expected ncclRemoteError",
                  ncclGetErrorString(r));
            CHECK(seconds < 1.0, "rank 1: took %.2f s to see that rank 0 gave up", seconds);
        }
        ncclCommAbort(comm);
    });
    expect_ranks("a rank is late: the other times out (ncclSystemError), then the late one sees it gave up",
                 results, {0, 0},
                 {{"timed out after 1 s waiting for rank(s) 1"}, {"rank 0 aborted the communicator"}});
    setenv("CUDA_EMU_NCCL_TIMEOUT", "60", 1);
}

static void test_abort() {
    setenv("CUDA_EMU_NCCL_TIMEOUT", "60", 1);
    ncclUniqueId id = new_id();
    auto results = run_ranks(2, [&](int rank) {
        ncclComm_t comm = init_or_exit(2, id, rank);
        if (rank == 0) {
            CHECK(ncclCommAbort(comm) == ncclSuccess, "ncclCommAbort failed");
            usleep(1500 * 1000); // still alive: rank 1 must stop because of the abort, not our exit
            return;
        }
        double seconds = 0;
        ncclResult_t r = timed_all_reduce(comm, &seconds);
        CHECK(r == ncclRemoteError, "rank 1: returned %s, expected ncclRemoteError", ncclGetErrorString(r));
        CHECK(seconds < 1.0, "rank 1: took %.2f s to see the abort", seconds);
        ncclCommDestroy(comm);
    });
    expect_ranks("ncclCommAbort on rank 0 stops rank 1's all-reduce", results, {0, 0},
                 {{}, {"rank 0 aborted the communicator"}});
}

// two ranks, one collective each: must stop both with a message naming both calls
static void test_mismatch(const char* what, const std::function<void(ncclComm_t, int, float*)>& call,
                          const std::vector<std::string>& needles) {
    ncclUniqueId id = new_id();
    auto results = run_ranks(2, [&](int rank) {
        ncclComm_t comm = init_or_exit(2, id, rank);
        float* buf = device_alloc<float>(4000);
        CHECK(ncclAllReduce(buf, buf, 10, ncclFloat32, ncclSum, comm, nullptr) == ncclSuccess, "first call");
        call(comm, rank, buf);
        printf("  FAIL rank %d: %s went unnoticed\n", rank, what);
        _exit(0);
    });
    expect_ranks(what, results, {-1, -1}, {needles, needles});
}

// one rank: the call must stop the program with the needles in the message
static void test_fatal(const char* what, const std::function<void(ncclComm_t)>& call,
                       const std::vector<std::string>& needles) {
    ncclUniqueId id = new_id();
    auto results = run_ranks(1, [&](int rank) {
        ncclComm_t comm = init_or_exit(1, id, rank);
        call(comm);
        printf("  FAIL: %s went unnoticed\n", what);
        _exit(0);
    });
    expect_ranks(what, results, {-1}, {needles});
}

static void test_init_failures() {
    setenv("CUDA_EMU_NCCL_TIMEOUT", "1", 1);
    ncclUniqueId id = new_id();
    auto results = run_ranks(2, [&](int rank) {
        ncclComm_t comm = nullptr;
        ncclResult_t r = ncclCommInitRank(&comm, rank == 0 ? 2 : 3, id, rank);
        ncclResult_t want = rank == 0 ? ncclRemoteError : ncclInvalidUsage;
        CHECK(r == want && comm == nullptr, "rank %d: returned %s, expected %s", rank, ncclGetErrorString(r),
              ncclGetErrorString(want));
    });
    expect_ranks("ranks disagree on nranks", results, {0, 0},
                 {{"rank 1 aborted"}, {"this rank was given nranks 3, rank 0 nranks 2"}});

    id = new_id();
    results = run_ranks(2, [&](int rank) {
        if (rank == 0) return; // rank 0 never calls
        ncclComm_t comm = nullptr;
        ncclResult_t r = ncclCommInitRank(&comm, 2, id, rank);
        CHECK(r == ncclSystemError, "rank 1: returned %s, expected ncclSystemError", ncclGetErrorString(r));
    });
    expect_ranks("rank 0 never comes", results, {0, 0}, {{}, {"waiting for rank 0 to create"}});

    id = new_id();
    results = run_ranks(3, [&](int rank) {
        if (rank == 2) return; // never joins
        ncclComm_t comm = nullptr;
        ncclResult_t r = ncclCommInitRank(&comm, 3, id, rank);
        CHECK(r == ncclSystemError || r == ncclRemoteError, "rank %d: returned %s", rank,
              ncclGetErrorString(r));
    });
    expect_ranks("rank 2 of 3 never joins", results, {0, 0, 0}, {{"2 (never joined)"}, {}, {}});

    ncclUniqueId zero;
    memset(&zero, 0, sizeof(zero));
    results = run_ranks(1, [&](int) {
        ncclComm_t comm = nullptr;
        CHECK(ncclCommInitRank(&comm, 1, zero, 0) == ncclInvalidArgument, "a zero id was accepted");
        CHECK(ncclCommInitRank(&comm, 2, new_id(), 2) == ncclInvalidArgument, "rank 2 of 2 was accepted");
        CHECK(ncclCommInitRank(&comm, 0, new_id(), 0) == ncclInvalidArgument, "nranks 0 was accepted");
    });
    expect_ranks("bad ncclCommInitRank arguments return ncclInvalidArgument", results, {0},
                 {{"not made by ncclGetUniqueId"}});
    setenv("CUDA_EMU_NCCL_TIMEOUT", "60", 1);
}

static void test_bad_arguments() {
    ncclUniqueId id = new_id();
    auto results = run_ranks(1, [&](int rank) {
        ncclComm_t comm = init_or_exit(1, id, rank);
        int* ints = device_alloc<int>(10);
        ncclResult_t r = ncclAllReduce(ints, ints, 10, ncclInt32, ncclSum, comm, nullptr);
        CHECK(r == ncclInvalidArgument, "an int32 all-reduce returned %s", ncclGetErrorString(r));
        ncclResult_t async = ncclSuccess;
        ncclCommGetAsyncError(comm, &async);
        CHECK(async == ncclInvalidArgument, "the refused call is not sticky: %s", ncclGetErrorString(async));
        ncclCommDestroy(comm);
        comm = nullptr;
        CHECK(ncclAllGather(ints, ints, 10, ncclInt32, comm, nullptr) == ncclInvalidArgument, "null comm");
        // all-gather copies any type; an unknown op is refused
        ncclComm_t again = init_or_exit(1, new_id(), 0);
        for (int i = 0; i < 10; i++) ints[i] = i;
        CHECK(ncclAllGather(ints, ints, 10, ncclInt32, again, nullptr) == ncclSuccess && ints[9] == 9,
              "int32 all-gather");
        CHECK(ncclAllReduce(ints, ints, 10, ncclFloat32, (ncclRedOp_t)77, again, nullptr) ==
                  ncclInvalidArgument,
              "op 77 was accepted");
        ncclCommDestroy(again);
    });
    expect_ranks("refused types and ops return ncclInvalidArgument", results, {0},
                 {{"reduces only ncclFloat32, ncclBfloat16 and ncclFloat64, not ncclInt32",
                   "unknown reduction op 77"}});
}

// segments this test's ids named (ncclGetUniqueId puts the parent's pid in the name)
static int leftover_segments() {
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "%s%d_", &EMU_NCCL_NAME_PREFIX[1],
             (int)getpid()); // the name without its /
    int found = 0;
    DIR* dir = opendir("/dev/shm");
    if (dir == nullptr) return 0;
    while (dirent* e = readdir(dir)) {
        if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
            printf("    left over: /dev/shm/%s\n", e->d_name);
            found++;
        }
    }
    closedir(dir);
    return found;
}

// ----------------------------------------------------------------------------------------------------
// point-to-point

// element i of message k from rank src: exact in fp32 and bf16 (an integer below 256 times a power of 2)
static float payload(int src, int k, size_t i) {
    return (float)((src * 37 + k * 11 + i * 7) % 251) * (float)(1 << (i % 5));
}

// N ranks: (1) a ring in one group, each rank sending 3 messages (1, 300000 and 777 floats: the middle one
// many times the 64 KiB ring) to its right and receiving 3 from its left; (2) ranks 0 and 1 sending each
// other 1 MB in one group, both sends first (outside a group, or in NCCL without one, a deadlock);
// (3) outside any group, rank 0 sending bf16 to rank 1, which receives it, then the reverse. Every byte
// received must be the byte sent.
static void test_p2p(int N) {
    ncclUniqueId id = new_id();
    const size_t sizes[3] = {1, 300000, 777};
    auto results = run_ranks(N, [&](int rank) {
        ncclComm_t comm = init_or_exit(N, id, rank);
        const int right = (rank + 1) % N, left = (rank + N - 1) % N;
        float *out[3], *in[3];
        for (int k = 0; k < 3; k++) {
            out[k] = device_alloc<float>(sizes[k]);
            in[k] = device_alloc<float>(sizes[k]);
            for (size_t i = 0; i < sizes[k]; i++) out[k][i] = payload(rank, k, i);
        }
        ncclGroupStart();
        for (int k = 0; k < 3; k++) {
            ncclSend(out[k], sizes[k], ncclFloat32, right, comm, nullptr);
            ncclRecv(in[k], sizes[k], ncclFloat32, left, comm, nullptr);
        }
        CHECK(ncclGroupEnd() == ncclSuccess, "rank %d: the ring's group failed", rank);
        size_t bad = 0;
        for (int k = 0; k < 3; k++)
            for (size_t i = 0; i < sizes[k]; i++) bad += in[k][i] != payload(left, k, i);
        CHECK(bad == 0, "rank %d: %zu elements of the ring's messages differ from what rank %d sent", rank,
              bad, left);
        if (rank < 2) {
            const int other = 1 - rank;
            const size_t n = 1 << 18; // 1 MB of fp32
            float* mine = device_alloc<float>(n);
            float* theirs = device_alloc<float>(n);
            for (size_t i = 0; i < n; i++) mine[i] = payload(rank, 7, i);
            ncclGroupStart();
            ncclSend(mine, n, ncclFloat32, other, comm, nullptr);
            ncclRecv(theirs, n, ncclFloat32, other, comm, nullptr);
            CHECK(ncclGroupEnd() == ncclSuccess, "rank %d: the exchange's group failed", rank);
            bad = 0;
            for (size_t i = 0; i < n; i++) bad += theirs[i] != payload(other, 7, i);
            CHECK(bad == 0, "rank %d: %zu elements of the exchange differ", rank, bad);
            __nv_bfloat16* b = device_alloc<__nv_bfloat16>(5000);
            for (int turn = 0; turn < 2; turn++) {
                const bool sends = rank == turn;
                if (sends)
                    for (size_t i = 0; i < 5000; i++) b[i] = __float2bfloat16(payload(rank, 9 + turn, i));
                ncclResult_t r = sends ? ncclSend(b, 5000, ncclBfloat16, other, comm, nullptr)
                                       : ncclRecv(b, 5000, ncclBfloat16, other, comm, nullptr);
                CHECK(r == ncclSuccess, "rank %d: a bf16 %s outside a group: %s", rank,
                      sends ? "send" : "receive", ncclGetErrorString(r));
                if (sends) continue;
                bad = 0;
                for (size_t i = 0; i < 5000; i++)
                    bad += __bfloat162float(b[i]) != payload(other, 9 + turn, i);
                CHECK(bad == 0, "rank %d: %zu bf16 elements differ", rank, bad);
            }
        }
        ncclCommDestroy(comm);
    });
    char what[96];
    snprintf(what, sizeof(what), "point-to-point, %d ranks: a ring, an exchange, bf16 in turn", N);
    expect_ranks(what, results, std::vector<int>(N, 0), std::vector<std::vector<std::string>>(N));
}

static void test_p2p_failures() {
    ncclUniqueId id = new_id();
    auto results = run_ranks(2, [&](int rank) { // a receive of 11 floats for a send of 10
        ncclComm_t comm = init_or_exit(2, id, rank);
        float* buf = device_alloc<float>(11);
        if (rank == 0) { // its send waits for the receive, which fails: the communicator is aborted
            CHECK(ncclSend(buf, 10, ncclFloat32, 1, comm, nullptr) == ncclRemoteError, "the send's error");
            _exit(test_failures() > 0 ? 1 : 0);
        }
        ncclRecv(buf, 11, ncclFloat32, 0, comm, nullptr);
        printf("  FAIL: a receive of another size went unnoticed\n");
        _exit(0);
    });
    expect_ranks(
        "ncclRecv of 11 floats for an ncclSend of 10: fatal on the receiver, the send fails", results,
        {0, -1},
        {{"ncclSend: rank 1 aborted the communicator (ncclSend and ncclRecv do not match)"},
         {"ncclRecv of 44 bytes of ncclFloat32 from rank 0, but rank 0 sent 40 bytes of ncclFloat32"}});
    id = new_id();
    results = run_ranks(2, [&](int rank) { // the receiver exits: a send larger than the ring cannot finish
        ncclComm_t comm = init_or_exit(2, id, rank);
        if (rank == 1) _exit(0);
        float* buf = device_alloc<float>(1 << 18);
        const double start = now_s();
        ncclResult_t r = ncclSend(buf, 1 << 18, ncclFloat32, 1, comm, nullptr);
        CHECK(r == ncclRemoteError && now_s() - start < 5.0, "rank 0: the send returned %s after %.1f s",
              ncclGetErrorString(r), now_s() - start);
        ncclCommAbort(comm);
    });
    expect_ranks("the receiver exits: the send returns ncclRemoteError", results, {0, 0},
                 {{"ncclSend: rank 1 (pid", "exited while we waited"}, {}});
    setenv("CUDA_EMU_NCCL_TIMEOUT", "1", 1);
    id = new_id();
    results = run_ranks(2, [&](int rank) { // both send first, outside a group: NCCL's deadlock
        ncclComm_t comm = init_or_exit(2, id, rank);
        float* buf = device_alloc<float>(10);
        ncclResult_t r = ncclSend(buf, 10, ncclFloat32, 1 - rank, comm, nullptr);
        CHECK(r == ncclSystemError || r == ncclRemoteError, "rank %d: a send nobody receives returned %s",
              rank, ncclGetErrorString(r));
        ncclCommAbort(comm);
    });
    setenv("CUDA_EMU_NCCL_TIMEOUT", "60", 1);
    expect_ranks("two ranks send to each other outside a group: a deadlock in NCCL, a timeout here", results,
                 {0, 0}, {{"ncclSend"}, {"ncclSend"}});
    id = new_id();
    results = run_ranks(1, [&](int rank) {
        ncclComm_t comm = init_or_exit(1, id, rank);
        float* buf = device_alloc<float>(4);
        CHECK(ncclSend(buf, 4, ncclFloat32, 0, comm, nullptr) == ncclInvalidUsage,
              "a send to itself, no group");
        CHECK(ncclGroupEnd() == ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
        ncclCommAbort(comm);
    });
    expect_ranks("a send to itself outside a group; ncclGroupEnd without a start", results, {0},
                 {{"its receive could never be posted", "ncclGroupEnd without ncclGroupStart"}});
}

int main() {
    printf("test_emu_nccl: collectives between forked processes (slot %zu bytes)\n",
           (size_t)EMU_NCCL_SLOT_BYTES);
    setenv("CUDA_EMU_NCCL_TIMEOUT", "60", 1); // a broken emulator fails this test in a minute, not five
    test_collectives(2);
    test_collectives(3); // 1/3 is inexact: a mean of premultiplied inputs would differ from sum / N
    test_collectives(4);

    printf("point-to-point:\n");
    test_p2p(2);
    test_p2p(3);

    printf("failures:\n");
    test_p2p_failures();
    test_dead_peer();
    test_timeout();
    test_abort();
    test_mismatch("mismatched collectives (all-reduce vs all-gather)",
                  [](ncclComm_t comm, int rank, float* buf) {
                      if (rank == 0) ncclAllReduce(buf, buf, 1000, ncclFloat32, ncclSum, comm, nullptr);
                      if (rank == 1) ncclAllGather(buf, buf + 1000, 1000, ncclFloat32, comm, nullptr);
                  },
                  {"collectives do not match: rank 0 called ncclAllReduce #2 (count 1000, ncclFloat32, "
                   "ncclSum), rank 1 called ncclAllGather #2 (count 1000, ncclFloat32)"});
    test_mismatch("mismatched counts",
                  [](ncclComm_t comm, int rank, float* buf) {
                      ncclAllReduce(buf, buf, rank == 0 ? 1000 : 999, ncclFloat32, ncclAvg, comm, nullptr);
                  },
                  {"rank 0 called ncclAllReduce #2 (count 1000, ncclFloat32, ncclAvg), rank 1 called "
                   "ncclAllReduce #2 (count 999,"});
    test_fatal("a host buffer",
               [](ncclComm_t comm) {
                   static float host[100];
                   float* dev = device_alloc<float>(100);
                   ncclAllReduce(host, dev, 100, ncclFloat32, ncclSum, comm, nullptr);
               },
               {"ncclAllReduce: sendbuff", "is not device memory"});
    test_fatal("a receive buffer one element short",
               [](ncclComm_t comm) {
                   float* send = device_alloc<float>(101);
                   float* recv = device_alloc<float>(100);
                   ncclAllGather(send, recv, 101, ncclFloat32, comm, nullptr);
               },
               {"ncclAllGather: recvbuff", "(404 bytes) is not device memory"});
    test_fatal("overlapping buffers, not in place",
               [](ncclComm_t comm) {
                   float* buf = device_alloc<float>(100);
                   ncclAllReduce(buf, buf + 1, 99, ncclFloat32, ncclSum, comm, nullptr);
               },
               {"ncclAllReduce: sendbuff", "overlap but are not in place"});
    test_init_failures();
    test_bad_arguments();

    int left = leftover_segments();
    CHECK(left == 0, "%d shared-memory segments left in /dev/shm", left);
    printf("  nothing left in /dev/shm\n");
    return test_summary("test_emu_nccl");
}
