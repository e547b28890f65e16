// nccl.h for the CPU emulator (dev/cuda/emu): NCCL between processes on one machine, through POSIX
// shared memory.
//
// An emulated GPU is a process, as with real NCCL (one process per GPU), and a communicator is one
// shared-memory segment that all its ranks map:
//
//   [header: magic, nranks, aborted_by + reason, per rank {pid, barriers entered, call}] [slot 0]..[slot N-1]
//
// Setup. ncclGetUniqueId writes a fresh segment name "/llmc_nccl_emu_<pid>_<random>" into the 128-byte id.
// In ncclCommInitRank rank 0 creates the segment (O_EXCL), reserves its memory (posix_fallocate, so a full
// /dev/shm is an error here and not a SIGBUS later) and sets magic last; the other ranks wait until the
// name exists and magic is set, so none reads a half-written header. Every rank then writes its pid and
// enters a barrier; after it every rank shm_unlink's the name: from then on nothing is left in /dev/shm
// however the processes end (the mappings keep the memory alive until the last one goes).
//
// Collectives run on the calling thread at call time, like every emulated call (the stream is not used).
// The data moves in chunks that fit a slot (EMU_NCCL_SLOT_BYTES); per chunk of elements [c0, c0 + n):
//   every rank copies its input chunk into its own slot;   barrier;
//   every rank computes its own output from all slots;     barrier (then the slots may be reused).
//   all-reduce      slot_r = send_r[c0 ..);  recv[c0 + i] = op over r = 0..N-1 of slot_r[i]
//   reduce-scatter  slot_r = send_r[d*count + c0 ..) for d = 0..N-1, one after another (n <= slot / N);
//                   rank d: recv[c0 + i] = op over r of slot_r[d*n + i]
//   all-gather      slot_r = send_r[c0 ..);  recv[r*count + c0 + i] = slot_r[i]
// Reductions go in rank order 0, 1, .., N-1 in fp32 (fp64 for ncclFloat64) and round to the element type
// once; ncclAvg divides the fp32 sum by N. So every rank gets bit-identical results that do not depend on
// timing. In place: all-reduce sendbuff == recvbuff; reduce-scatter recvbuff == sendbuff + rank*recvcount;
// all-gather sendbuff == recvbuff + rank*sendcount (NCCL's conventions). Each rank writes only its own
// output after its input chunk is in its slot, so in-place calls need no extra copy.
//
// Barrier k: a rank stores k in its "arrived" counter and waits until every rank's counter is >= k (a rank
// is at most one barrier ahead of the slowest). Waiting is polite (sched_yield, then 50 us sleeps), so more
// ranks than cores still progress. It never hangs: every 20 ms it checks
//   - the peers it waits for are alive (kill(pid, 0), and /proc/<pid>/stat not a zombie): a dead one makes
//     the call return ncclRemoteError naming it;
//   - aborted_by (set by ncclCommAbort, or by any rank whose collective failed): ncclRemoteError;
//   - the deadline, CUDA_EMU_NCCL_TIMEOUT seconds (default 300) per wait: ncclSystemError naming the
//     ranks that have not arrived.
// A failed call (a refused argument too) prints why on stderr, marks the communicator aborted with that
// message (so the peers stop waiting at once and report the root cause), and every later call and
// ncclCommGetAsyncError return the same error.
//
// Point-to-point (ncclSend / ncclRecv, the messages of pipeline parallelism). Every ordered pair of ranks
// (src, dst) has a mailbox after the slots: a ring of mailbox_bytes bytes (64 KiB, 4 KiB above 16 ranks)
// with two monotonic counters, bytes written by src and bytes read by dst (one writer, one reader: no
// lock). A message is a 16-byte header (its bytes and type) and then its data, in pieces as the ring has
// room, so messages between a pair arrive in the order they were sent, as NCCL matches them. A call
// outside a group runs at once: a receive returns when its last byte has arrived, a send when its
// receiver has taken its last byte, whatever the size (NCCL's send completes only with its receive, so
// two ranks that both send before they receive deadlock there; here the wait times out naming the peer).
// Between ncclGroupStart and ncclGroupEnd the calls are only recorded; ncclGroupEnd moves them all along
// together until each is done, so two ranks that send to each other and receive in one group do not
// deadlock (NCCL's rule for it too). The waits check the peer's liveness, the abort flag and the
// timeout as the barrier does. A receive whose message has another size or type than the one sent is a
// fatal error naming both (real NCCL would truncate or hang).
//
// Checks real NCCL does not make (it would hang, corrupt memory or read garbage): buffers must be emulated
// device memory for their whole extent (emu::is_device_range); send and receive buffers may overlap only
// in NCCL's in-place way; every rank must call the same collectives with the same count, type and op in
// the same order (each rank publishes a descriptor of its call; a mismatch is emu::fatal on every rank,
// naming both calls).
//
// Deviations from real NCCL:
//   - Summation order and rounding. Real NCCL's ring and tree algorithms add in an order that depends on
//     the algorithm, the ring position and the chunking, round bf16 partial sums to bf16 at every step, and
//     for ncclAvg on floating types may scale each input by 1/N before summing. Results here (rank order,
//     fp32 accumulation, one rounding, divide at the end) agree with a GPU to within those roundings, not
//     bit for bit.
//   - Synchronous: the call returns when the collective is complete on this rank, and errors come back
//     from the call itself (real NCCL returns at once and reports a peer's failure, if ever, through
//     ncclCommGetAsyncError). The emulator times out; real NCCL waits forever. A refused argument breaks
//     the communicator here (its peers are already waiting); real NCCL returns the error and carries on.
//   - Reductions for ncclFloat32, ncclBfloat16 and ncclFloat64 only; the integer types and ncclFloat16 are
//     refused (ncclInvalidArgument). All-gather copies any type. ncclMax / ncclMin use fmax / fmin (a NaN
//     loses to a number).
//   - A collective of count 0 still synchronizes the ranks (and is checked against the peers' calls).
//   - At most EMU_NCCL_MAX_RANKS ranks on one machine. Collectives inside ncclGroupStart/End run at call
//     time, not fused at the end; only point-to-point calls wait for the group's end (below).
//   - Liveness is by pid, so a dead peer whose pid is reused within the wait goes unnoticed (until the
//     timeout).
#pragma once

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <random>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_runtime.h>

