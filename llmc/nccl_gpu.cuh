// nccl_gpu.cuh: data parallelism on GPUs: the NCCL communicator bootstrap and the collectives the GPU
// trainer needs, each one process per GPU.
//
// Bootstrap. NCCL ranks find each other through a 128-byte ncclUniqueId made by rank 0 and handed to
// every other process before ncclCommInitRank. Three ways to hand it over (flag -pi):
//   mpi  launched by mpirun (build with -DUSE_MPI): rank and world size come from MPI, the id is
//        broadcast with MPI_Bcast, the GPU is the process's rank among the processes of its node;
//   tcp  one command per node, no MPI: -pn processes, this one is -pr, rank 0 is reached at -ps host[:port]
//        (llmc/rendezvous.h); the GPU is -pr % -pg (GPUs per node);
//   fs   the same through a directory -pf that every node shares (llmc/rendezvous.h).
// A build without USE_MPI given -pi mpi (the default) runs as a single process, and refuses to run when
// mpirun started several.
//
// Streams. Collectives run on their own stream (nccl_stream) so they overlap the backward pass on the
// compute stream. Every collective wrapper first records an event on the compute stream and makes
// nccl_stream wait for it, so it reads gradients only after the kernels that wrote them;
// multi_gpu_sync() makes the compute stream wait for nccl_stream before the optimizer reads the results.
// Nothing here blocks the host except multi_gpu_wait / multi_gpu_barrier / multi_gpu_allreduce_mean_float.
//
//   stage 0: after each layer's backward of the step's last micro-step:
//            multi_gpu_allreduce_mean(&mgc, stream, grads + offset, count) (that layer's fp32 gradients,
//            averaged while the compute stream goes on with the next layer's backward)
//   stage 1: after the backward: multi_gpu_reduce_scatter(&mgc, stream, grads, grads + shard_offset,
//            shard_size, true) (average; shard_offset/shard_size from llmc/zero.h)
//   then:    multi_gpu_sync(&mgc, stream); optimizer on this rank's part;
//   stage 1: multi_gpu_all_gather(&mgc, stream, params + shard_offset, params, shard_size); sync again
//   grad norm: multi_gpu_allreduce_sum(&mgc, stream, norm_squared_device, 1) (stage 1: each rank's shard)
//
// One process: nccl_comm is null and every wrapper returns at once (in-place calls do nothing; a
// reduce-scatter or all-gather between distinct buffers is a device copy), so single-GPU training pays
// nothing.
//
// One GPU, no NCCL and no MPI: built with -DNO_MULTI_GPU (make NO_MULTI_GPU=1), the NCCL names come from
// llmc/nccl_none.h instead of <nccl.h> and the program links neither libnccl nor MPI; everything below is
// the same, and more than one process is refused at start-up.
//
// Failures. Under mpirun, multi_gpu_config_init installs pg_install_abort_on_exit (llmc/mpi_cpu.h): any
// exit before multi_gpu_config_free (fail(), cudaCheck, ncclCheck) aborts every rank; so the trainer must
// call multi_gpu_config_free before every deliberate exit. Without mpirun (tcp/fs) nobody kills the other
// processes, and a rank whose peer died can block inside a collective forever (NCCL has no timeout of its
// own, and over NVLink/shared memory does not even notice); so the trainer should wait for the step with
// multi_gpu_wait(&mgc, stream, timeout) instead of cudaStreamSynchronize: it polls the stream and NCCL's
// asynchronous error state, and on an error or after the timeout aborts the communicator and fails naming
// the rank.
#pragma once

#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <unistd.h>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#ifdef NO_MULTI_GPU
#include "llmc/nccl_none.h"
#else
#include <nccl.h>
#if NCCL_VERSION_CODE < NCCL_VERSION(2, 10, 0)
#error "nccl_gpu.cuh needs NCCL >= 2.10 (ncclAvg, ncclBfloat16)"
#endif
#endif

#include "llmc/cuda_common.h"
#include "llmc/mpi_cpu.h"
#include "llmc/rendezvous.h"
#include "llmc/utils.h"

