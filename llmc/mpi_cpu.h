// mpi_cpu.h: the process groups of the CPU trainer: data and pipeline parallelism over MPI processes.
//
// Built with -DUSE_MPI (compiler mpicxx) it wraps MPI; built without, it is a single-process group with
// the same API and no MPI header, so single-process builds need no MPI at all. Every function is a no-op
// (or a copy) when num_ranks == 1, so the trainer calls them unconditionally.
//
// What the trainer does with it (ZeRO stage s, N ranks, layout from llmc/zero.h):
//   process_group_init(&pg, &argc, &argv);  pg_install_abort_on_exit(&pg);
//   ... forward/backward on this rank's micro-batch; grads has padded_params elements, padding zero ...
//   s = 0:  pg_allreduce_mean(&pg, grads, padded_params);              then update all parameters
//   s = 1:  pg_reduce_scatter_mean(&pg, grads, grad_shard, shard_size);
//           update params[shard_offset, +shard_size) with the rank's slice of m and v
//           pg_allgather(&pg, params + shard_offset, params, shard_size);
//   s = 2, 3: the same two collectives unit by unit (llmc/zero.h): a unit's gradient reduce-scattered as
//           the backward makes it; at stage 3 a unit's parameters all-gathered before use, the next one
//           prefetched with pg_allgather_start / pg_progress / pg_wait
//   process_group_finalize(&pg);   before every normal exit (see "failures" below)
// A pipeline (llmc/pipeline.h) splits the job into groups with pg_split (every collective runs on its
// group's communicator): a replica's stages, which pass activations and their gradients with
// pg_send_start / pg_recv, and each stage's data-parallel group, which does the above.
//
// Failures. A rank that stops while the others wait in a collective must take the whole job down, never
// leave it hanging. Measured with OpenMPI 4.1.4's mpirun: when one rank calls exit(1) (utils.h's fail())
// while the others sit in MPI_Allreduce, mpirun kills the others within about 1.5 s and exits with 1; it
// does the same for exit(0) without MPI_Finalize. That relies on the launcher (mpirun's default
// orte_abort_on_non_zero_status=true; srun or other launchers may differ), so the project does not:
//   - pg_fail() prints "error: [rank R of N] <message>" and calls MPI_Abort(MPI_COMM_WORLD, 1), which
//     any MPI implementation turns into the termination of every rank;
//   - pg_install_abort_on_exit() registers a std::atexit hook so that fail() (or any exit) in shared code
//     that has no ProcessGroup also calls MPI_Abort. An atexit hook cannot see the exit status, so it
//     uses the one thing it can see: MPI is initialised and not finalised. Exiting in that state is an
//     error under MPI whatever the status (MPI requires MPI_Finalize before exit), so with more than one
//     rank the hook aborts them all (a single process just exits with its own status). Hence the trainer
//     must call process_group_finalize() before every deliberate exit, including early successful ones
//     (e.g. after printing usage).
//
// Large counts. MPI counts are int; every transfer is split into calls of at most pg->max_count elements
// (INT_MAX by default; the test lowers it to exercise the chunked paths).
#pragma once

#include <climits>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "llmc/utils.h"

#ifdef USE_MPI
// C API only: OpenMPI's deprecated C++ bindings do not compile warning-free
#define OMPI_SKIP_MPICXX  1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

struct ProcessGroup {
    int rank = 0;                       // this process, 0 .. num_ranks-1
    int num_ranks = 1;                  // processes in the group (the job, or a part of it: pg_split)
    size_t max_count = INT_MAX;         // largest element count passed to one MPI call
    bool finalized = false;             // process_group_finalize was called
    int world_rank = 0, world_size = 1; // this process in the whole job (what error messages name)
#ifdef USE_MPI
    MPI_Comm comm = MPI_COMM_WORLD; // the group's communicator; every collective runs on it
#endif
};