// the version the emulator stands in for, with NCCL's own formula (2.8 and older used X*1000 + Y*100 + Z)
#define NCCL_MAJOR            2
#define NCCL_MINOR            18
#define NCCL_PATCH            5
#define NCCL_SUFFIX           "-cpu-emulator"
#define NCCL_VERSION(X, Y, Z) (((X) <= 2 && (Y) <= 8) ? (X)*1000 + (Y)*100 + (Z) : (X)*10000 + (Y)*100 + (Z))
#define NCCL_VERSION_CODE     NCCL_VERSION(NCCL_MAJOR, NCCL_MINOR, NCCL_PATCH)

#define NCCL_UNIQUE_ID_BYTES 128
#define EMU_NCCL_MAX_RANKS   64
#define EMU_NCCL_SLOT_BYTES  ((size_t)1 << 20) // per rank: 1 MiB, so 8 ranks fit Docker's 64 MiB /dev/shm
#define EMU_NCCL_NAME_PREFIX "/llmc_nccl_emu_"

typedef enum {
    ncclSuccess = 0,
    ncclUnhandledCudaError = 1,
    ncclSystemError = 2,
    ncclInternalError = 3,
    ncclInvalidArgument = 4,
    ncclInvalidUsage = 5,
    ncclRemoteError = 6,
    ncclInProgress = 7,
    ncclNumResults = 8
} ncclResult_t;

typedef enum {
    ncclInt8 = 0,
    ncclChar = 0,
    ncclUint8 = 1,
    ncclInt32 = 2,
    ncclInt = 2,
    ncclUint32 = 3,
    ncclInt64 = 4,
    ncclUint64 = 5,
    ncclFloat16 = 6,
    ncclHalf = 6,
    ncclFloat32 = 7,
    ncclFloat = 7,
    ncclFloat64 = 8,
    ncclDouble = 8,
    ncclBfloat16 = 9,
    ncclNumTypes = 10
} ncclDataType_t;

typedef enum { ncclSum = 0, ncclProd = 1, ncclMax = 2, ncclMin = 3, ncclAvg = 4, ncclNumOps = 5 } ncclRedOp_t;

typedef struct {
    char internal[NCCL_UNIQUE_ID_BYTES];
} ncclUniqueId;

// ----------------------------------------------------------------------------------------------------
// the shared segment

enum EmuNcclColl {
    EMU_NCCL_INIT = 0,
    EMU_NCCL_ALL_REDUCE = 1,
    EMU_NCCL_REDUCE_SCATTER = 2,
    EMU_NCCL_ALL_GATHER = 3
};

// what a rank is calling, published before the first barrier of the call and compared by every rank
struct EmuNcclCall {
    uint64_t seq;   // 1, 2, .. : the how-manieth collective on this communicator
    uint64_t count; // NCCL's count argument (recvcount / sendcount for reduce-scatter / all-gather)
    int32_t coll;   // EmuNcclColl
    int32_t dtype;  // ncclDataType_t
    int32_t op;     // ncclRedOp_t, -1 for all-gather
    int32_t unused;
};

struct alignas(64) EmuNcclRank {   // one cache line per rank: peers poll it
    std::atomic<uint64_t> arrived; // barriers this rank has entered
    std::atomic<int32_t> pid;      // 0 until the rank joins
    EmuNcclCall call;
};

struct EmuNcclHeader {
    std::atomic<uint32_t> magic; // EMU_NCCL_MAGIC once rank 0 has written the rest
    int32_t nranks;
    uint64_t slot_bytes;
    uint64_t total_bytes;
    std::atomic<int32_t> aborted_by; // 0; -(1 + rank) while that rank writes abort_reason; then 1 + rank
    char abort_reason[512];          // why the first rank to give up did (its message), for the peers
    EmuNcclRank ranks[EMU_NCCL_MAX_RANKS];
    uint64_t mailbox_bytes; // the ring of each ordered pair of ranks (point-to-point)
};

// one direction of one pair of ranks (src -> dst); mailbox_bytes of ring follow it
struct EmuNcclMailbox {
    alignas(64) std::atomic<uint64_t> written; // bytes src has put in, ever
    alignas(64) std::atomic<uint64_t> taken;   // bytes dst has taken out, ever
};
// the 16 bytes before every message's data
struct EmuNcclMessageHeader {
    uint64_t bytes;
    int32_t dtype;
    int32_t unused;
};

#define EMU_NCCL_MAGIC       0x4c43434fu // "NCCL" + 1, bump on a layout change
#define EMU_NCCL_SLOT_OFFSET (((sizeof(EmuNcclHeader) + 4095) / 4096) * 4096)

// atomics in memory shared between processes must not hide a lock in the process
static_assert(std::atomic<uint64_t>::is_always_lock_free && std::atomic<int32_t>::is_always_lock_free &&
                  std::atomic<uint32_t>::is_always_lock_free,
              "the emulated NCCL needs lock-free atomics in shared memory");

struct ncclComm {
    int rank;
    int nranks;
    EmuNcclHeader* header;
    char* slots;     // slot r at slots + r * header->slot_bytes
    char* mailboxes; // (src, dst) at mailboxes + (src * nranks + dst) * (sizeof(EmuNcclMailbox) +
                     // mailbox_bytes)
    size_t map_bytes;
    uint64_t epoch;     // barriers entered
    uint64_t seq;       // collectives called
    double timeout_s;   // CUDA_EMU_NCCL_TIMEOUT
    ncclResult_t error; // sticky: the first failure, returned by every later call
};
typedef struct ncclComm* ncclComm_t;

// ----------------------------------------------------------------------------------------------------
// helpers

inline const char* ncclGetErrorString(ncclResult_t result) {
    switch (result) {
    case ncclSuccess:
        return "no error";
    case ncclUnhandledCudaError:
        return "unhandled cuda error";
    case ncclSystemError:
        return "unhandled system error (the CUDA emulator printed the cause on stderr)";
    case ncclInternalError:
        return "internal error";
    case ncclInvalidArgument:
        return "invalid argument (the CUDA emulator printed the cause on stderr)";
    case ncclInvalidUsage:
        return "invalid usage (the CUDA emulator printed the cause on stderr)";
    case ncclRemoteError:
        return "remote process exited or there was a network error";
    case ncclInProgress:
        return "NCCL operation in progress";
    default:
        return "unknown result code";
    }
}

inline const char* emu_nccl_coll_name(int coll) {
    switch (coll) {
    case EMU_NCCL_INIT:
        return "ncclCommInitRank";
    case EMU_NCCL_ALL_REDUCE:
        return "ncclAllReduce";
    case EMU_NCCL_REDUCE_SCATTER:
        return "ncclReduceScatter";
    case EMU_NCCL_ALL_GATHER:
        return "ncclAllGather";
    default:
        return "(unknown collective)";
    }
}