// checked NCCL calls: the message names the call, the call site and NCCL's error string
inline void nccl_check(ncclResult_t status, const char* call, const char* file, int line) {
    if (status != ncclSuccess) {
        fail("NCCL error at %s:%d: %s: %s (%d)", file, line, call, ncclGetErrorString(status), (int)status);
    }
}
#define ncclCheck(call) (nccl_check((call), #call, __FILE__, __LINE__))

// the NCCL type of each element type we reduce (the dtype switch of the wrappers below)
inline ncclDataType_t nccl_dtype(const float*) {
    return ncclFloat32;
}
inline ncclDataType_t nccl_dtype(const __nv_bfloat16*) {
    return ncclBfloat16;
}

struct MultiGpuConfig {
    int rank = 0;                       // this process, 0 .. num_ranks-1 (as ProcessGroup's)
    int num_ranks = 1;                  // processes in the job, one per GPU
    int local_device_idx = 0;           // the CUDA device of this process
    ncclComm_t nccl_comm = nullptr;     // null when num_ranks == 1
    cudaStream_t nccl_stream = nullptr; // collectives run here
    cudaEvent_t compute_done = nullptr; // recorded on the compute stream, waited for by nccl_stream
    cudaEvent_t nccl_done = nullptr;    // recorded on nccl_stream, waited for by the compute stream
    float* scratch = nullptr;           // one device float for barriers and host scalars (zeroed)
    float* scratch_host = nullptr;      // one pinned host float: a pageable copy would block the host
                                        // inside cudaMemcpyAsync, beyond the reach of multi_gpu_wait
    ProcessGroup pg;                    // the MPI process group when launched by mpirun
    bool using_mpi = false;             // pg is live (must be finalized)
};

// "error: [rank R of N] <message>", then stop: the communicator is aborted (peers blocked in a collective
// with us get an error instead of waiting forever, where the transport notices) and, under MPI, every
// rank is aborted.
[[noreturn]] inline void multi_gpu_fail(MultiGpuConfig* config, const char* fmt, ...)
    __attribute__((format(printf, 2, 3)));
[[noreturn]] inline void multi_gpu_fail(MultiGpuConfig* config, const char* fmt, ...) {
    char message[1024];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof(message), fmt, args);
    va_end(args);
    if (config->nccl_comm != nullptr) {
        ncclCommAbort(config->nccl_comm); // best effort: we are failing anyway
        config->nccl_comm = nullptr;
    }
    config->pg.rank = config->rank;
    config->pg.num_ranks = config->num_ranks;
    pg_fail(&config->pg, "%s", message);
}

// ----------------------------------------------------------------------------------------------------
// setup and teardown

// The communicator of config's num_ranks processes from id (every one of them calls this), its stream,
// events and scratch.
inline void multi_gpu_comm_start(MultiGpuConfig* config, const ncclUniqueId& id) {
    ncclCheck(ncclCommInitRank(&config->nccl_comm, config->num_ranks, id, config->rank));
    cudaCheck(cudaStreamCreateWithFlags(&config->nccl_stream, cudaStreamNonBlocking));
    cudaCheck(cudaEventCreateWithFlags(&config->compute_done, cudaEventDisableTiming));
    cudaCheck(cudaEventCreateWithFlags(&config->nccl_done, cudaEventDisableTiming));
    cudaCheck(cudaMalloc(&config->scratch, sizeof(float)));
    cudaCheck(cudaMemset(config->scratch, 0, sizeof(float))); // the barrier sums it: keep it finite
    cudaCheck(cudaMallocHost(&config->scratch_host, sizeof(float)));
}