// ----------------------------------------------------------------------------------------------------
// failure path

// Print "error: [rank R of N] <message>" and stop every rank of the job with a non-zero exit status.
[[noreturn]] inline void pg_fail(ProcessGroup* pg, const char* fmt, ...)
    __attribute__((format(printf, 2, 3)));
[[noreturn]] inline void pg_fail(ProcessGroup* pg, const char* fmt, ...) {
    remove_pending_temps();
    fflush(stdout);
    char message[1024];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof(message), fmt, args);
    va_end(args);
    fprintf(stderr, "error: [rank %d of %d] %s\n", pg->world_rank, pg->world_size, message);
    fflush(stderr);
#ifdef USE_MPI
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, 1);
#endif
    exit(EXIT_FAILURE);
}

#ifdef USE_MPI
// Check the return code of an MPI call; the message names the rank and the call.
inline void pg_check(ProcessGroup* pg, int err, const char* call) {
    if (err != MPI_SUCCESS) {
        char text[MPI_MAX_ERROR_STRING];
        int len = 0;
        if (MPI_Error_string(err, text, &len) != MPI_SUCCESS)
            snprintf(text, sizeof(text), "error code %d", err);
        pg_fail(pg, "%s failed: %s", call, text);
    }
}

// The atexit hook's only state: atexit handlers take no arguments, so this one global remembers who we
// are for the message.
struct PgExitState {
    int rank = 0, num_ranks = 1;
    bool installed = false;
};
inline PgExitState& pg_exit_state() {
    static PgExitState state;
    return state;
}
inline void pg_abort_if_not_finalized() {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    // a single process has no one to take down: exit with its own status, without MPI_Abort's banner
    if (initialized && !finalized && pg_exit_state().num_ranks > 1) {
        PgExitState& s = pg_exit_state();
        fprintf(stderr,
                "error: [rank %d of %d] exiting without process_group_finalize (after the error above, if "
                "any): aborting every rank\n",
                s.rank, s.num_ranks);
        fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
    }
}
#endif

// Make any exit() of this process before process_group_finalize() (e.g. fail() from llmc/utils.h in
// shared code) abort every rank. Idempotent; a no-op without MPI.
inline void pg_install_abort_on_exit(ProcessGroup* pg) {
#ifdef USE_MPI
    PgExitState& s = pg_exit_state();
    s.rank = pg->rank;
    s.num_ranks = pg->num_ranks;
    if (!s.installed) {
        if (std::atexit(pg_abort_if_not_finalized) != 0) pg_fail(pg, "std::atexit failed");
        s.installed = true;
    }
#else
    (void)pg;
#endif
}

// ----------------------------------------------------------------------------------------------------
// setup and teardown