inline const char* emu_nccl_type_name(int dtype) {
    switch (dtype) {
    case ncclInt8:
        return "ncclInt8";
    case ncclUint8:
        return "ncclUint8";
    case ncclInt32:
        return "ncclInt32";
    case ncclUint32:
        return "ncclUint32";
    case ncclInt64:
        return "ncclInt64";
    case ncclUint64:
        return "ncclUint64";
    case ncclFloat16:
        return "ncclFloat16";
    case ncclFloat32:
        return "ncclFloat32";
    case ncclFloat64:
        return "ncclFloat64";
    case ncclBfloat16:
        return "ncclBfloat16";
    default:
        return "(unknown type)";
    }
}

inline const char* emu_nccl_op_name(int op) {
    switch (op) {
    case ncclSum:
        return "ncclSum";
    case ncclProd:
        return "ncclProd";
    case ncclMax:
        return "ncclMax";
    case ncclMin:
        return "ncclMin";
    case ncclAvg:
        return "ncclAvg";
    default:
        return "(unknown op)";
    }
}

// bytes per element, 0 for an unknown type
inline size_t emu_nccl_type_size(int dtype) {
    switch (dtype) {
    case ncclInt8:
    case ncclUint8:
        return 1;
    case ncclFloat16:
    case ncclBfloat16:
        return 2;
    case ncclInt32:
    case ncclUint32:
    case ncclFloat32:
        return 4;
    case ncclInt64:
    case ncclUint64:
    case ncclFloat64:
        return 8;
    default:
        return 0;
    }
}

// "CUDA emulator: NCCL rank R of N: <message>" on stderr
inline void emu_nccl_warn(int rank, int nranks, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
inline void emu_nccl_warn(int rank, int nranks, const char* fmt, ...) {
    char message[1024];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof(message), fmt, args);
    va_end(args);
    fflush(stdout);
    fprintf(stderr, "CUDA emulator: NCCL rank %d of %d: %s\n", rank, nranks, message);
    fflush(stderr);
}

// The first rank to give up claims aborted_by, leaves its reason, then publishes itself; later ones
// change nothing (so the peers report the root cause).
inline void emu_nccl_mark_aborted(EmuNcclHeader* h, int rank, const char* reason) {
    int32_t none = 0;
    if (!h->aborted_by.compare_exchange_strong(none, -(rank + 1))) return;
    snprintf(h->abort_reason, sizeof(h->abort_reason), "%s", reason);
    h->aborted_by.store(rank + 1, std::memory_order_release);
}

// Print why, make the error sticky and mark the communicator aborted so the peers stop waiting for us.
inline ncclResult_t emu_nccl_fail(ncclComm* comm, ncclResult_t error, const char* fmt, ...)
    __attribute__((format(printf, 3, 4)));
inline ncclResult_t emu_nccl_fail(ncclComm* comm, ncclResult_t error, const char* fmt, ...) {
    char message[1024];
    va_list args;
    va_start(args, fmt);
    vsnprintf(message, sizeof(message), fmt, args);
    va_end(args);
    emu_nccl_warn(comm->rank, comm->nranks, "%s", message);
    if (comm->error == ncclSuccess) comm->error = error;
    emu_nccl_mark_aborted(comm->header, comm->rank, message);
    return error;
}

inline double emu_nccl_now_s() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// one step of a polite spin: yield the core first, then sleep (more ranks than cores must all progress)
inline void emu_nccl_pause(int* spins) {
    if (*spins < 64) {
        (*spins)++;
        sched_yield();
    } else {
        timespec ts = {0, 50 * 1000};
        nanosleep(&ts, nullptr);
    }
}

// A process that has exited: gone (ESRCH), or a zombie its parent has not reaped yet (kill() still
// succeeds on those, /proc/<pid>/stat says Z).
inline bool emu_nccl_process_gone(int pid) {
    if (kill(pid, 0) != 0 && errno == ESRCH) return true;
    char path[64], stat[512];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE* fp = fopen(path, "r");
    if (fp == nullptr) return false; // no /proc: rely on kill() alone
    size_t n = fread(stat, 1, sizeof(stat) - 1, fp);
    fclose(fp);
    stat[n] = '\0';
    const char* paren = strrchr(stat, ')'); // "pid (comm) S ...": comm may itself hold ')' or spaces
    return paren != nullptr && paren[1] == ' ' && (paren[2] == 'Z' || paren[2] == 'X');
}

// CUDA_EMU_NCCL_TIMEOUT: seconds a rank waits for its peers before giving up
inline double emu_nccl_timeout_s() {
    const char* text = getenv("CUDA_EMU_NCCL_TIMEOUT");
    if (text == nullptr || text[0] == '\0') return 300.0;
    char* end = nullptr;
    double seconds = strtod(text, &end);
    if (*end != '\0' || !(seconds > 0.0)) {
        emu::fatal("CUDA_EMU_NCCL_TIMEOUT must be a positive number of seconds, got '%s'", text);
    }
    return seconds;
}

// Barrier: enter the next one and wait until every rank has. `what` names the call, for messages.
inline ncclResult_t emu_nccl_barrier(ncclComm* comm, const char* what) {
    EmuNcclHeader* h = comm->header;
    uint64_t epoch = ++comm->epoch;
    h->ranks[comm->rank].arrived.store(epoch, std::memory_order_release); // publishes our slot and call
    double start = emu_nccl_now_s(), next_check = start + 0.02;
    int spins = 0;
    while (true) {
        int missing = 0;
        for (int r = 0; r < comm->nranks; r++) {
            if (h->ranks[r].arrived.load(std::memory_order_acquire) < epoch) missing++;
        }
        if (missing == 0) return ncclSuccess;
        int32_t aborted_by = h->aborted_by.load(std::memory_order_acquire);
        if (aborted_by > 0 && aborted_by != comm->rank + 1) { // (< 0: its reason is being written)
            return emu_nccl_fail(comm, ncclRemoteError, "%s: rank %d aborted the communicator (%s)", what,
                                 aborted_by - 1, h->abort_reason);
        }
        emu_nccl_pause(&spins);
        double now = emu_nccl_now_s();
        if (now < next_check) continue;
        next_check = now + 0.02;
        for (int r = 0; r < comm->nranks; r++) {
            int pid = h->ranks[r].pid.load(std::memory_order_acquire);
            if (pid == 0 || h->ranks[r].arrived.load(std::memory_order_acquire) >= epoch) continue;
            // it may have arrived just before it died: look again after seeing it gone
            if (emu_nccl_process_gone(pid) && h->ranks[r].arrived.load(std::memory_order_acquire) < epoch) {
                return emu_nccl_fail(comm, ncclRemoteError,
                                     "%s: rank %d (pid %d) exited while we waited for it", what, r, pid);
            }
        }
        if (now - start > comm->timeout_s) {
            char list[512] = "";
            size_t used = 0;
            for (int r = 0; r < comm->nranks && used < sizeof(list) - 16; r++) {
                if (h->ranks[r].arrived.load(std::memory_order_acquire) >= epoch) continue;
                bool joined = h->ranks[r].pid.load(std::memory_order_acquire) != 0;
                used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%d%s", used > 0 ? ", " : "", r,
                                         joined ? "" : " (never joined)");
            }
            return emu_nccl_fail(comm, ncclSystemError,
                                 "%s: timed out after %g s waiting for rank(s) %s (CUDA_EMU_NCCL_TIMEOUT)",
                                 what, comm->timeout_s, list);
        }
    }
}

