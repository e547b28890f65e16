// nccl_check.cu: checks llmc/nccl_gpu.cuh on GPUs: bootstrap, collectives, stream ordering.
//
//   ./dev/cuda/nccl_check                                  one GPU (world size 1: no communicator)
//   mpirun -np 2 ./dev/cuda/nccl_check_mpi                 two GPUs, id over MPI
//   ./dev/cuda/nccl_check -pi tcp -ps 127.0.0.1 -pn 2 -pr 0 & ./dev/cuda/nccl_check -pi tcp -ps 127.0.0.1 -pn
//   2 -pr 1 (the same with -pi fs -pf DIR)
//
// Every process fills its buffers with small integers that depend on its rank, so each process computes
// the expected results of every collective on the host, independently of NCCL. Sums of integers below
// 256 are exact in bf16 and fp32, so sums, reduce-scatter and all-gather are compared exactly; the mean
// (ncclAvg may scale each term by 1/N before summing) gets a bound of (N+1) rounding errors of the type
// times the largest magnitude. The ordering test makes a slow kernel on the compute stream write the
// gradients and reduces them right after: without the event between the streams, NCCL would read the
// old values. World size 1 checks that every wrapper is the identity (or a copy).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "llmc/nccl_gpu.cuh"
#include "llmc/zero.h"

static int failures = 0;

static void report(const MultiGpuConfig& mgc, bool ok, const char* what) {
    if (!ok) failures++;
    if (!ok || mgc.rank == 0) {
        printf("%s [rank %d of %d] %s\n", ok ? "ok  " : "FAIL", mgc.rank, mgc.num_ranks, what);
    }
}

static float to_float(float x) {
    return x;
}
static float to_float(__nv_bfloat16 x) {
    return __bfloat162float(x);
}
template <class T> T from_float(float x);
template <> float from_float<float>(float x) {
    return x;
}
template <> __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
    return __float2bfloat16(x);
}

// a slow writer: spins for about `cycles` clock cycles, then writes value(i) = (i % 16) + rank + 1
template <class T> __global__ void slow_fill(T* buf, size_t n, int rank, long long cycles) {
    long long start = clock64();
    while (clock64() - start < cycles) {
    }
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n;
         i += (size_t)gridDim.x * blockDim.x) {
        buf[i] = (T)(float)((i % 16) + rank + 1);
    }
}

static float value(size_t i, int rank) {
    return (float)((i % 16) + rank);
}

template <class T>
static void check_type(MultiGpuConfig* mgc, cudaStream_t stream, const char* type, double eps) {
    int N = mgc->num_ranks, rank = mgc->rank;
    size_t P = 1000003; // odd: the ZeRO layout pads it
    ShardLayout layout = shard_layout(P, rank, N);
    size_t padded = layout.padded_params, S = layout.shard_size, off = layout.shard_offset;
    std::vector<T> mine(padded, from_float<T>(0.0f));
    std::vector<double> sum(padded, 0.0);
    for (size_t i = 0; i < P; i++) {
        mine[i] = from_float<T>(value(i, rank));
        for (int r = 0; r < N; r++) sum[i] += value(i, r);
    }
    T *buf, *shard;
    cudaCheck(cudaMalloc(&buf, padded * sizeof(T)));
    cudaCheck(cudaMalloc(&shard, S * sizeof(T)));
    std::vector<T> got(padded);
    auto upload = [&]() {
        cudaCheck(cudaMemcpy(buf, mine.data(), padded * sizeof(T), cudaMemcpyHostToDevice));
    };
    auto download = [&](const T* src, size_t n) {
        cudaCheck(cudaMemcpy(got.data(), src, n * sizeof(T), cudaMemcpyDeviceToHost));
    };
    std::string name;

    // all-reduce sum: exact
    upload();
    multi_gpu_allreduce_sum(mgc, stream, buf, padded);
    multi_gpu_sync(mgc, stream);
    cudaCheck(cudaStreamSynchronize(stream));
    download(buf, padded);
    bool ok = true;
    for (size_t i = 0; i < padded; i++) ok = ok && to_float(got[i]) == (float)sum[i];
    name = std::string("allreduce sum (") + type + ", exact)";
    report(*mgc, ok, name.c_str());

    // all-reduce average: within (N+1) roundings of the largest value
    upload();
    multi_gpu_allreduce_mean(mgc, stream, buf, padded);
    multi_gpu_sync(mgc, stream);
    cudaCheck(cudaStreamSynchronize(stream));
    download(buf, padded);
    double bound = (N + 1) * eps * (15.0 + N), worst = 0.0;
    for (size_t i = 0; i < padded; i++) worst = std::fmax(worst, std::fabs(to_float(got[i]) - sum[i] / N));
    name = std::string("allreduce avg (") + type + ", max error " + std::to_string(worst) +
           " <= " + std::to_string(bound) + ")";
    report(*mgc, worst <= bound, name.c_str());

    // reduce-scatter (sum) into a separate shard, all-gather back: == all-reduce, exact
    upload();
    multi_gpu_reduce_scatter(mgc, stream, buf, shard, S, false);
    multi_gpu_sync(mgc, stream);
    cudaCheck(cudaMemsetAsync(buf, 0xFF, padded * sizeof(T), stream)); // poison (NaN) before the gather
    multi_gpu_all_gather(mgc, stream, shard, buf, S);
    multi_gpu_sync(mgc, stream);
    cudaCheck(cudaStreamSynchronize(stream));
    download(buf, padded);
    ok = true;
    for (size_t i = 0; i < padded; i++) ok = ok && to_float(got[i]) == (float)sum[i];
    name = std::string("reduce-scatter + all-gather == all-reduce (") + type + ", separate buffers)";
    report(*mgc, ok, name.c_str());

    // in place, as the trainer uses them; the average this time
    upload();
    multi_gpu_reduce_scatter(mgc, stream, buf, buf + off, S, true);
    multi_gpu_all_gather(mgc, stream, buf + off, buf, S);
    multi_gpu_sync(mgc, stream);
    cudaCheck(cudaStreamSynchronize(stream));
    download(buf, padded);
    worst = 0.0;
    for (size_t i = 0; i < padded; i++) worst = std::fmax(worst, std::fabs(to_float(got[i]) - sum[i] / N));
    name = std::string("in-place reduce-scatter (avg) + all-gather (") + type + ")";
    report(*mgc, worst <= bound, name.c_str());

    // ordering: a slow kernel on the compute stream writes value + 1, then the average is queued at once
    // (as the trainer's stage-0 overlap queues each layer's)
    upload();
    CUDA_LAUNCH(slow_fill<T>, 64, 256, 0, stream)(buf, P, rank, 50 * 1000 * 1000LL); // ~25 ms at 2 GHz
    cudaCheck(cudaGetLastError());
    multi_gpu_allreduce_mean(mgc, stream, buf, padded);
    multi_gpu_sync(mgc, stream);
    multi_gpu_wait(mgc, stream, 60.0);
    download(buf, padded);
    worst = 0.0;
    for (size_t i = 0; i < P; i++) worst = std::fmax(worst, std::fabs(to_float(got[i]) - (sum[i] + N) / N));
    name = std::string("collective waits for the compute stream (") + type + ", max error " +
           std::to_string(worst) + ")";
    report(*mgc, worst <= bound + (N + 1) * eps, name.c_str());

    cudaCheck(cudaFree(buf));
    cudaCheck(cudaFree(shard));
}