// MPI is initialised with MPI_THREAD_FUNNELED: OpenMP threads compute, only the main thread calls MPI.
// Errors are made to return (MPI_ERRORS_RETURN) so that pg_check can name the rank and the call.
inline void process_group_init(ProcessGroup* pg, int* argc, char*** argv) {
    *pg = ProcessGroup();
#ifdef USE_MPI
    int provided = 0;
    int err = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    if (err != MPI_SUCCESS) fail("MPI_Init_thread failed with error code %d", err);
    pg_check(pg, MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
    pg_check(pg, MPI_Comm_rank(MPI_COMM_WORLD, &pg->rank), "MPI_Comm_rank");
    pg_check(pg, MPI_Comm_size(MPI_COMM_WORLD, &pg->num_ranks), "MPI_Comm_size");
    pg->world_rank = pg->rank;
    pg->world_size = pg->num_ranks;
    // every later error message from shared code (fail() in llmc/utils.h) names this process
    if (pg->num_ranks > 1) {
        char context[64];
        snprintf(context, sizeof(context), "[rank %d of %d] ", pg->rank, pg->num_ranks);
        error_context() = context;
    }
    if (provided < MPI_THREAD_FUNNELED) {
        pg_fail(pg, "MPI_Init_thread provided thread level %d, the trainer needs MPI_THREAD_FUNNELED",
                provided);
    }
#else
    (void)argc;
    (void)argv;
    // A build without MPI launched by mpirun would silently train N independent copies: refuse.
    const char* size_vars[] = {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"};
    for (const char* var : size_vars) {
        const char* value = getenv(var);
        if (value != nullptr && atoi(value) > 1) {
            fail("this program was built without MPI but launched as %s processes (%s=%s); rebuild it with "
                 "USE_MPI (mpicxx -DUSE_MPI) or run it as a single process",
                 value, var, value);
        }
    }
#endif
}

inline void process_group_finalize(ProcessGroup* pg) {
#ifdef USE_MPI
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) pg_check(pg, MPI_Finalize(), "MPI_Finalize");
#endif
    pg->finalized = true;
}

inline void pg_barrier(ProcessGroup* pg) {
#ifdef USE_MPI
    if (pg->num_ranks > 1) pg_check(pg, MPI_Barrier(pg->comm), "MPI_Barrier");
#else
    (void)pg;
#endif
}

// ----------------------------------------------------------------------------------------------------
// collectives on float buffers

// buf (n) <- sum over ranks of buf (n), in place.
inline void pg_allreduce_sum(ProcessGroup* pg, float* buf, size_t n) {
    if (pg->num_ranks == 1) return;
#ifdef USE_MPI
    for (size_t off = 0; off < n; off += pg->max_count) {
        int len = (int)(n - off < pg->max_count ? n - off : pg->max_count);
        pg_check(pg, MPI_Allreduce(MPI_IN_PLACE, buf + off, len, MPI_FLOAT, MPI_SUM, pg->comm),
                 "MPI_Allreduce");
    }
#else
    (void)buf;
    (void)n;
#endif
}

// buf (n) <- mean over ranks of buf (n): the data-parallel gradient average.
inline void pg_allreduce_mean(ProcessGroup* pg, float* buf, size_t n) {
    if (pg->num_ranks == 1) return;
    pg_allreduce_sum(pg, buf, n);
    float scale = 1.0f / (float)pg->num_ranks;
    for (size_t i = 0; i < n; i++) buf[i] *= scale;
}

inline bool pg_overlaps(const void* a, size_t a_bytes, const void* b, size_t b_bytes) {
    uintptr_t a0 = (uintptr_t)a, b0 = (uintptr_t)b;
    return a0 < b0 + b_bytes && b0 < a0 + a_bytes;
}

// ZeRO-1 gradient step. send (num_ranks * shard_size, the padded buffer) summed over ranks; this rank
// receives its slice: recv (shard_size) <- sum over ranks of send[rank*S, (rank+1)*S).
// recv may be exactly send + rank * shard_size (in place); any other overlap is an error.
inline void pg_reduce_scatter_sum(ProcessGroup* pg, const float* send, float* recv, size_t shard_size) {
    const float* mine = send + (size_t)pg->rank * shard_size;
    bool in_place = recv == mine;
    size_t total = (size_t)pg->num_ranks * shard_size;
    if (!in_place && pg_overlaps(send, total * sizeof(float), recv, shard_size * sizeof(float))) {
        pg_fail(pg, "pg_reduce_scatter_sum: recv overlaps send but is not send + rank * shard_size");
    }
    if (pg->num_ranks == 1) {
        if (!in_place) memcpy(recv, send, shard_size * sizeof(float));
        return;
    }
#ifdef USE_MPI
    if (shard_size <= pg->max_count) {
        // one call. In place, MPI takes the input from (and leaves the result at the start of) recvbuf,
        // which must then be the whole buffer; the result is moved to this rank's slice afterwards.
        if (in_place) {
            float* whole = const_cast<float*>(send); // writable: recv points into it
            pg_check(
                pg,
                MPI_Reduce_scatter_block(MPI_IN_PLACE, whole, (int)shard_size, MPI_FLOAT, MPI_SUM, pg->comm),
                "MPI_Reduce_scatter_block");
            if (whole != recv) memmove(recv, whole, shard_size * sizeof(float));
        } else {
            pg_check(pg, MPI_Reduce_scatter_block(send, recv, (int)shard_size, MPI_FLOAT, MPI_SUM, pg->comm),
                     "MPI_Reduce_scatter_block");
        }
        return;
    }
    // chunked: the piece [c, c+len) of every rank's slice is strided in send, so reduce it to its owner
    // rank by rank (the same bytes on the wire as one reduce-scatter of the chunk).
    for (size_t c = 0; c < shard_size; c += pg->max_count) {
        int len = (int)(shard_size - c < pg->max_count ? shard_size - c : pg->max_count);
        for (int root = 0; root < pg->num_ranks; root++) {
            const float* src = send + (size_t)root * shard_size + c;
            if (root == pg->rank) {
                const void* sendbuf = in_place ? MPI_IN_PLACE : (const void*)src;
                pg_check(pg, MPI_Reduce(sendbuf, recv + c, len, MPI_FLOAT, MPI_SUM, root, pg->comm),
                         "MPI_Reduce");
            } else {
                pg_check(pg, MPI_Reduce(src, nullptr, len, MPI_FLOAT, MPI_SUM, root, pg->comm), "MPI_Reduce");
            }
        }
    }
#endif
}

// The same, averaged: recv (shard_size) <- mean over ranks of this rank's slice of send.
inline void pg_reduce_scatter_mean(ProcessGroup* pg, const float* send, float* recv, size_t shard_size) {
    pg_reduce_scatter_sum(pg, send, recv, shard_size);
    if (pg->num_ranks == 1) return;
    float scale = 1.0f / (float)pg->num_ranks;
    for (size_t i = 0; i < shard_size; i++) recv[i] *= scale;
}

// buf (n) <- rank root's buf (n), on every rank of the group.
inline void pg_broadcast(ProcessGroup* pg, float* buf, size_t n, int root) {
    if (pg->num_ranks == 1) return;
#ifdef USE_MPI
    for (size_t off = 0; off < n; off += pg->max_count) {
        int len = (int)(n - off < pg->max_count ? n - off : pg->max_count);
        pg_check(pg, MPI_Bcast(buf + off, len, MPI_FLOAT, root, pg->comm), "MPI_Bcast");
    }
#else
    (void)buf;
    (void)n;
    (void)root;
#endif
}

// ZeRO-1 parameter step: every rank contributes its updated slice send_shard (shard_size) and receives
// the whole buffer recv (num_ranks * shard_size), slice r from rank r. send_shard may be exactly
// recv + rank * shard_size (in place); any other overlap is an error.
inline void pg_allgather(ProcessGroup* pg, const float* send_shard, float* recv, size_t shard_size) {
    float* mine = recv + (size_t)pg->rank * shard_size;
    bool in_place = send_shard == mine;
    size_t total = (size_t)pg->num_ranks * shard_size;
    if (!in_place && pg_overlaps(send_shard, shard_size * sizeof(float), recv, total * sizeof(float))) {
        pg_fail(pg, "pg_allgather: send_shard overlaps recv but is not recv + rank * shard_size");
    }
    if (pg->num_ranks == 1) {
        if (!in_place) memcpy(recv, send_shard, shard_size * sizeof(float));
        return;
    }
#ifdef USE_MPI
    if (shard_size <= pg->max_count) {
        const void* sendbuf = in_place ? MPI_IN_PLACE : (const void*)send_shard;
        pg_check(
            pg,
            MPI_Allgather(sendbuf, (int)shard_size, MPI_FLOAT, recv, (int)shard_size, MPI_FLOAT, pg->comm),
            "MPI_Allgather");
        return;
    }
    // chunked: put our slice in place, then every rank broadcasts its slice (chunk by chunk)
    if (!in_place) memcpy(mine, send_shard, shard_size * sizeof(float));
    for (int root = 0; root < pg->num_ranks; root++)
        pg_broadcast(pg, recv + (size_t)root * shard_size, shard_size, root);
#endif
}

// A non-blocking all-gather (ZeRO-3's prefetch of the next layer's parameters while this one computes).
// MPI moves the data inside MPI calls only (no progress thread here), so the caller pokes it with
// pg_progress between pieces of its work; pg_wait completes it. With one rank, or a transfer larger than
// max_count elements (done at once, blocking), the request is complete when started.
struct PgRequest {
#ifdef USE_MPI
    MPI_Request req = MPI_REQUEST_NULL;
#endif
    bool active = false;
};

// Starts pg_allgather(send_shard, recv, shard_size); send_shard must not overlap recv. recv is valid (and
// send_shard may be changed) only after pg_wait.
inline void pg_allgather_start(ProcessGroup* pg, const float* send_shard, float* recv, size_t shard_size,
                               PgRequest* req) {
    if (req->active) pg_fail(pg, "pg_allgather_start: the request is still pending");
    const size_t total = (size_t)pg->num_ranks * shard_size;
    if (pg_overlaps(send_shard, shard_size * sizeof(float), recv, total * sizeof(float))) {
        pg_fail(pg, "pg_allgather_start: send_shard overlaps recv");
    }
#ifdef USE_MPI
    if (pg->num_ranks > 1 && shard_size <= pg->max_count) {
        pg_check(pg,
                 MPI_Iallgather(send_shard, (int)shard_size, MPI_FLOAT, recv, (int)shard_size, MPI_FLOAT,
                                pg->comm, &req->req),
                 "MPI_Iallgather");
        req->active = true;
        return;
    }
#endif
    pg_allgather(pg, send_shard, recv, shard_size);
}

// Lets a pending request move data (MPI_Test); a no-op when there is none.
inline void pg_progress(ProcessGroup* pg, PgRequest* req) {
#ifdef USE_MPI
    if (!req->active) return;
    int done = 0;
    pg_check(pg, MPI_Test(&req->req, &done, MPI_STATUS_IGNORE), "MPI_Test");
    if (done) req->active = false;
#else
    (void)pg;
    (void)req;
#endif
}

// Waits until the request is complete; a no-op when it already is.
inline void pg_wait(ProcessGroup* pg, PgRequest* req) {
#ifdef USE_MPI
    if (!req->active) return;
    pg_check(pg, MPI_Wait(&req->req, MPI_STATUS_IGNORE), "MPI_Wait");
    req->active = false;
#else
    (void)pg;
    (void)req;
#endif
}

// ----------------------------------------------------------------------------------------------------
// scalars

// Sum of x over ranks (e.g. the squared gradient norm of each rank's shard, or the loss).
inline double pg_allreduce_sum_double(ProcessGroup* pg, double x) {
#ifdef USE_MPI
    if (pg->num_ranks > 1) {
        pg_check(pg, MPI_Allreduce(MPI_IN_PLACE, &x, 1, MPI_DOUBLE, MPI_SUM, pg->comm), "MPI_Allreduce");
    }
#else
    (void)pg;
#endif
    return x;
}

// Mean of x over ranks (the loss of each rank's share of the batch).
inline float pg_allreduce_mean_float(ProcessGroup* pg, float x) {
#ifdef USE_MPI
    if (pg->num_ranks > 1) {
        pg_check(pg, MPI_Allreduce(MPI_IN_PLACE, &x, 1, MPI_FLOAT, MPI_SUM, pg->comm), "MPI_Allreduce");
    }
#endif
    return x / pg->num_ranks;
}

// recv (num_ranks * bytes) <- the bytes of every rank, rank r's at r * bytes (the start-up check that every
// rank runs the same configuration, llmc/run_plan.h). bytes must fit in an int.
inline void pg_allgather_bytes(ProcessGroup* pg, const void* send, void* recv, size_t bytes) {
    if (pg->num_ranks == 1 || bytes == 0) {
        memcpy(recv, send, bytes);
        return;
    }
#ifdef USE_MPI
    if (bytes > (size_t)INT_MAX)
        pg_fail(pg, "pg_allgather_bytes: %zu bytes is more than one call sends", bytes);
    pg_check(pg, MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, pg->comm),
             "MPI_Allgather");
#endif
}