inline void emu_nccl_format_call(const EmuNcclCall& call, char* out, size_t size) {
    if (call.coll == EMU_NCCL_ALL_GATHER) {
        snprintf(out, size, "%s #%llu (count %llu, %s)", emu_nccl_coll_name(call.coll),
                 (unsigned long long)call.seq, (unsigned long long)call.count,
                 emu_nccl_type_name(call.dtype));
    } else {
        snprintf(out, size, "%s #%llu (count %llu, %s, %s)", emu_nccl_coll_name(call.coll),
                 (unsigned long long)call.seq, (unsigned long long)call.count, emu_nccl_type_name(call.dtype),
                 emu_nccl_op_name(call.op));
    }
}

// ----------------------------------------------------------------------------------------------------
// setup and teardown

inline ncclResult_t ncclGetVersion(int* version) {
    if (version == nullptr) return ncclInvalidArgument;
    *version = NCCL_VERSION_CODE;
    return ncclSuccess;
}

// a name nobody else uses: our pid and 64 random bits
inline ncclResult_t ncclGetUniqueId(ncclUniqueId* id) {
    if (id == nullptr) return ncclInvalidArgument;
    std::random_device device;
    unsigned long long bits =
        ((unsigned long long)device() << 32) ^ device() ^ (unsigned long long)(emu_nccl_now_s() * 1e9);
    memset(id->internal, 0, sizeof(id->internal));
    snprintf(id->internal, sizeof(id->internal), "%s%d_%016llx", EMU_NCCL_NAME_PREFIX, (int)getpid(), bits);
    return ncclSuccess;
}

inline void emu_nccl_unmap(ncclComm* comm) {
    if (comm->header != nullptr) munmap(comm->header, comm->map_bytes);
    comm->header = nullptr;
}