int main(int argc, char** argv) {
    std::string init_method = "mpi", server = "", fs_path = "";
    int num_processes = 1, process_rank = 0, gpus_per_node = 0;
    for (int i = 1; i < argc; i += 2) {
        std::string flag = argv[i];
        if (i + 1 >= argc) fail("flag %s needs a value", argv[i]);
        if (flag == "-pi")
            init_method = argv[i + 1];
        else if (flag == "-ps")
            server = argv[i + 1];
        else if (flag == "-pf")
            fs_path = argv[i + 1];
        else if (flag == "-pn")
            num_processes = (int)parse_long_flag("-pn", argv[i + 1]);
        else if (flag == "-pr")
            process_rank = (int)parse_long_flag("-pr", argv[i + 1]);
        else if (flag == "-pg")
            gpus_per_node = (int)parse_long_flag("-pg", argv[i + 1]);
        else
            fail("unknown flag %s (known: -pi -ps -pf -pn -pr -pg)", argv[i]);
    }
    MultiGpuConfig mgc = multi_gpu_config_init(&argc, &argv, init_method.c_str(), server.c_str(),
                                               fs_path.c_str(), num_processes, process_rank, gpus_per_node);
    printf("[rank %d of %d] GPU %d, %s\n", mgc.rank, mgc.num_ranks, mgc.local_device_idx,
           mgc.nccl_comm != nullptr ? "NCCL communicator" : "single process, no communicator");
    cudaStream_t stream;
    cudaCheck(cudaStreamCreate(&stream));

    check_type<float>(&mgc, stream, "fp32", 0x1p-24);
    check_type<__nv_bfloat16>(&mgc, stream, "bf16", 0x1p-8);

    int N = mgc.num_ranks;
    float host_sum = mgc.num_ranks * multi_gpu_allreduce_mean_float(&mgc, (float)(mgc.rank + 1), 60.0);
    char what[128];
    snprintf(what, sizeof(what), "host scalar sum %g == N(N+1)/2 = %d", host_sum, N * (N + 1) / 2);
    report(mgc, host_sum == (float)(N * (N + 1) / 2), what);
    multi_gpu_barrier(&mgc, 60.0);

    int total_failures =
        (int)lroundf(mgc.num_ranks * multi_gpu_allreduce_mean_float(&mgc, (float)failures, 60.0));
    cudaCheck(cudaStreamDestroy(stream));
    multi_gpu_config_free(&mgc);
    if (mgc.rank == 0) printf(total_failures == 0 ? "OK nccl_check\n" : "FAIL nccl_check\n");
    return total_failures == 0 ? 0 : 1;
}