// Set up this process's GPU and, for more than one process, the NCCL communicator. init_method: "mpi",
// "tcp" or "fs" (flag -pi); server (flag -ps, "host[:port]") for tcp; fs_path (flag -pf) for fs;
// num_processes, process_rank, gpus_per_node (flags -pn, -pr, -pg) for tcp and fs (ignored under mpi,
// where MPI knows them). gpus_per_node <= 0 means "all the GPUs this node has".
inline MultiGpuConfig multi_gpu_config_init(int* argc, char*** argv, const char* init_method,
                                            const char* server, const char* fs_path, int num_processes,
                                            int process_rank, int gpus_per_node) {
    MultiGpuConfig config;
    std::string method = init_method != nullptr ? init_method : "mpi";
    if (method != "mpi" && method != "tcp" && method != "fs") {
        fail("flag -pi expects mpi, tcp or fs, got '%s'", method.c_str());
    }
    int local_rank = 0;
    if (method == "mpi") {
        process_group_init(&config.pg, argc, argv); // without USE_MPI: one process (refuses under mpirun)
        config.using_mpi = true;
        pg_install_abort_on_exit(&config.pg); // from here on, any failure aborts every rank
        config.rank = config.pg.rank;
        config.num_ranks = config.pg.num_ranks;
#ifdef USE_MPI
        // the rank among the processes that share this node
        MPI_Comm node_comm;
        pg_check(&config.pg,
                 MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, config.pg.rank, MPI_INFO_NULL,
                                     &node_comm),
                 "MPI_Comm_split_type");
        pg_check(&config.pg, MPI_Comm_rank(node_comm, &local_rank), "MPI_Comm_rank");
        pg_check(&config.pg, MPI_Comm_free(&node_comm), "MPI_Comm_free");
#endif
    }
    int device_count = 0;
    cudaCheck(cudaGetDeviceCount(&device_count));
    if (method != "mpi") {
        if (num_processes < 1 || process_rank < 0 || process_rank >= num_processes) {
            fail("-pi %s needs -pn (number of processes, >= 1) and -pr (this process's rank, 0..pn-1), got "
                 "-pn %d -pr %d",
                 method.c_str(), num_processes, process_rank);
        }
        config.num_ranks = num_processes;
        config.rank = process_rank;
        int per_node = gpus_per_node > 0 ? gpus_per_node : device_count;
        if (per_node < 1) fail("no CUDA device found");
        local_rank = process_rank % per_node;
    }
    config.pg.rank = config.rank;
    config.pg.num_ranks = config.num_ranks;
#ifdef NO_MULTI_GPU
    if (config.num_ranks > 1) {
        multi_gpu_fail(&config,
                       "this program was built with NO_MULTI_GPU=1 (no NCCL): it runs one process, but -pn "
                       "asks for %d; build it without NO_MULTI_GPU for several GPUs",
                       config.num_ranks);
    }
#endif
    if (local_rank >= device_count) {
        multi_gpu_fail(&config,
                       "this process should use GPU %d of its node, but the node has %d (check -pg and how "
                       "many processes run per node)",
                       local_rank, device_count);
    }
    config.local_device_idx = local_rank;
    cudaCheck(cudaSetDevice(config.local_device_idx));
    if (config.num_ranks == 1) return config; // no communicator, no streams: nothing to overlap

    ncclUniqueId id;
    if (config.rank == 0) ncclCheck(ncclGetUniqueId(&id));
    if (method == "mpi") {
#ifdef USE_MPI
        pg_check(&config.pg, MPI_Bcast(&id, (int)sizeof(id), MPI_BYTE, 0, MPI_COMM_WORLD), "MPI_Bcast");
#endif
    } else if (method == "tcp") {
        rendezvous_tcp(&id, sizeof(id), config.rank, config.num_ranks, server);
    } else {
        rendezvous_fs(&id, sizeof(id), config.rank, config.num_ranks, fs_path);
    }
    multi_gpu_comm_start(&config, id);
    return config;
}

// Wait for outstanding collectives, free everything, finalize MPI. Call before every deliberate exit.
inline void multi_gpu_config_free(MultiGpuConfig* config) {
    if (config->nccl_comm != nullptr) {
        cudaCheck(cudaStreamSynchronize(config->nccl_stream));
        ncclCheck(ncclCommDestroy(config->nccl_comm));
        config->nccl_comm = nullptr;
        cudaCheck(cudaStreamDestroy(config->nccl_stream));
        cudaCheck(cudaEventDestroy(config->compute_done));
        cudaCheck(cudaEventDestroy(config->nccl_done));
        cudaCheck(cudaFree(config->scratch));
        cudaCheck(cudaFreeHost(config->scratch_host));
    }
    if (config->using_mpi) {
        process_group_finalize(&config->pg);
        config->using_mpi = false;
    }
}