// Map the segment named by the id (rank 0 creates it), join and wait for every rank. On failure
// *comm_out stays null and the segment is unlinked.
inline ncclResult_t ncclCommInitRank(ncclComm_t* comm_out, int nranks, ncclUniqueId id, int rank) {
    if (comm_out == nullptr) return ncclInvalidArgument;
    *comm_out = nullptr;
    if (nranks < 1 || nranks > EMU_NCCL_MAX_RANKS || rank < 0 || rank >= nranks) {
        emu_nccl_warn(rank, nranks, "ncclCommInitRank: need 0 <= rank < nranks <= %d", EMU_NCCL_MAX_RANKS);
        return ncclInvalidArgument;
    }
    if (memchr(id.internal, '\0', sizeof(id.internal)) == nullptr ||
        strncmp(id.internal, EMU_NCCL_NAME_PREFIX, strlen(EMU_NCCL_NAME_PREFIX)) != 0) {
        emu_nccl_warn(rank, nranks, "ncclCommInitRank: the ncclUniqueId was not made by ncclGetUniqueId");
        return ncclInvalidArgument;
    }
    double timeout_s = emu_nccl_timeout_s();
    double deadline = emu_nccl_now_s() + timeout_s;
    const size_t mailbox_bytes = nranks <= 16 ? (size_t)64 << 10 : (size_t)4 << 10;
    size_t total = EMU_NCCL_SLOT_OFFSET + (size_t)nranks * EMU_NCCL_SLOT_BYTES +
                   (size_t)nranks * nranks * (sizeof(EmuNcclMailbox) + mailbox_bytes);
    const char* name = id.internal;

    // rank 0 creates and sizes the segment; the others map its header once it exists, wait for magic,
    // and map the whole of it only then (its size is rank 0's, checked against nranks)
    ncclComm* comm = new ncclComm();
    comm->rank = rank;
    comm->nranks = nranks;
    comm->timeout_s = timeout_s;
    comm->error = ncclSuccess;
    ncclResult_t result = ncclSuccess;
    int fd = -1;
    if (rank == 0) {
        fd = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
        if (fd < 0) {
            int err = errno;
            emu_nccl_warn(rank, nranks, "ncclCommInitRank: shm_open(%s): %s%s", name, strerror(err),
                          err == EEXIST ? " (an ncclUniqueId serves one ncclCommInitRank per rank)" : "");
            delete comm;
            return err == EEXIST ? ncclInvalidUsage : ncclSystemError;
        }
        int err = posix_fallocate(fd, 0, (off_t)total);
        if (err != 0) {
            emu_nccl_warn(rank, nranks,
                          "ncclCommInitRank: could not reserve %zu bytes of shared memory for %s: %s", total,
                          name, strerror(err));
            result = ncclSystemError;
        }
    } else {
        int spins = 0;
        while (result == ncclSuccess) {
            fd = shm_open(name, O_RDWR, 0600);
            struct stat st;
            if (fd >= 0 && fstat(fd, &st) == 0 && (size_t)st.st_size >= EMU_NCCL_SLOT_OFFSET) break;
            if (fd >= 0) {
                close(fd);
            } else if (errno != ENOENT) {
                emu_nccl_warn(rank, nranks, "ncclCommInitRank: shm_open(%s): %s", name, strerror(errno));
                result = ncclSystemError;
                break;
            }
            if (emu_nccl_now_s() > deadline) {
                emu_nccl_warn(rank, nranks,
                              "ncclCommInitRank: timed out after %g s waiting for rank 0 to create %s "
                              "(CUDA_EMU_NCCL_TIMEOUT)",
                              timeout_s, name);
                result = ncclSystemError;
            }
            emu_nccl_pause(&spins);
        }
        if (result != ncclSuccess) { // nothing was mapped, nothing to unlink: it is rank 0's to clean up
            delete comm;
            return result;
        }
        void* header = mmap(nullptr, EMU_NCCL_SLOT_OFFSET, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (header == MAP_FAILED) {
            emu_nccl_warn(rank, nranks, "ncclCommInitRank: mmap of %s: %s", name, strerror(errno));
            result = ncclSystemError;
        } else {
            EmuNcclHeader* h = (EmuNcclHeader*)header;
            while (h->magic.load(std::memory_order_acquire) != EMU_NCCL_MAGIC && result == ncclSuccess) {
                if (emu_nccl_now_s() > deadline) {
                    emu_nccl_warn(rank, nranks,
                                  "ncclCommInitRank: timed out after %g s waiting for rank 0 to set up %s",
                                  timeout_s, name);
                    result = ncclSystemError;
                }
                emu_nccl_pause(&spins);
            }
            if (result == ncclSuccess) total = h->total_bytes;
            if (result == ncclSuccess && h->nranks != nranks) {
                emu_nccl_warn(rank, nranks,
                              "ncclCommInitRank: this rank was given nranks %d, rank 0 nranks %d", nranks,
                              h->nranks);
                char reason[160];
                snprintf(reason, sizeof(reason),
                         "ncclCommInitRank: rank %d was given nranks %d, rank 0 nranks %d", rank, nranks,
                         h->nranks);
                emu_nccl_mark_aborted(h, rank, reason); // rank 0 stops waiting for us
                result = ncclInvalidUsage;
            }
            munmap(header, EMU_NCCL_SLOT_OFFSET);
        }
    }
    void* map = MAP_FAILED;
    if (result == ncclSuccess) {
        map = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (map == MAP_FAILED) {
            emu_nccl_warn(rank, nranks, "ncclCommInitRank: mmap of %zu bytes of %s: %s", total, name,
                          strerror(errno));
            result = ncclSystemError;
        }
    }
    close(fd);
    if (map != MAP_FAILED) {
        comm->header = (EmuNcclHeader*)map;
        comm->slots = (char*)map + EMU_NCCL_SLOT_OFFSET;
        comm->mailboxes = comm->slots + (size_t)nranks * EMU_NCCL_SLOT_BYTES;
        comm->map_bytes = total;
        EmuNcclHeader* h = comm->header;
        if (rank == 0) {
            h->nranks = nranks; // the rest of the fresh segment is zeros: no rank joined, nobody aborted
            h->slot_bytes = EMU_NCCL_SLOT_BYTES;
            h->total_bytes = total;
            h->mailbox_bytes = mailbox_bytes;
            h->magic.store(EMU_NCCL_MAGIC, std::memory_order_release);
        }
        int32_t no_pid = 0;
        if (!h->ranks[rank].pid.compare_exchange_strong(no_pid, (int32_t)getpid())) {
            result = emu_nccl_fail(comm, ncclInvalidUsage,
                                   "ncclCommInitRank: two processes joined as rank %d (pids %d and %d)", rank,
                                   (int)no_pid, (int)getpid());
        } else {
            h->ranks[rank].call = EmuNcclCall{0, 0, EMU_NCCL_INIT, 0, 0, 0};
            result = emu_nccl_barrier(comm, "ncclCommInitRank");
        }
    }
    // every rank has mapped it (or the group failed): the name is no longer needed
    if ((rank == 0 || map != MAP_FAILED) && shm_unlink(name) != 0 && errno != ENOENT) {
        emu_nccl_warn(rank, nranks, "ncclCommInitRank: shm_unlink(%s): %s", name, strerror(errno));
    }
    if (result != ncclSuccess) {
        emu_nccl_unmap(comm);
        delete comm;
        return result;
    }
    *comm_out = comm;
    return ncclSuccess;
}

inline ncclResult_t ncclCommDestroy(ncclComm_t comm) {
    if (comm == nullptr) return ncclSuccess;
    emu_nccl_unmap(comm);
    delete comm;
    return ncclSuccess;
}

// Mark the communicator aborted (peers waiting in a collective return ncclRemoteError) and free it.
inline ncclResult_t ncclCommAbort(ncclComm_t comm) {
    if (comm == nullptr) return ncclSuccess;
    emu_nccl_mark_aborted(comm->header, comm->rank, "ncclCommAbort");
    return ncclCommDestroy(comm);
}

// This rank's failure, or ncclRemoteError once a peer has aborted.
inline ncclResult_t ncclCommGetAsyncError(ncclComm_t comm, ncclResult_t* async_error) {
    if (comm == nullptr || async_error == nullptr) return ncclInvalidArgument;
    int32_t aborted_by = comm->header->aborted_by.load(std::memory_order_acquire);
    if (comm->error == ncclSuccess && aborted_by > 0 && aborted_by != comm->rank + 1)
        comm->error = ncclRemoteError;
    *async_error = comm->error;
    return ncclSuccess;
}

inline ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
    if (comm == nullptr || count == nullptr) return ncclInvalidArgument;
    *count = comm->nranks;
    return ncclSuccess;
}

inline ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
    if (comm == nullptr || rank == nullptr) return ncclInvalidArgument;
    *rank = comm->rank;
    return ncclSuccess;
}

// ----------------------------------------------------------------------------------------------------
// collectives

// out[i] = op over r = 0..N-1, in that order, of slot_r[first + i], in Acc; ncclAvg: the sum / N. One
// rounding to T at the end.
template <class T, class Acc, class Combine>
inline void emu_nccl_reduce_as(T* out, const char* slots, size_t slot_bytes, size_t first, size_t n, int N,
                               Combine combine, bool average) {
    for (size_t i = 0; i < n; i++) {
        Acc acc = (Acc)((const T*)slots)[first + i];
        for (int r = 1; r < N; r++) acc = combine(acc, (Acc)((const T*)(slots + r * slot_bytes))[first + i]);
        if (average) acc = acc / (Acc)N;
        out[i] = T(acc);
    }
}

template <class T, class Acc>
inline void emu_nccl_reduce_op(ncclRedOp_t op, T* out, const char* slots, size_t slot_bytes, size_t first,
                               size_t n, int N) {
    switch (op) {
    case ncclSum:
    case ncclAvg:
        emu_nccl_reduce_as<T, Acc>(
            out, slots, slot_bytes, first, n, N, [](Acc a, Acc b) { return a + b; }, op == ncclAvg);
        break;
    case ncclProd:
        emu_nccl_reduce_as<T, Acc>(
            out, slots, slot_bytes, first, n, N, [](Acc a, Acc b) { return a * b; }, false);
        break;
    case ncclMax:
        emu_nccl_reduce_as<T, Acc>(
            out, slots, slot_bytes, first, n, N, [](Acc a, Acc b) { return std::fmax(a, b); }, false);
        break;
    default: // ncclMin (the op was checked)
        emu_nccl_reduce_as<T, Acc>(
            out, slots, slot_bytes, first, n, N, [](Acc a, Acc b) { return std::fmin(a, b); }, false);
        break;
    }
}