// ----------------------------------------------------------------------------------------------------
// groups within the job, and point-to-point messages (pipeline parallelism, train_gpt2.cpp)

// *out <- the group of the processes of parent that pass the same color, ranked by key (MPI_Comm_split;
// every process of parent must call it). The world's groups are never finalized: process_group_finalize
// of the world ends them all.
inline void pg_split(ProcessGroup* parent, int color, int key, ProcessGroup* out) {
    *out = *parent;
#ifdef USE_MPI
    if (parent->num_ranks > 1) {
        pg_check(parent, MPI_Comm_split(parent->comm, color, key, &out->comm), "MPI_Comm_split");
        pg_check(parent, MPI_Comm_set_errhandler(out->comm, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
        pg_check(parent, MPI_Comm_rank(out->comm, &out->rank), "MPI_Comm_rank");
        pg_check(parent, MPI_Comm_size(out->comm, &out->num_ranks), "MPI_Comm_size");
    }
#else
    (void)color;
    (void)key;
#endif
}

// Starts sending buf (n floats) to rank dest of the group, tagged; buf must stay unchanged until pg_wait.
// Non-blocking, so two neighbours that send to each other at the same moment (1F1B's forward and backward
// messages) cannot deadlock. A message is at most max_count floats (one MPI call).
inline void pg_send_start(ProcessGroup* pg, const float* buf, size_t n, int dest, int tag, PgRequest* req) {
    if (req->active) pg_fail(pg, "pg_send_start: the request is still pending");
    if (dest < 0 || dest >= pg->num_ranks || dest == pg->rank)
        pg_fail(pg, "pg_send_start: rank %d of a group of %d is no peer of rank %d", dest, pg->num_ranks,
                pg->rank);
    if (n > pg->max_count)
        pg_fail(pg, "pg_send_start: a message of %zu floats is more than one MPI call sends (%zu)", n,
                pg->max_count);
#ifdef USE_MPI
    pg_check(pg, MPI_Isend(buf, (int)n, MPI_FLOAT, dest, tag, pg->comm, &req->req), "MPI_Isend");
    req->active = true;
#else
    (void)buf;
    (void)tag;
#endif
}

// buf (n floats) <- the message with this tag from rank src of the group; blocks until it has arrived.
inline void pg_recv(ProcessGroup* pg, float* buf, size_t n, int src, int tag) {
    if (src < 0 || src >= pg->num_ranks || src == pg->rank)
        pg_fail(pg, "pg_recv: rank %d of a group of %d is no peer of rank %d", src, pg->num_ranks, pg->rank);
    if (n > pg->max_count)
        pg_fail(pg, "pg_recv: a message of %zu floats is more than one MPI call receives (%zu)", n,
                pg->max_count);
#ifdef USE_MPI
    MPI_Status status;
    pg_check(pg, MPI_Recv(buf, (int)n, MPI_FLOAT, src, tag, pg->comm, &status), "MPI_Recv");
    int got = 0;
    MPI_Get_count(&status, MPI_FLOAT, &got);
    if ((size_t)got != n)
        pg_fail(pg, "pg_recv: expected %zu floats from rank %d of the group, got %d", n, src, got);
#else
    (void)buf;
    (void)tag;
#endif
}