// ----------------------------------------------------------------------------------------------------
// ordering between the compute stream and nccl_stream

// nccl_stream waits for everything queued so far on compute_stream (e.g. a layer's backward).
inline void multi_gpu_after_compute(MultiGpuConfig* config, cudaStream_t compute_stream) {
    cudaCheck(cudaEventRecord(config->compute_done, compute_stream));
    cudaCheck(cudaStreamWaitEvent(config->nccl_stream, config->compute_done, 0));
}

// compute_stream waits for every collective queued so far (before the optimizer reads gradients, or the
// forward reads all-gathered parameters). The host does not wait.
inline void multi_gpu_sync(MultiGpuConfig* config, cudaStream_t compute_stream) {
    if (config->num_ranks == 1) return;
    cudaCheck(cudaEventRecord(config->nccl_done, config->nccl_stream));
    cudaCheck(cudaStreamWaitEvent(compute_stream, config->nccl_done, 0));
}

// One collective's completion rather than all of them (ZeRO-2/3: a bucket's gather or reduce-scatter
// while the next is queued): multi_gpu_mark records event after the collectives queued so far on
// nccl_stream; multi_gpu_wait_mark makes compute_stream wait for it. One process: collectives are copies
// on compute_stream, already in order, so both do nothing.
inline void multi_gpu_mark(MultiGpuConfig* config, cudaEvent_t event) {
    if (config->num_ranks > 1) cudaCheck(cudaEventRecord(event, config->nccl_stream));
}
inline void multi_gpu_wait_mark(MultiGpuConfig* config, cudaStream_t compute_stream, cudaEvent_t event) {
    if (config->num_ranks > 1) cudaCheck(cudaStreamWaitEvent(compute_stream, event, 0));
}

// ----------------------------------------------------------------------------------------------------
// collectives (queued on nccl_stream after the work already queued on compute_stream)

// buf (count) <- mean over processes of buf, in place.
template <class T>
void multi_gpu_allreduce_mean(MultiGpuConfig* config, cudaStream_t compute_stream, T* buf, size_t count) {
    if (config->num_ranks == 1) return;
    multi_gpu_after_compute(config, compute_stream);
    ncclCheck(
        ncclAllReduce(buf, buf, count, nccl_dtype(buf), ncclAvg, config->nccl_comm, config->nccl_stream));
}

// buf (count) <- sum over processes of buf, in place (e.g. the squared gradient norm of each rank's shard).
template <class T>
void multi_gpu_allreduce_sum(MultiGpuConfig* config, cudaStream_t compute_stream, T* buf, size_t count) {
    if (config->num_ranks == 1) return;
    multi_gpu_after_compute(config, compute_stream);
    ncclCheck(
        ncclAllReduce(buf, buf, count, nccl_dtype(buf), ncclSum, config->nccl_comm, config->nccl_stream));
}

// ZeRO-1 gradients: send (num_ranks * shard_count, the padded buffer) reduced over processes; this
// process receives its slice recv (shard_count) = op over processes of send[rank*S, (rank+1)*S), with op
// the mean (average = true) or the sum. recv may be send + rank * shard_count (in place).
template <class T>
void multi_gpu_reduce_scatter(MultiGpuConfig* config, cudaStream_t compute_stream, const T* send, T* recv,
                              size_t shard_count, bool average) {
    if (config->num_ranks == 1) {
        if (recv != send) {
            cudaCheck(cudaMemcpyAsync(recv, send, shard_count * sizeof(T), cudaMemcpyDeviceToDevice,
                                      compute_stream));
        }
        return;
    }
    multi_gpu_after_compute(config, compute_stream);
    ncclCheck(ncclReduceScatter(send, recv, shard_count, nccl_dtype(send), average ? ncclAvg : ncclSum,
                                config->nccl_comm, config->nccl_stream));
}