// the dtype switch: bf16 and fp32 accumulate in fp32, fp64 in fp64
inline void emu_nccl_reduce(ncclDataType_t dtype, ncclRedOp_t op, void* out, const char* slots,
                            size_t slot_bytes, size_t first, size_t n, int N) {
    if (dtype == ncclFloat32) {
        emu_nccl_reduce_op<float, float>(op, (float*)out, slots, slot_bytes, first, n, N);
    } else if (dtype == ncclBfloat16) {
        emu_nccl_reduce_op<__nv_bfloat16, float>(op, (__nv_bfloat16*)out, slots, slot_bytes, first, n, N);
    } else {
        emu_nccl_reduce_op<double, double>(op, (double*)out, slots, slot_bytes, first, n, N);
    }
}

// Whether a call named `what` may run on comm: a live communicator without an earlier failure (which every
// later call returns).
inline ncclResult_t emu_nccl_usable(ncclComm_t comm, const char* what) {
    if (comm == nullptr || comm->header == nullptr) {
        fprintf(stderr, "CUDA emulator: %s: the communicator is null or destroyed\n", what);
        return ncclInvalidArgument;
    }
    if (comm->error != ncclSuccess) {
        emu_nccl_warn(comm->rank, comm->nranks, "%s: the communicator failed earlier (%s)", what,
                      ncclGetErrorString(comm->error));
        return comm->error;
    }
    return ncclSuccess;
}

// One driver for the three collectives (see the top of the file for the data movement).
inline ncclResult_t emu_nccl_collective(EmuNcclColl coll, const void* sendbuff, void* recvbuff, size_t count,
                                        ncclDataType_t dtype, ncclRedOp_t op, ncclComm_t comm) {
    const char* what = emu_nccl_coll_name(coll);
    if (ncclResult_t usable = emu_nccl_usable(comm, what); usable != ncclSuccess) return usable;
    // a refused call is sticky and aborts the communicator too: the peers are already in this collective
    size_t size = emu_nccl_type_size(dtype);
    if (size == 0)
        return emu_nccl_fail(comm, ncclInvalidArgument, "%s: unknown datatype %d", what, (int)dtype);
    bool reduces = coll != EMU_NCCL_ALL_GATHER;
    if (reduces && dtype != ncclFloat32 && dtype != ncclBfloat16 && dtype != ncclFloat64) {
        return emu_nccl_fail(
            comm, ncclInvalidArgument,
            "%s: the emulator reduces only ncclFloat32, ncclBfloat16 and ncclFloat64, not %s", what,
            emu_nccl_type_name(dtype));
    }
    if (reduces && (op < ncclSum || op >= ncclNumOps)) {
        return emu_nccl_fail(comm, ncclInvalidArgument, "%s: unknown reduction op %d", what, (int)op);
    }

    // the extent of each buffer, and NCCL's in-place convention
    const int N = comm->nranks, rank = comm->rank;
    size_t bytes = count * size;
    size_t send_bytes = coll == EMU_NCCL_REDUCE_SCATTER ? N * bytes : bytes;
    size_t recv_bytes = coll == EMU_NCCL_ALL_GATHER ? N * bytes : bytes;
    const char* send = (const char*)sendbuff;
    char* recv = (char*)recvbuff;
    if (send_bytes > 0 && !emu::is_device_range(send, send_bytes)) {
        emu::fatal("%s: sendbuff %p (%zu bytes) is not device memory (one cudaMalloc allocation)", what,
                   sendbuff, send_bytes);
    }
    if (recv_bytes > 0 && !emu::is_device_range(recv, recv_bytes)) {
        emu::fatal("%s: recvbuff %p (%zu bytes) is not device memory (one cudaMalloc allocation)", what,
                   recvbuff, recv_bytes);
    }
    uintptr_t sa = (uintptr_t)sendbuff, ra = (uintptr_t)recvbuff; // as integers: they may be unrelated
    bool in_place = coll == EMU_NCCL_ALL_REDUCE       ? sa == ra
                    : coll == EMU_NCCL_REDUCE_SCATTER ? sa + rank * bytes == ra
                                                      : ra + rank * bytes == sa;
    bool overlap = send_bytes > 0 && recv_bytes > 0 && sa < ra + recv_bytes && ra < sa + send_bytes;
    if (overlap && !in_place) {
        emu::fatal("%s: sendbuff %p (%zu bytes) and recvbuff %p (%zu bytes) overlap but are not in place "
                   "(NCCL's convention: all-reduce send == recv, reduce-scatter recv == send + "
                   "rank*recvcount, all-gather send == recv + rank*sendcount)",
                   what, sendbuff, send_bytes, recvbuff, recv_bytes);
    }

    EmuNcclHeader* h = comm->header;
    EmuNcclCall call = {
        ++comm->seq, (uint64_t)count, (int32_t)coll, (int32_t)dtype, reduces ? (int32_t)op : -1, 0};
    h->ranks[rank].call = call; // published by the first barrier's release

    const size_t slot_bytes = h->slot_bytes;
    size_t chunk = slot_bytes / size / (coll == EMU_NCCL_REDUCE_SCATTER ? N : 1); // elements per chunk
    char* mine = comm->slots + rank * slot_bytes;
    size_t c0 = 0;
    do {
        size_t n = count - c0 < chunk ? count - c0 : chunk;
        if (n > 0 && coll == EMU_NCCL_REDUCE_SCATTER) {
            for (int d = 0; d < N; d++) memcpy(mine + d * n * size, send + (d * count + c0) * size, n * size);
        } else if (n > 0) {
            memcpy(mine, send + c0 * size, n * size);
        }
        ncclResult_t result = emu_nccl_barrier(comm, what);
        if (result != ncclSuccess) return result;
        if (c0 == 0) {
            for (int r = 1; r < N; r++) {
                const EmuNcclCall& theirs = h->ranks[r].call;
                const EmuNcclCall& first = h->ranks[0].call;
                if (memcmp(&theirs, &first, sizeof(EmuNcclCall)) != 0) {
                    char a[160], b[160];
                    emu_nccl_format_call(first, a, sizeof(a));
                    emu_nccl_format_call(theirs, b, sizeof(b));
                    emu_nccl_mark_aborted(h, rank, "collectives do not match");
                    emu::fatal("NCCL rank %d of %d: collectives do not match: rank 0 called %s, rank %d "
                               "called %s (every rank must make the same calls in the same order; real NCCL "
                               "would hang or corrupt memory)",
                               rank, N, a, r, b);
                }
            }
        }
        if (coll == EMU_NCCL_ALL_REDUCE) {
            emu_nccl_reduce(dtype, op, recv + c0 * size, comm->slots, slot_bytes, 0, n, N);
        } else if (coll == EMU_NCCL_REDUCE_SCATTER) {
            emu_nccl_reduce(dtype, op, recv + c0 * size, comm->slots, slot_bytes, rank * n, n, N);
        } else if (n > 0) {
            for (int q = 0; q < N; q++) {
                if (in_place && q == rank) continue; // already there
                memcpy(recv + (q * count + c0) * size, comm->slots + q * slot_bytes, n * size);
            }
        }
        result = emu_nccl_barrier(comm, what); // everyone has read the slots
        if (result != ncclSuccess) return result;
        c0 += n;
    } while (c0 < count);
    return ncclSuccess;
}