// ZeRO-1 parameters: recv (num_ranks * shard_count) <- the slices of every process, slice r from
// process r. send_shard may be recv + rank * shard_count (in place).
template <class T>
void multi_gpu_all_gather(MultiGpuConfig* config, cudaStream_t compute_stream, const T* send_shard, T* recv,
                          size_t shard_count) {
    if (config->num_ranks == 1) {
        if (recv != send_shard) {
            cudaCheck(cudaMemcpyAsync(recv, send_shard, shard_count * sizeof(T), cudaMemcpyDeviceToDevice,
                                      compute_stream));
        }
        return;
    }
    multi_gpu_after_compute(config, compute_stream);
    ncclCheck(ncclAllGather(send_shard, recv, shard_count, nccl_dtype(send_shard), config->nccl_comm,
                            config->nccl_stream));
}

// ----------------------------------------------------------------------------------------------------
// host-side waits

// Block the host until stream (and the collectives it waits for) is done, like cudaStreamSynchronize,
// but fail instead of hanging: NCCL's asynchronous errors (a peer that died, a broken connection) and a
// timeout (timeout_s seconds; <= 0 means none) abort the communicator and stop with the rank named.
inline void multi_gpu_wait(MultiGpuConfig* config, cudaStream_t stream, double timeout_s) {
    if (config->num_ranks == 1) {
        cudaCheck(cudaStreamSynchronize(stream));
        return;
    }
    double start = rendezvous_now_s();
    while (true) {
        cudaError_t status = cudaStreamQuery(stream);
        if (status == cudaSuccess) return;
        if (status != cudaErrorNotReady) cudaCheck(status);
        ncclResult_t async_error = ncclSuccess;
        ncclCheck(ncclCommGetAsyncError(config->nccl_comm, &async_error));
        if (async_error != ncclSuccess) {
            multi_gpu_fail(config, "NCCL reported an asynchronous error: %s (another process died?)",
                           ncclGetErrorString(async_error));
        }
        if (timeout_s > 0 && rendezvous_now_s() - start > timeout_s) {
            multi_gpu_fail(config,
                           "a step did not finish within %g s: a collective is waiting for a process that "
                           "stopped or hangs",
                           timeout_s);
        }
        usleep(100);
    }
}

// Every process reaches this point before any goes on (e.g. rank 0 wrote a checkpoint the others read).
inline void multi_gpu_barrier(MultiGpuConfig* config, double timeout_s) {
    if (config->num_ranks == 1) return;
    ncclCheck(ncclAllReduce(config->scratch, config->scratch, 1, ncclFloat32, ncclSum, config->nccl_comm,
                            config->nccl_stream));
    multi_gpu_wait(config, config->nccl_stream, timeout_s);
}

// recv_host (num_ranks * bytes) <- the bytes of every process, process r's at r * bytes; blocking. For the
// start-up check that every process runs the same configuration (llmc/run_plan.h), not for the hot path.
inline void multi_gpu_allgather_bytes(MultiGpuConfig* config, const void* send_host, void* recv_host,
                                      size_t bytes, double timeout_s) {
    if (config->num_ranks == 1) {
        memcpy(recv_host, send_host, bytes);
        return;
    }
    char* buf = nullptr;
    const size_t total = bytes * config->num_ranks;
    cudaCheck(cudaMalloc(&buf, total));
    char* mine = buf + (size_t)config->rank * bytes;
    cudaCheck(cudaMemcpyAsync(mine, send_host, bytes, cudaMemcpyHostToDevice, config->nccl_stream));
    ncclCheck(ncclAllGather(mine, buf, bytes, ncclUint8, config->nccl_comm, config->nccl_stream));
    multi_gpu_wait(config, config->nccl_stream, timeout_s);
    cudaCheck(cudaMemcpy(recv_host, buf, total, cudaMemcpyDeviceToHost));
    cudaCheck(cudaFree(buf));
}