inline ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype,
                                  ncclRedOp_t op, ncclComm_t comm, cudaStream_t stream) {
    (void)stream; // synchronous: done before we return
    return emu_nccl_collective(EMU_NCCL_ALL_REDUCE, sendbuff, recvbuff, count, datatype, op, comm);
}

// recvbuff (recvcount) <- op over ranks of sendbuff[rank*recvcount, (rank+1)*recvcount)
inline ncclResult_t ncclReduceScatter(const void* sendbuff, void* recvbuff, size_t recvcount,
                                      ncclDataType_t datatype, ncclRedOp_t op, ncclComm_t comm,
                                      cudaStream_t stream) {
    (void)stream;
    return emu_nccl_collective(EMU_NCCL_REDUCE_SCATTER, sendbuff, recvbuff, recvcount, datatype, op, comm);
}

// recvbuff[r*sendcount, (r+1)*sendcount) <- rank r's sendbuff (sendcount)
inline ncclResult_t ncclAllGather(const void* sendbuff, void* recvbuff, size_t sendcount,
                                  ncclDataType_t datatype, ncclComm_t comm, cudaStream_t stream) {
    (void)stream;
    return emu_nccl_collective(EMU_NCCL_ALL_GATHER, sendbuff, recvbuff, sendcount, datatype, ncclSum, comm);
}

// ----------------------------------------------------------------------------------------------------
// point-to-point and groups (see the top of the file)

// one recorded ncclSend or ncclRecv, moved along by emu_nccl_p2p_run
struct EmuNcclP2p {
    bool send;
    char* buf;
    size_t bytes;
    int32_t dtype;
    int peer;
    ncclComm* comm;
    size_t header_done = 0, data_done = 0; // bytes of the header and of the data moved so far
    uint64_t end = 0;                      // a send: the ring's written count after its last byte
    EmuNcclMessageHeader header = {};      // a receive's, as it arrives
};
struct EmuNcclGroup {
    int depth = 0;
    std::vector<EmuNcclP2p> pending;
};
inline EmuNcclGroup& emu_nccl_group() {
    static EmuNcclGroup g; // (NCCL's group state is per thread; the trainers call NCCL from one thread)
    return g;
}

inline EmuNcclMailbox* emu_nccl_mailbox(ncclComm* comm, int src, int dst) {
    const size_t stride = sizeof(EmuNcclMailbox) + comm->header->mailbox_bytes;
    return (EmuNcclMailbox*)(comm->mailboxes + ((size_t)src * comm->nranks + dst) * stride);
}

// Moves what it can of op's bytes (its header first, then its data) through the pair's ring; returns
// whether anything moved.
inline bool emu_nccl_p2p_step(EmuNcclP2p* op) {
    ncclComm* comm = op->comm;
    const uint64_t cap = comm->header->mailbox_bytes;
    EmuNcclMailbox* box = op->send ? emu_nccl_mailbox(comm, comm->rank, op->peer)
                                   : emu_nccl_mailbox(comm, op->peer, comm->rank);
    char* ring = (char*)(box + 1);
    bool moved = false;
    while (true) {
        const bool in_header = op->header_done < sizeof(EmuNcclMessageHeader);
        const size_t left =
            in_header ? sizeof(EmuNcclMessageHeader) - op->header_done : op->bytes - op->data_done;
        if (left == 0) return moved;
        const uint64_t w = box->written.load(std::memory_order_acquire),
                       t = box->taken.load(std::memory_order_acquire);
        const uint64_t avail = op->send ? cap - (w - t) : w - t; // room to write, or bytes to read
        if (avail == 0) return moved;
        const uint64_t at = op->send ? w : t;
        size_t n =
            (size_t)std::min<uint64_t>(std::min<uint64_t>(avail, left), cap - at % cap); // to the ring's end
        char* mine;
        if (in_header) {
            mine = (char*)&op->header + op->header_done;
            if (op->send && op->header_done == 0) {
                op->header.bytes = op->bytes;
                op->header.dtype = op->dtype;
            }
        } else {
            mine = op->buf + op->data_done;
        }
        if (op->send) {
            memcpy(ring + at % cap, mine, n);
            box->written.store(w + n, std::memory_order_release);
        } else {
            memcpy(mine, ring + at % cap, n);
            box->taken.store(t + n, std::memory_order_release);
        }
        moved = true;
        if (in_header) {
            op->header_done += n;
            if (!op->send && op->header_done == sizeof(EmuNcclMessageHeader) &&
                (op->header.bytes != op->bytes || op->header.dtype != op->dtype)) {
                emu_nccl_mark_aborted(comm->header, comm->rank, "ncclSend and ncclRecv do not match");
                emu::fatal(
                    "NCCL rank %d of %d: ncclRecv of %zu bytes of %s from rank %d, but rank %d sent %llu "
                    "bytes of %s (each ncclRecv must match its peer's ncclSend, in order; real NCCL "
                    "would truncate or hang)",
                    comm->rank, comm->nranks, op->bytes, emu_nccl_type_name(op->dtype), op->peer, op->peer,
                    (unsigned long long)op->header.bytes, emu_nccl_type_name(op->header.dtype));
            }
        } else {
            op->data_done += n;
        }
        if (op->send && op->header_done == sizeof(EmuNcclMessageHeader) && op->data_done == op->bytes)
            op->end = w + n;
    }
}

// A receive is done when its last byte has arrived; a send when its receiver has taken its last byte (as
// NCCL's send completes only with its receive: two ranks that send to each other outside a group wait for
// each other here too, until the timeout names it).
inline bool emu_nccl_p2p_done(const EmuNcclP2p& op) {
    if (op.header_done < sizeof(EmuNcclMessageHeader) || op.data_done < op.bytes) return false;
    if (!op.send) return true;
    const EmuNcclMailbox* box = emu_nccl_mailbox(op.comm, op.comm->rank, op.peer);
    return box->taken.load(std::memory_order_acquire) >= op.end;
}

// Moves every recorded call along until all are done, or one's wait fails (its peer gone, an abort, the
// timeout): then that communicator's error, and the rest of the group is dropped.
inline ncclResult_t emu_nccl_p2p_run() {
    std::vector<EmuNcclP2p> ops;
    ops.swap(emu_nccl_group().pending);
    const double start = emu_nccl_now_s();
    double next_check = start + 0.02;
    int spins = 0;
    auto done = [](const EmuNcclP2p& op) { return emu_nccl_p2p_done(op); };
    // an op waits for the earlier ones of its ring (same communicator, direction and peer): one message at
    // a time in each ring, in the order of the calls
    auto first_of_its_ring = [&](size_t j) {
        for (size_t i = 0; i < j; i++) {
            const EmuNcclP2p &a = ops[i], &b = ops[j];
            if (a.comm == b.comm && a.send == b.send && a.peer == b.peer && !done(a)) return false;
        }
        return true;
    };
    while (true) {
        bool all_done = true, moved = false;
        for (size_t j = 0; j < ops.size(); j++) {
            if (done(ops[j])) continue;
            all_done = false;
            if (first_of_its_ring(j)) moved = emu_nccl_p2p_step(&ops[j]) || moved;
        }
        if (all_done) return ncclSuccess;
        if (moved) {
            spins = 0;
            continue;
        }
        emu_nccl_pause(&spins);
        const double now = emu_nccl_now_s();
        if (now < next_check) continue;
        next_check = now + 0.02;
        for (size_t j = 0; j < ops.size(); j++) {
            EmuNcclP2p& op = ops[j];
            if (done(op) || !first_of_its_ring(j)) continue;
            ncclComm* comm = op.comm;
            EmuNcclHeader* h = comm->header;
            const char* what = op.send ? "ncclSend" : "ncclRecv";
            const int32_t aborted_by = h->aborted_by.load(std::memory_order_acquire);
            if (aborted_by > 0 && aborted_by != comm->rank + 1) {
                return emu_nccl_fail(comm, ncclRemoteError, "%s: rank %d aborted the communicator (%s)", what,
                                     aborted_by - 1, h->abort_reason);
            }
            const int pid = h->ranks[op.peer].pid.load(std::memory_order_acquire);
            if (pid != 0 && emu_nccl_process_gone(pid) && !emu_nccl_p2p_step(&op)) {
                return emu_nccl_fail(comm, ncclRemoteError,
                                     "%s: rank %d (pid %d) exited while we waited for it", what, op.peer,
                                     pid);
            }
            if (now - start > comm->timeout_s) {
                return emu_nccl_fail(comm, ncclSystemError,
                                     "%s: timed out after %g s waiting for rank %d (CUDA_EMU_NCCL_TIMEOUT)",
                                     what, comm->timeout_s, op.peer);
            }
        }
    }
}

// Records a send or a receive (checked as the collectives' arguments are); runs it at once outside a group.
inline ncclResult_t emu_nccl_p2p(bool send, const void* buf, size_t count, ncclDataType_t dtype, int peer,
                                 ncclComm_t comm) {
    const char* what = send ? "ncclSend" : "ncclRecv";
    if (ncclResult_t usable = emu_nccl_usable(comm, what); usable != ncclSuccess) return usable;
    const size_t size = emu_nccl_type_size(dtype);
    if (size == 0)
        return emu_nccl_fail(comm, ncclInvalidArgument, "%s: unknown datatype %d", what, (int)dtype);
    if (peer < 0 || peer >= comm->nranks)
        return emu_nccl_fail(comm, ncclInvalidArgument, "%s: peer %d is not a rank of %d", what, peer,
                             comm->nranks);
    const size_t bytes = count * size;
    if (bytes > 0 && !emu::is_device_range(buf, bytes)) {
        emu::fatal("%s: %s %p (%zu bytes) is not device memory (one cudaMalloc allocation)", what,
                   send ? "sendbuff" : "recvbuff", buf, bytes);
    }
    EmuNcclGroup& g = emu_nccl_group();
    if (peer == comm->rank && g.depth == 0) {
        return emu_nccl_fail(
            comm, ncclInvalidUsage,
            "%s to this rank itself outside ncclGroupStart/End: its receive could never be posted", what);
    }
    EmuNcclP2p op;
    op.send = send;
    op.buf = (char*)buf;
    op.bytes = bytes;
    op.dtype = (int32_t)dtype;
    op.peer = peer;
    op.comm = comm;
    g.pending.push_back(op);
    return g.depth == 0 ? emu_nccl_p2p_run() : ncclSuccess;
}

// sendbuff (count) to rank peer, which receives it with ncclRecv
inline ncclResult_t ncclSend(const void* sendbuff, size_t count, ncclDataType_t datatype, int peer,
                             ncclComm_t comm, cudaStream_t stream) {
    (void)stream; // synchronous: done (in the ring, or received) before we return, or at ncclGroupEnd
    return emu_nccl_p2p(true, sendbuff, count, datatype, peer, comm);
}
// recvbuff (count) <- what rank peer sent with ncclSend
inline ncclResult_t ncclRecv(void* recvbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                             cudaStream_t stream) {
    (void)stream;
    return emu_nccl_p2p(false, recvbuff, count, datatype, peer, comm);
}

inline ncclResult_t ncclGroupStart() {
    emu_nccl_group().depth++;
    return ncclSuccess;
}
// the end of the outermost group runs its sends and receives together
inline ncclResult_t ncclGroupEnd() {
    EmuNcclGroup& g = emu_nccl_group();
    if (g.depth == 0) {
        fprintf(stderr, "CUDA emulator: ncclGroupEnd without ncclGroupStart\n");
        return ncclInvalidUsage;
    }
    return --g.depth == 0 && !g.pending.empty() ? emu_nccl_p2p_run() : ncclSuccess;
}