// Sum of a host value over processes, blocking.
inline float multi_gpu_allreduce_sum_float(MultiGpuConfig* config, float value, double timeout_s) {
    if (config->num_ranks == 1) return value;
    *config->scratch_host = value;
    cudaCheck(cudaMemcpyAsync(config->scratch, config->scratch_host, sizeof(float), cudaMemcpyHostToDevice,
                              config->nccl_stream));
    ncclCheck(ncclAllReduce(config->scratch, config->scratch, 1, ncclFloat32, ncclSum, config->nccl_comm,
                            config->nccl_stream));
    cudaCheck(cudaMemcpyAsync(config->scratch_host, config->scratch, sizeof(float), cudaMemcpyDeviceToHost,
                              config->nccl_stream));
    multi_gpu_wait(config, config->nccl_stream, timeout_s);
    const float sum = *config->scratch_host;
    cudaCheck(cudaMemsetAsync(config->scratch, 0, sizeof(float), config->nccl_stream)); // for the barrier
    return sum;
}
// Mean of a host value over processes (e.g. the loss, for printing), blocking.
inline float multi_gpu_allreduce_mean_float(MultiGpuConfig* config, float value, double timeout_s) {
    return multi_gpu_allreduce_sum_float(config, value, timeout_s) / config->num_ranks;
}

// ----------------------------------------------------------------------------------------------------
// groups of processes and messages between two of them (pipeline parallelism, llmc/pipeline.h)

// The processes of world with the same color, ranked by key: a group with its own communicator, stream and
// scratch, so that its collectives never meet another group's (a replica's pipeline stages; a stage's
// data-parallel copies). Every process of world calls this, the same calls in the same order. NCCL 2.18
// has ncclCommSplit for it; this works with any NCCL (and the emulator's): the group's first process (the
// lowest key) makes the id and one all-gather over world hands it to the others. A group of one process
// has no communicator: its collectives return at once, as with one GPU. Errors name the world rank.
inline MultiGpuConfig multi_gpu_subgroup(MultiGpuConfig* world, int color, int key, double timeout_s) {
    struct Member {
        int color, key;
        ncclUniqueId id; // made by the group's first process
    };
    const int N = world->num_ranks;
    Member mine = {color, key, {}};
    std::vector<Member> all(N);
    multi_gpu_allgather_bytes(world, &mine, all.data(), sizeof(Member), timeout_s);
    MultiGpuConfig group;
    group.local_device_idx = world->local_device_idx;
    group.pg = world->pg; // (world_rank, world_size: what an error names)
    group.num_ranks = group.rank = 0;
    int leader = -1;
    for (int r = 0; r < N; r++) {
        if (all[r].color != color) continue;
        if (all[r].key == key && r != world->rank)
            fail("multi_gpu_subgroup: world ranks %d and %d both have key %d in group %d", r, world->rank,
                 key, color);
        group.num_ranks++;
        if (all[r].key < key) group.rank++;
        if (leader < 0 || all[r].key < all[leader].key) leader = r;
    }
    // (every process takes part in the second all-gather, those of a group of one too)
    if (leader == world->rank && group.num_ranks > 1) ncclCheck(ncclGetUniqueId(&mine.id));
    multi_gpu_allgather_bytes(world, &mine, all.data(), sizeof(Member), timeout_s);
    if (group.num_ranks > 1) multi_gpu_comm_start(&group, all[leader].id);
    return group;
}

// One group of messages between processes of config: a send of send_count elements from send to process
// send_peer and a receive of recv_count elements into recv from recv_peer, either left out with a null
// buffer. Posted together (ncclGroupStart / End), they complete together: a send completes only when its
// receiver takes it, so two processes that send to each other at once and then receive would wait for each
// other for ever (llmc/pipeline.h's pipeline_exchanges). Ordered like the collectives: after the work
// queued on compute_stream, and the compute stream's next kernels after it.
template <class T>
void multi_gpu_exchange(MultiGpuConfig* config, cudaStream_t compute_stream, const T* send, size_t send_count,
                        int send_peer, T* recv, size_t recv_count, int recv_peer) {
    if (send == nullptr && recv == nullptr) return;
    if (config->num_ranks == 1) fail("multi_gpu_exchange: a message in a group of one process");
    multi_gpu_after_compute(config, compute_stream);
    ncclCheck(ncclGroupStart());
    if (send != nullptr)
        ncclCheck(
            ncclSend(send, send_count, nccl_dtype(send), send_peer, config->nccl_comm, config->nccl_stream));
    if (recv != nullptr)
        ncclCheck(
            ncclRecv(recv, recv_count, nccl_dtype(recv), recv_peer, config->nccl_comm, config->nccl_stream));
    ncclCheck(ncclGroupEnd());
    multi_gpu_sync(config, compute_stream);
}
